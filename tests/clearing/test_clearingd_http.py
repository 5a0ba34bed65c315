"""coconut-clearingd's HTTP API end to end on loopback.

The stack of test_clearingd_it.py (coconut-hsmd + coconut-clearingd, terminals in process) plus 1,000
more registered cards, clerk tokens from `admin clerk-add` and card tokens from `admin issue-tokens`.

Phase "api":    every endpoint; pagination across pages; 401 / 404 (a token of another card) / 405 /
                400; oversize head (431) and body (413); malformed requests; clerk roles (403); hotlist
                on/off; settlement postings (ok, exists, exists_with_different_amount, a failed linked
                chain, invalid bodies applying nothing); token re-issue; registrations; risk, suspense,
                journal; /metrics, /healthz, /v1/openapi.json; isolation across 1,000 cards; no token
                ever readable back (answers, metrics, journal, data files); `check` afterwards.
Phase "page":   the balance page in headless Chromium: the balance and the transactions shown, a wrong
                token and a blocked card explained; a screenshot kept under ARTIFACTS.
Phase "tls":    HTTPS with a certificate made here (openssl req), curl --cacert; plain HTTP and an
                untrusted certificate refused; the per-token rate limit (429 with Retry-After).
Phase "load":   while a terminal uploads at full speed, balance queries keep answering.
Phase "lifecycle": a card reported lost by its holder (hotlist download, 41, its token answers its status
                only: 403) and found; persons (`admin load` and the counter route, SSN checked: 400 / 403);
                a card reported lost at the counter, paying offline before and after its balance is carried
                to its replacement (lost late spending report), the carried balance collected with 280000
                (51 the second time); a clerk without the role 403; `check` afterwards.

Phase "counter": a service counter's day: a card's whole balance taken by the counter terminal's purchase
                and the card returned by bank (twice → 409), a tourist card sold, a broken card refunded
                after the waiting period, roles, the dormancy report, `check` afterwards.

Usage: test_clearingd_http.py HSMD CLEARINGD TERMINAL VCARD OPENAPI_JSON ARTIFACTS [api|page|tls|load|lifecycle|counter|all]
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_clearingd_it as it  # noqa: E402  (the shared stack: hsmd, cards, terminals, ISO 8583 helpers)

EXTRA_CARDS = 1000
PURSE_BASE_FEN = 100  # extra card i holds PURSE_BASE_FEN + i fen: a wrong card's answer shows


def extra_asn(i):
    return f"4601900000{i:010d}"


def card_number(asn):
    return asn[4:]


class HttpStack(it.Stack):
    def __init__(self, tools, workdir):
        super().__init__(tools, workdir)
        self.http_port = None
        self.tokens_dir = os.path.join(workdir, "tokens")
        self.clerk = {}
        self.secrets = []  # every token handed out: none may ever come back
        self.issued_online = []

    def setup(self):
        super().setup()
        registry = {"cards": [{"asn": extra_asn(i), "issuer_id": it.ISSUER_ID, "purse_balance_fen": PURSE_BASE_FEN + i,
                               "medical_balance_fen": 1000} for i in range(EXTRA_CARDS)]}
        path = os.path.join(self.dir, "extra.json")
        with open(path, "w") as f:
            json.dump(registry, f)
        it.run([self.clearingd, "admin", "--data", self.data, "load", path])
        for name, roles in (("alice", "hotlist,registry,settlement,read"), ("reader", "read"), ("settler", "settlement"),
                            ("maker", "adjust"), ("checker", "adjust,read"), ("keeper", "clerks"), ("keeper2", "clerks")):
            # Both spellings: `admin --data DIR clerk-add` and the documented `admin clerk-add --data DIR`.
            where = ["admin", "--data", self.data, "clerk-add"] if name != "settler" else ["admin", "clerk-add", "--data", self.data]
            out = it.run([self.clearingd, *where, "--name", name, "--roles", roles]).stdout.strip()
            assert out.startswith("clerk_") and len(out) > 30, out
            self.clerk[name] = out
            self.secrets.append(out)
        out = it.run([self.clearingd, "admin", "--data", self.data, "issue-tokens", "--out", self.tokens_dir]).stdout
        assert out.startswith(f"{EXTRA_CARDS + len(it.CARDS)} tokens"), out
        for name in os.listdir(self.tokens_dir):
            path = os.path.join(self.tokens_dir, name)
            assert os.stat(path).st_mode & 0o777 == 0o600, name
            self.secrets.append(open(path).read().strip())
        for bad, code in ((["--roles", "admin", "--name", "x"], 2), (["--roles", "read", "--name", "two words"], 5)):
            result = it.run([self.clearingd, "admin", "clerk-add", "--data", self.data, *bad], check=False)
            assert result.returncode == code, (bad, result.returncode, result.stderr)
        for bad, code in ((["--card", "1234"], 2), (["--card", "1234567812345678"], 5)):
            result = it.run([self.clearingd, "admin", "issue-tokens", "--data", self.data, "--out", self.tokens_dir + "x", *bad],
                            check=False)
            assert result.returncode == code, (bad, result.returncode, result.stderr)
        # A second run issues nothing: every card has its token.
        out = it.run([self.clearingd, "admin", "--data", self.data, "issue-tokens", "--out", self.tokens_dir + "2"]).stdout
        assert out.startswith("0 tokens"), out
        key = os.path.join(self.data, "http-token.key")
        assert os.stat(key).st_mode & 0o777 == 0o600 and os.path.getsize(key) == 32
        it.log(f"  ok  setup: {EXTRA_CARDS + len(it.CARDS)} card tokens (0600 files), 7 clerks, token key 0600")

    def token(self, number):
        with open(os.path.join(self.tokens_dir, number + ".token")) as f:
            return f.read().strip()

    def start_daemon(self, extra=()):
        ready = os.path.join(self.dir, "clearingd.port")
        http_ready = os.path.join(self.dir, "http.port")
        for path in (ready, http_ready):
            if os.path.exists(path):
                os.remove(path)
        self.daemon = subprocess.Popen([self.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", self.data,
                                        "--hsm", self.hsm_list or f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.key,
                                        "--ready-file", ready, "--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready,
                                        *([] if "--insecure-terminals" in extra else self.tls.server_args()), *extra],
                                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "clearingd.log"), "a"))
        self.port = it.wait_ready_file(ready, self.daemon, "coconut-clearingd")
        self.http_port = int(open(http_ready).read().strip())
        it.wait_port(self.http_port)


class Client:
    """One keep-alive HTTP connection; remembers every body it saw (the token check reads them all)."""

    def __init__(self, port, seen=None):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.seen = seen if seen is not None else []

    def call(self, method, path, token=None, body=None, headers=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        try:
            self.conn.request(method, path, body=data, headers=h)
            response = self.conn.getresponse()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request(method, path, body=data, headers=h)
            response = self.conn.getresponse()
        raw = response.read().decode()
        self.seen.append(raw)
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return response.status, parsed, response

    def get(self, path, token=None):
        status, body, _ = self.call("GET", path, token)
        return status, body


def raw_exchange(port, data, read_timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        if data:
            s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
    return out.decode(errors="replace")


def assert_error(status, body, expected_status, code=None):
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body


# ---- phase api -----------------------------------------------------------------------------------------------

def upload_some(stack):
    """Five bus rides on card 0, four shop purchases on card 2, one forged TAC of card 1 (suspense)."""
    stack.purchases(0, 0, "bus.log", 200, 5)
    stack.purchases(1, 0, "forged.log", 150, 1)
    stack.purchases(2, 1, "shop.log", 999, 4)
    forged = stack.queue_list("forged.log")["transactions"][0]
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")
    _, answer = link.call("0320", it.upload_fields(forged, "BUS00001", 2, tac=f"{int(forged['tac'], 16) ^ 1:08X}"))
    assert answer[39] == "59", answer
    link.close()
    for queue, terminal in (("bus.log", 0), ("shop.log", 1)):
        out = json.loads(stack.upload(queue, terminal).stdout)
        assert out["remaining"] == 0, out


def check_card_reads(stack, client):
    card0 = card_number(it.CARDS[0])
    token0 = stack.token(card0)
    status, card = client.get(f"/v1/cards/{card0}", token0)
    assert status == 200, card
    assert card["card_number"] == card0 and card["status"] == "active" and card["currency"] == "CNY", card
    assert card["purse"]["balance_fen"] == it.OPENING_FEN - 5 * 200, card
    assert card["purse"]["pending_credit_fen"] == 0 and card["last_cleared_at"].endswith("Z"), card
    # Pagination across pages, newest first: 5 rides + the opening balances of the purse and the medical account.
    pages, items, cursor = 0, [], None
    while True:
        path = f"/v1/cards/{card0}/transactions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = client.get(path, token0)
        assert status == 200, page
        pages += 1
        items += page["transactions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["transactions"]) == 2
    assert pages == 4 and len(items) == 7, (pages, items)
    assert len({t["id"] for t in items}) == 7
    times = [t["time"] for t in items]
    assert times == sorted(times, reverse=True), times
    assert [t["kind"] for t in items] == ["bus"] * 5 + ["load"] * 2, items
    assert {t["account"] for t in items[5:]} == {"purse", "medical"}, items
    assert all(t["amount_fen"] == -200 and t["place"]["participant"] == "Haikou Bus" for t in items[:5]), items
    assert items[0]["balance_after_fen"] == card["purse"]["balance_fen"], items[0]
    for account in ("purse", "medical"):  # each balance after = the account's older one + this amount
        mine = [t for t in items if t["account"] == account]
        for newer, older in zip(mine, mine[1:]):
            assert newer["balance_after_fen"] == older["balance_after_fen"] + newer["amount_fen"], (newer, older)
    status, one = client.get(f"/v1/cards/{card0}/transactions?limit=100", token0)
    assert [t["id"] for t in one["transactions"]] == [t["id"] for t in items] and one["next_cursor"] is None
    card2 = card_number(it.CARDS[2])
    status, shop = client.get(f"/v1/cards/{card2}/transactions", stack.token(card2))
    assert status == 200 and [t["kind"] for t in shop["transactions"]] == ["shop"] * 4 + ["load"] * 2, shop
    it.log("  ok  balance and transactions: newest first, 4 pages of 2, kinds bus/shop/load, balance after each")


def check_refusals(stack, client):
    card0, card2 = card_number(it.CARDS[0]), card_number(it.CARDS[2])
    token0 = stack.token(card0)
    for path in (f"/v1/cards/{card0}", f"/v1/cards/{card0}/transactions"):
        status, body = client.get(path)
        assert_error(status, body, 401, "unauthorized")
        status, body, _ = client.call("GET", path, headers={"Authorization": "Basic " + token0})
        assert_error(status, body, 401)
        status, body = client.get(path.replace(card0, card2), token0)  # another card's token: 404, as if absent
        assert_error(status, body, 404, "not_found")
    for path in ("/v1/cards/9999999999999999", "/v1/cards/12345", "/v1/cards/abcdefabcdefabcd/transactions"):
        status, body = client.get(path, token0)
        assert_error(status, body, 404, "not_found")
    status, body = client.get(f"/v1/cards/{card0}", "card_forged-token-of-the-right-shape")
    assert_error(status, body, 404)
    for query in ("limit=0", "limit=101", "limit=abc", "cursor=xyz", "cursor=-1"):
        status, body = client.get(f"/v1/cards/{card0}/transactions?{query}", token0)
        assert_error(status, body, 400, "bad_request")
    status, body, _ = client.call("DELETE", f"/v1/cards/{card0}", token0)
    assert_error(status, body, 405)
    status, body = client.get("/v2/nothing")
    assert_error(status, body, 404)
    # Oversize head (431), oversize body (413), malformed request line (400): a JSON error, then close.
    status, body, _ = client.call("GET", f"/v1/cards/{card0}", token0, headers={"X-Padding": "a" * 10000})
    assert_error(status, body, 431, "header_too_large")
    # The body limit is enforced from Content-Length, before the body is read (the answer comes at once).
    answer = raw_exchange(stack.http_port, b"POST /v1/clerk/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          stack.clerk["alice"].encode() + b"\r\nContent-Length: 2097152\r\n\r\n{")
    assert answer.startswith("HTTP/1.1 413") and '"body_too_large"' in answer, answer
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
        answer = raw_exchange(stack.http_port, garbage)
        assert answer.startswith("HTTP/1.1 400") and '"malformed_request"' in answer, answer
    # A client that sends half a request and stalls loses the connection at the read deadline.
    with socket.create_connection(("127.0.0.1", stack.http_port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.time()
        assert s.recv(100) == b""
        assert time.time() - start < 15
    it.log("  ok  401 (none / not Bearer), 404 (another card's token, unknown, malformed), 400, 405, 431, 413, "
           "malformed requests, stalled client closed")


def check_clerk(stack, client):
    alice, reader, settler = stack.clerk["alice"], stack.clerk["reader"], stack.clerk["settler"]
    card1 = card_number(it.CARDS[1])
    status, body, _ = client.call("PUT", f"/v1/clerk/cards/{card1}/status", reader, {"status": "lost"})
    assert_error(status, body, 403, "forbidden")
    status, body, _ = client.call("PUT", f"/v1/clerk/cards/{card1}/status", "clerk_unknown", {"status": "lost"})
    assert_error(status, body, 401)
    status, body, _ = client.call("PUT", f"/v1/clerk/cards/{card1}/status", alice, {"status": "stolen"})
    assert_error(status, body, 400)
    status, body, _ = client.call("PUT", f"/v1/clerk/cards/{card1}/status", alice, {"status": "lost", "reason": "phoned in"})
    assert status == 200 and body == {"card_number": card1, "status": "lost"}, body
    status, body = client.get(f"/v1/cards/{card1}", stack.token(card1))
    assert status == 200 and body["status"] == "lost", body
    # Terminals see the clerk's change at their next hotlist sync (ISO8583.md §4.6).
    link = stack.link("BUS00001")
    link.sign_on("BUS00001", stan=70)
    _, answer = link.call("0800", {11: "000071", 41: "BUS00001", 70: "101", 48: "000000000000"})
    assert answer[39] == "00" and answer[63].endswith("0+" + it.CARDS[1]), answer
    link.close()
    status, body = client.get(f"/v1/clerk/cards/{card1}", reader)
    assert status == 200 and body["status"] == "lost" and body["token_issued_at"], body
    assert [f["kind"] for f in body["risk_flags"]] == ["tac_invalid"], body
    status, body, _ = client.call("PUT", f"/v1/clerk/cards/{card1}/status", alice, {"status": "active"})
    assert status == 200 and body["status"] == "active"
    status, body = client.get("/v1/clerk/cards/0000000000000000", reader)
    assert_error(status, body, 404)
    # A clerk without the role learns nothing, not even whether a card exists: 403 for a registered card
    # and for an unknown one alike (the role is checked before the lookup).
    for number in (card1, "0000000000000000"):
        status, body = client.get(f"/v1/clerk/cards/{number}", settler)
        assert_error(status, body, 403)
        status, body, _ = client.call("PUT", f"/v1/clerk/cards/{number}/status", reader, {"status": "lost"})
        assert_error(status, body, 403)
    it.log("  ok  hotlist on/off (role hotlist; read cannot), the cardholder sees the status, risk flags per card")

    status, body = client.get("/v1/clerk/risk", reader)
    assert status == 200 and [f["card_number"] for f in body["risk_flags"]] == [card1], body
    status, body = client.get("/v1/clerk/suspense", reader)
    assert status == 200 and len(body["suspense"]) == 1 and body["suspense"][0]["amount_fen"] == 150, body
    status, body = client.get("/v1/clerk/suspense", settler)
    assert_error(status, body, 403)

    # Registrations.
    status, body, _ = client.call("POST", "/v1/clerk/participants", alice,
                                  {"id": 3003, "name": "Coconut Clinic", "kind": "clinic", "bank_account": "6222000055556666"})
    assert status == 201 and body["id"] == 3003, body
    for bad in ({"id": 0, "name": "x", "kind": "bus", "bank_account": "1"}, {"id": 5, "name": "x", "kind": "taxi", "bank_account": "1"},
                {"id": 5, "name": "x", "kind": "bus", "bank_account": "1", "extra": 1}, [1, 2]):
        status, body, _ = client.call("POST", "/v1/clerk/participants", alice, bad)
        assert_error(status, body, 400)
    status, body, _ = client.call("POST", "/v1/clerk/terminals", alice,
                                  {"terminal_id": "CLN00001", "psam_terminal_id": "460100000009", "participant_id": 3003})
    assert status == 201, body
    status, body, _ = client.call("POST", "/v1/clerk/terminals", alice,
                                  {"terminal_id": "CLN00002", "psam_terminal_id": "460100000010", "participant_id": 4004})
    assert_error(status, body, 400)
    status, body, _ = client.call("POST", "/v1/clerk/terminals", reader,
                                  {"terminal_id": "CLN00002", "psam_terminal_id": "460100000010", "participant_id": 3003})
    assert_error(status, body, 403)
    # A card registered online: its token comes once, in the 201; registering it again is a conflict.
    new_card = {"asn": "46019999000000000042", "issuer_id": it.ISSUER_ID, "purse_balance_fen": 4321, "medical_balance_fen": 800}
    status, body, _ = client.call("POST", "/v1/clerk/cards", alice, new_card)
    assert status == 201 and body["card_number"] == "9999000000000042" and body["token"].startswith("card_"), body
    stack.secrets.append(body["token"])
    stack.issued_online.append(body["token"])
    status, card = client.get("/v1/cards/9999000000000042", body["token"])
    assert status == 200 and card["purse"]["balance_fen"] == 4321 and card["medical"]["balance_fen"] == 800, card
    status, body, _ = client.call("POST", "/v1/clerk/cards", alice, dict(new_card, purse_balance_fen=1))
    assert_error(status, body, 409, "conflict")
    for bad in (dict(new_card, asn="123"), dict(new_card, issuer_id="zz"), dict(new_card, purse_balance_fen=-5),
                dict(new_card, status="stolen"), dict(new_card, colour="red")):
        status, body, _ = client.call("POST", "/v1/clerk/cards", alice, bad)
        assert_error(status, body, 400)
    status, body, _ = client.call("POST", "/v1/clerk/cards", reader, dict(new_card, asn="46019999000000000043"))
    assert_error(status, body, 403)
    it.log("  ok  risk flags, suspense (role read); participant, terminal and card registration (role registry; the card's "
           "token in the 201, a second registration 409); bad bodies 400")

    # Token re-issue: the new token works, the old one is dead.
    card2 = card_number(it.CARDS[2])
    old = stack.token(card2)
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card2}/token", alice)
    assert status == 201 and body["card_number"] == card2 and body["token"].startswith("card_"), body
    new = body["token"]
    stack.secrets.append(new)
    stack.issued_online.append(new)
    assert client.get(f"/v1/cards/{card2}", new)[0] == 200
    assert client.get(f"/v1/cards/{card2}", old)[0] == 404
    with open(os.path.join(stack.tokens_dir, card2 + ".token"), "w") as f:
        f.write(new + "\n")
    it.log("  ok  POST /v1/clerk/cards/{n}/token: 201, the new token works, the old one answers 404")


def derive_hex(domain, material):
    """ledger::derive_id: the first 16 bytes of SHA-256(domain ‖ material), as 32 hex digits."""
    return hashlib.sha256(domain + material).hexdigest()[:32]


def payable_hex(participant, ledger):
    return derive_hex(b"payable", participant.to_bytes(8, "big") + ledger.to_bytes(4, "big"))


def purse_shadow_hex(asn):
    return derive_hex(b"purse", bytes.fromhex(asn))


def medical_hex(asn):
    return derive_hex(b"medical", bytes.fromhex(asn))


def settlement_transfer(cycle, participant, ledger, code, amount, linked):
    material = cycle.to_bytes(4, "big") + participant.to_bytes(8, "big") + ledger.to_bytes(4, "big") + code.to_bytes(2, "big")
    credit = (3 if ledger == 1 else 4) if code == 8 else ledger  # fee income 3 / 4; float 1, fund 2
    return {"id": derive_hex(b"settlement", material), "debit_account_id": payable_hex(participant, ledger),
            "credit_account_id": f"{credit:032x}", "amount": amount, "ledger": ledger, "code": code,
            "flags": ["linked"] if linked else [], "user_data_128": f"{cycle:08x}" + "0" * 24, "user_data_64": participant,
            "user_data_32": 0}


def today_cycle():
    local = time.gmtime(time.time() + 8 * 3600)
    return local.tm_year * 10000 + local.tm_mon * 100 + local.tm_mday


def journal_entries(client, token, action):
    status, body = client.get("/v1/clerk/journal?limit=1000", token)
    assert status == 200, body
    return [e for e in body["entries"] if e["action"] == action]


def check_transfers(stack, client):
    """The settlement role posts only what a settlement cycle produces, as the daemon computes it; the
    daemon of this phase runs with --settlement-margin-s 1."""
    settler, reader = stack.clerk["settler"], stack.clerk["reader"]
    cycle = today_cycle()
    now_ns = time.time_ns()
    window = {"id": cycle, "window_start_ns": 0, "window_end_ns": now_ns - 2_000_000_000}

    def post(transfers, claim=window, token=settler):
        return client.call("POST", "/v1/clerk/transfers", token, {"cycle": claim, "transfers": transfers})[:2]

    # The insider attack: a card's purse debited to a shop's payable as if it were a purchase.
    card2 = card_number(it.CARDS[2])
    before = client.get(f"/v1/cards/{card2}", stack.token(card2))[1]["purse"]["balance_fen"]
    fake_purchase = {"id": "a1" * 16, "debit_account_id": purse_shadow_hex(it.CARDS[2]), "credit_account_id": payable_hex(2002, 1),
                     "amount": 5000, "ledger": 1, "code": 1, "flags": [], "user_data_64": 2002}
    status, body = post([fake_purchase])
    assert_error(status, body, 403, "forbidden")
    assert body["error"]["message"].startswith("settlement transfer rule: transfers[0]: code 1 is not a settlement transfer"), body
    assert client.get(f"/v1/cards/{card2}", stack.token(card2))[1]["purse"]["balance_fen"] == before
    # Settlement-shaped but invented: an id of no cycle, a pending flag, a voided hold of someone else.
    shaped = settlement_transfer(cycle, 1001, 1, 8, 1, linked=False)
    for bad, says in ((dict(shaped, id="b1" * 16), "is none of cycle"), (dict(shaped, flags=["pending"]), "single-phase"),
                      (dict(shaped, flags=["void_pending"], pending_id="c1" * 16), "single-phase"),
                      (dict(shaped, credit_account_id=f"{1:032x}"), "moves")):
        status, body = post([bad])
        assert_error(status, body, 403, "forbidden")
        assert says in body["error"]["message"], (says, body)
    # The window rule: a date, start < end, ended at least the margin ago, joined to the previous cycle.
    for claim, says in ((dict(window, id=20261399), "not a business date"), (dict(window, window_start_ns=now_ns), "start must be"),
                        (dict(window, window_end_ns=now_ns + 10**12), "ends less than 1 s ago")):
        status, body = post([shaped], claim)
        assert_error(status, body, 403, "forbidden")
        assert body["error"]["message"].startswith("settlement window rule: ") and says in body["error"]["message"], (says, body)
    # The daemon names the amount it computed; the fee and payout it computes are what it accepts.
    expected = {}
    for code in (8, 7):
        status, body = post([settlement_transfer(cycle, 1001, 1, code, 1, linked=False)])
        assert_error(status, body, 403, "forbidden")
        found = re.search(r"differs from the (\d+) fen the daemon computes for participant 1001's purse", body["error"]["message"])
        assert found, body
        expected[code] = int(found.group(1))
    base = expected[7] + expected[8]  # purchases at 1001 (no loads, no adjustments yet): payout + fee
    assert expected[7] > 0 and expected[8] == (base * 30 + 5000) // 10000, expected  # 30 bp, rounded half up
    chain = [settlement_transfer(cycle, 1001, 1, 8, expected[8], linked=True), settlement_transfer(cycle, 1001, 1, 7, expected[7], linked=False)]
    status, body = post([chain[0], dict(chain[1], amount=expected[7] + 1)])
    assert_error(status, body, 403, "forbidden")  # one wrong transfer refuses the whole request
    status, body = post(chain)
    assert status == 200 and [r["result"] for r in body["results"]] == ["ok", "ok"], body
    status, body = post(chain)
    assert status == 200 and [r["result"] for r in body["results"]] == ["exists", "exists"], body
    # The cycle's window is fixed now; the next cycle must start where it ended.
    status, body = post(chain, dict(window, window_end_ns=window["window_end_ns"] - 1))
    assert_error(status, body, 403, "forbidden")
    assert "a cycle's window never changes" in body["error"]["message"], body
    status, body = post([shaped], {"id": cycle + 1, "window_start_ns": 5, "window_end_ns": window["window_end_ns"] + 1})
    assert_error(status, body, 403, "forbidden")
    assert "must begin where cycle" in body["error"]["message"], body
    # Malformed requests: 400, nothing applied.
    probe = chain[0]
    bad_bodies = [{"cycle": window, "transfers": [probe, dict(probe, id="xyz")]}, {"cycle": window, "transfers": [dict(probe, colour="red")]},
                  {"cycle": window, "transfers": [dict(probe, amount=-1)]}, {"cycle": window, "transfers": [dict(probe, flags=["sticky"])]},
                  {"cycle": window, "transfers": []}, {"cycle": window, "transfers": [probe] * 1001}, {"transfers": [probe]},
                  {"cycle": dict(window, colour="red"), "transfers": [probe]}, {"cycle": dict(window, id=-1), "transfers": [probe]},
                  {"cycle": window, "transfer": [probe]}, "not json"]
    for bad in bad_bodies:
        status, body, _ = client.call("POST", "/v1/clerk/transfers", settler, bad)
        assert_error(status, body, 400, "bad_request")
    status, body = post(chain, token=reader)
    assert_error(status, body, 403)
    refused = [e for e in journal_entries(client, reader, "settlement") if e["outcome"] == "refused"]
    assert any("code 1 is not a settlement transfer" in e["detail"] for e in refused), refused
    posted = [e for e in journal_entries(client, reader, "settlement") if e["outcome"] == "ok"]
    assert len(posted) == 2 and f"2 transfers, {expected[7] + expected[8]} fen" in posted[0]["detail"], posted
    it.log("  ok  POST /v1/clerk/transfers: a purse debit posed as settlement 403 (card untouched), invented / pending / "
           "void shapes 403, window rules 403, the daemon's own fee and payout ok then exists, one wrong amount refuses the "
           "request, the window fixed, invalid bodies 400, refusals journaled")
    return window, expected


def check_adjustments(stack, client, window, expected):
    """Manual adjustments: one clerk proposes, another approves; only payables, float / fund and card
    medical accounts; the approved amount lands in the participant's next settlement."""
    maker, checker, reader, settler = stack.clerk["maker"], stack.clerk["checker"], stack.clerk["reader"], stack.clerk["settler"]
    payable = payable_hex(1001, 1)
    proposal = {"debit_account_id": f"{1:032x}", "credit_account_id": payable, "ledger": 1, "amount": 250,
                "reason": "ride charged twice on 12-05, refunded to the operator"}
    for bad, status_code in ((dict(proposal, amount=0), 400), (dict(proposal, reason=""), 400), (dict(proposal, colour="red"), 400),
                             ({k: v for k, v in proposal.items() if k != "ledger"}, 400), (dict(proposal, ledger=3), 400),
                             (dict(proposal, reason="a\nb"), 400)):
        status, body, _ = client.call("POST", "/v1/clerk/adjustments", maker, bad)
        assert_error(status, body, status_code)
    for debit, says in ((purse_shadow_hex(it.CARDS[0]), "purse shadow"), (f"{5:032x}", "owned by another rule"),
                        (f"{3:032x}", "owned by another rule"), ("ee" * 16, "does not exist"), (medical_hex(it.CARDS[0]), "is on ledger 2")):
        status, body, _ = client.call("POST", "/v1/clerk/adjustments", maker, dict(proposal, debit_account_id=debit))
        assert_error(status, body, 403, "forbidden")
        assert body["error"]["message"].startswith("adjustment account rule: ") and says in body["error"]["message"], (says, body)
    for token in (reader, settler):
        status, body, _ = client.call("POST", "/v1/clerk/adjustments", token, proposal)
        assert_error(status, body, 403)
    status, body, _ = client.call("POST", "/v1/clerk/adjustments", maker, proposal)
    assert status == 201 and body["status"] == "proposed" and body["maker"] == "maker" and body["amount"] == 250, body
    number = body["number"]
    # Nothing moved: the cycle after the posted one computes no payout for 1001 yet (only the window of
    # activity after the first cycle, which has none) — and the maker cannot approve.
    status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{number}/approve", maker, {"note": "self"})
    assert_error(status, body, 403, "forbidden")
    assert body["error"]["message"].startswith("maker-checker rule"), body
    assert client.get(f"/v1/clerk/adjustments/{number}", reader)[1]["status"] == "proposed"
    status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{number}/approve", checker, {"note": "operator's letter 12-06"})
    assert status == 200 and body["status"] == "approved" and body["checker"] == "checker", body
    for who in (checker, maker):
        status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{number}/approve", who)
        assert_error(status, body, 409)
    status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{number}/reject", checker)
    assert_error(status, body, 409)
    # A proposal the ledger refuses at approval (more than the card's medical account holds) stays proposed.
    status, body, _ = client.call("POST", "/v1/clerk/adjustments", maker,
                                  {"debit_account_id": medical_hex(it.CARDS[1]), "credit_account_id": payable_hex(1001, 2), "ledger": 2,
                                   "amount": 10**9, "reason": "too much"})
    assert status == 201, body
    too_much = body["number"]
    status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{too_much}/approve", checker)
    assert_error(status, body, 409)
    assert "exceeds_credits" in body["error"]["message"], body
    status, body, _ = client.call("POST", f"/v1/clerk/adjustments/{too_much}/reject", maker, {"note": "withdrawn"})
    assert status == 200 and body["status"] == "rejected", body
    status, body = client.get("/v1/clerk/adjustments?status=approved", reader)
    assert status == 200 and [a["number"] for a in body["adjustments"]] == [number], body
    assert client.get("/v1/clerk/adjustments?status=maybe", reader)[0] == 400
    assert client.get("/v1/clerk/adjustments/999", reader)[0] == 404
    # The journal has both steps with accounts and amounts.
    approved = journal_entries(client, reader, "adjustment_approve")
    ok = [e for e in approved if e["outcome"] == "ok"]
    assert len(ok) == 1 and ok[0]["clerk"] == "checker" and "250 fen" in ok[0]["detail"] and payable in ok[0]["detail"], approved
    assert any(e["outcome"] == "refused" and e["clerk"] == "maker" for e in approved), approved
    proposed = journal_entries(client, reader, "adjustment_propose")
    assert any(e["outcome"] == "ok" and "250 fen" in e["detail"] and "refunded" in e["detail"] for e in proposed), proposed
    # The next cycle (joined to the posted one) pays the adjustment out with the participant's payout.
    time.sleep(1.5)
    cycle = window["id"] + 1
    claim = {"id": cycle, "window_start_ns": window["window_end_ns"], "window_end_ns": time.time_ns() - 1_100_000_000}
    status, body = client.call("POST", "/v1/clerk/transfers", settler,
                               {"cycle": claim, "transfers": [settlement_transfer(cycle, 1001, 1, 7, 1, linked=False)]})[:2]
    assert_error(status, body, 403, "forbidden")
    assert "differs from the 250 fen" in body["error"]["message"], body
    it.log("  ok  adjustments: bad bodies 400; purse shadow, suspense, fee income, unknown and wrong-ledger accounts 403; roles; "
           "the maker cannot approve (403), another clerk can (200, then 409); a ledger refusal leaves it proposed; both steps "
           "journaled with accounts and amounts; the next cycle's payout is the 250 fen adjustment")


def check_isolation(stack, seen):
    client = Client(stack.http_port, seen)
    numbers = [card_number(extra_asn(i)) for i in range(EXTRA_CARDS)]
    tokens = [stack.token(n) for n in numbers]
    for i, number in enumerate(numbers):
        status, body = client.get(f"/v1/cards/{number}", tokens[i])
        assert status == 200 and body["purse"]["balance_fen"] == PURSE_BASE_FEN + i, (i, body)
        other = numbers[(i + 1) % EXTRA_CARDS]
        status, body = client.get(f"/v1/cards/{other}/transactions", tokens[i])
        assert status == 404, (i, body)
    answered = sum(client.get(f"/v1/cards/{n}", tokens[0])[0] == 200 for n in numbers)
    assert answered == 1, answered
    it.log(f"  ok  isolation: {EXTRA_CARDS} cards each read with its own token; no token reads another card "
           f"({EXTRA_CARDS} neighbour reads + one token against all {EXTRA_CARDS} cards: 1 answer)")


def check_operations(stack, client, openapi_path):
    status, body = client.get("/healthz")
    assert status == 200 and body["status"] == "ok" and body["ledger_readable"] and body["storage"] == "ok", body
    # /metrics is an operator's: no token 401, a clerk without the role read 403, a reader 200.
    status, body = client.get("/metrics")
    assert_error(status, body, 401)
    status, body = client.get("/metrics", stack.clerk["settler"])
    assert_error(status, body, 403)
    status, text = client.get("/metrics", stack.clerk["reader"])
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    for name in ("coconut_http_request_duration_seconds_count", "coconut_ledger_commits_total", "coconut_iso_requests_total",
                 "coconut_hsm_tac_verifications_total", "coconut_http_connections_accepted_total"):
        assert values.get(name, 0) > 0, (name, values.get(name))
    for name in ("coconut_ledger_writer_queue_depth", "coconut_http_connections_open", 'coconut_ledger_commit_requests_bucket{le="+Inf"}',
                 'coconut_ledger_commit_duration_seconds_bucket{le="+Inf"}', "coconut_iso_in_flight"):
        assert name in values, name
    assert values['coconut_http_responses_total{class="4xx"}'] > 0
    # The HSM link (hsm::LinkStats): breaker closed, the connection its TAC batches went over counted.
    assert values["coconut_hsm_breaker_open"] == 0 and values["coconut_hsm_breaker_state"] == 0, values.get("coconut_hsm_breaker_state")
    assert values["coconut_hsm_connections_opened_total"] > 0, values.get("coconut_hsm_connections_opened_total")
    for name in ("coconut_hsm_breaker_opens_total", "coconut_hsm_fast_failures_total", "coconut_hsm_retries_total",
                 "coconut_hsm_keepalives_total", "coconut_hsm_timeouts_total", "coconut_hsm_probes_total"):
        assert name in values, name
    # Storage (the full disk itself: test_clearingd_full_disk.py): not full, no storage error.
    assert values["coconut_ledger_storage_full"] == 0 and values["coconut_ledger_storage_errors_total"] == 0, values
    # The terminals of this stack connect over mutual TLS: their handshakes are counted.
    assert values['coconut_iso_tls_handshakes_total{kind="full"}'] > 0, values.get('coconut_iso_tls_handshakes_total{kind="full"}')
    assert 'coconut_iso_tls_handshakes_total{kind="resumed"}' in values and "coconut_iso_tls_handshake_failures_total" in values
    # Answers by response MTI and code, declines, loads, holds, suspense, process_*, build info.
    assert values['coconut_iso_responses_total{mti="0330",code="00"}'] > 0, [k for k in values if k.startswith("coconut_iso_responses")]
    assert values['coconut_iso_responses_total{mti="0810",code="00"}'] > 0  # sign-ons
    declined = sum(v for k, v in values.items() if k.startswith("coconut_iso_responses_total{")
                   and not re.search(r'code="(00|10|94)"', k))
    assert values["coconut_iso_declines_total"] == declined, (values["coconut_iso_declines_total"], declined)
    for name in ('coconut_iso_loads_total{event="approved"}', 'coconut_iso_holds_total{event="expired"}', "coconut_iso_reversals_total",
                 'coconut_suspense_balance_fen{ledger="purse"}', 'coconut_suspense_balance_fen{ledger="medical"}'):
        assert name in values, name
    assert values["process_open_fds"] > 0 and values["process_resident_memory_bytes"] > 0 and values["process_max_fds"] > 0, values
    assert abs(values["process_start_time_seconds"] - time.time()) < 3600 and "process_cpu_seconds_total" in values
    assert any(re.fullmatch(r'coconut_build_info\{program="coconut-clearingd",version="[0-9.]+"\}', k) for k in values), values
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: tools/setup.sh installs it (Debian package prometheus)"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"promtool check metrics:\n{checked.stdout}{checked.stderr}"
    status, document = client.get("/v1/openapi.json")
    with open(openapi_path) as f:
        assert status == 200 and document == json.load(f)
    assert document["openapi"].startswith("3.")
    status, page, response = client.call("GET", "/")
    assert status == 200 and "<form" in page and response.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in response.getheader("Content-Security-Policy")
    assert "http://" not in page and "https://" not in page  # no external resource
    status, body = client.get("/v1/clerk/journal?limit=1000", stack.clerk["reader"])
    actions = [(e["clerk"], e["action"]) for e in body["entries"]]
    for expected in (("admin", "clerk_add"), ("admin", "issue_tokens"), ("alice", "card_status"), ("alice", "card_token"),
                     ("settler", "settlement"), ("alice", "participant"), ("alice", "terminal"), ("reader", "card_lookup"),
                     ("reader", "risk_list"), ("reader", "suspense_list"), ("alice", "card")):
        assert expected in actions, (expected, actions)
    it.log(f"  ok  /healthz, /metrics ({len(values)} samples, promtool check metrics clean), /v1/openapi.json = clearing/openapi.json, page at /, "
           f"clerk journal ({len(actions)} entries, who did what)")


def check_no_token_readable(stack, seen):
    bodies = "\n".join(seen)
    files = b""
    for root, _, names in os.walk(stack.data):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files += f.read()
    for secret in stack.secrets:
        shown_once = 1 if secret in stack.issued_online else 0  # the 201 of POST …/token shows it, once
        assert bodies.count(secret) == shown_once, "a token came back in an answer"
        assert secret.encode() not in files, "a token is stored in clear in the data directory"
        random_part = secret.split("_", 1)[1]
        assert random_part.encode() not in files
    it.log(f"  ok  none of {len(stack.secrets)} tokens appears in {len(seen)} answers or in the data directory")


def check_connection_limit(stack):
    stack.start_daemon(["--http-connections-max", "3"])
    held = [socket.create_connection(("127.0.0.1", stack.http_port), timeout=5) for _ in range(3)]
    time.sleep(0.2)  # the daemon has accepted them
    # The refusal is written at accept, before any request is read (sending one could race the close).
    answer = raw_exchange(stack.http_port, b"")
    assert answer.startswith("HTTP/1.1 503") and '"busy"' in answer, answer
    held.pop().close()
    time.sleep(0.2)
    answer = raw_exchange(stack.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith("HTTP/1.1 200"), answer
    for s in held:
        s.close()
    assert stack.stop_daemon() == 0
    it.log("  ok  bounded connections: above --http-connections-max a new connection gets 503 busy; a freed slot serves again")


def phase_api(stack, openapi_path):
    it.log("phase api")
    stack.start_daemon(["--http-token-rate", "100000", "--http-address-rate", "100000", "--settlement-margin-s", "1"])
    upload_some(stack)
    time.sleep(2.1)  # the settlement window below ends 2 s ago: after these bookings
    locked = it.run([stack.clearingd, "admin", "issue-tokens", "--data", stack.data, "--out", stack.tokens_dir + "y"], check=False)
    assert locked.returncode == 3, (locked.returncode, locked.stderr)  # the serving daemon holds the directory
    seen = []
    client = Client(stack.http_port, seen)
    check_card_reads(stack, client)
    check_refusals(stack, client)
    check_clerk(stack, client)
    check_clerk_admin(stack, client)
    check_clerk_grants(stack, client)
    check_admin_while_serving(stack, client)
    window, expected = check_transfers(stack, client)
    check_adjustments(stack, client, window, expected)
    check_isolation(stack, seen)
    check_operations(stack, client, openapi_path)
    check_no_token_readable(stack, seen)
    assert stack.stop_daemon() == 0
    report = stack.check()
    it.log(f"  ok  check after the API phase: {report['transfers']} transfers")
    check_clerk_revoke(stack, seen)
    check_address_limit(stack, seen)


def check_clerk_admin(stack, client):
    """Clerk administration while serving (role clerks): add a clerk (token once), list, revoke — each
    journaled; the revoked token answered 401 at once; bad bodies 400; no self-revocation."""
    keeper = stack.clerk["keeper"]
    status, body = client.call("POST", "/v1/clerk/clerks", stack.clerk["alice"], {"name": "night", "roles": "read"})[:2]
    assert_error(status, body, 403, "forbidden")
    for bad in ("[]", {"name": "night"}, {"name": "two words", "roles": "read"}, {"name": "night", "roles": "root"}):
        status, body = client.call("POST", "/v1/clerk/clerks", keeper, bad)[:2]
        assert_error(status, body, 400)
    status, body = client.call("POST", "/v1/clerk/clerks", keeper, {"name": "night", "roles": "read,hotlist"})[:2]
    assert status == 201 and body["name"] == "night" and body["roles"] == ["hotlist", "read"], (status, body)
    night = body["token"]
    stack.secrets.append(night)
    stack.issued_online.append(night)  # shown once, in this 201
    assert night.startswith("clerk_")
    assert client.get("/v1/clerk/risk", night)[0] == 200  # the new token works at once
    status, body = client.get("/v1/clerk/clerks", keeper)
    assert status == 200 and any(c["name"] == "night" and not c["revoked"] for c in body["clerks"]), body
    assert "clerk_" not in json.dumps(body), body
    status, body = client.call("DELETE", "/v1/clerk/clerks/keeper", keeper)[:2]
    assert_error(status, body, 409)
    status, body = client.call("DELETE", "/v1/clerk/clerks/night", keeper)[:2]
    assert status == 200 and body == {"name": "night", "revoked": 1}, (status, body)
    status, body = client.get("/v1/clerk/risk", night)
    assert_error(status, body, 401, "unauthorized")
    status, body = client.call("DELETE", "/v1/clerk/clerks/night", keeper)[:2]
    assert_error(status, body, 409)
    actions = [(e["clerk"], e["action"], e["target"], e["outcome"]) for e in journal_entries(client, stack.clerk["alice"], "clerk_add")]
    actions += [(e["clerk"], e["action"], e["target"], e["outcome"]) for e in journal_entries(client, stack.clerk["alice"], "clerk_revoke")]
    assert ("keeper", "clerk_add", "night", "ok") in actions and ("keeper", "clerk_revoke", "night", "ok") in actions, actions
    it.log("  ok  clerks while serving: added (token once, works at once), listed without tokens, revoked (401 at once), "
           "journaled; 400 on bad bodies, 403 without the role, 409 on self or repeat")


def check_clerk_grants(stack, client):
    """Roles that move money are granted by two clerks: the grant is pending (its token 401) until a second
    clerk with the role clerks approves it; the requester and the clerk named cannot; unknown 404; a decided
    grant 409; a withdrawal; every step and refusal journaled; the list shows no token."""
    keeper, keeper2 = stack.clerk["keeper"], stack.clerk["keeper2"]
    status, body = client.call("POST", "/v1/clerk/clerks", keeper, {"name": "payer", "roles": "settlement,read"})[:2]
    assert status == 202 and body["status"] == "pending" and body["requested_by"] == "keeper", (status, body)
    assert body["roles"] == ["settlement", "read"] and body["token"].startswith("clerk_"), body
    payer, payer_grant = body["token"], body["grant"]
    stack.secrets.append(payer)
    stack.issued_online.append(payer)
    status, body = client.get("/v1/clerk/cluster/position", payer)
    assert_error(status, body, 401, "unauthorized")  # not in force before the approval
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{payer_grant}/approve", keeper, {"note": "me"})[:2]
    assert_error(status, body, 403, "maker_checker")
    assert "requested" in body["error"]["message"], body
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{payer_grant}/approve", stack.clerk["alice"], {})[:2]
    assert_error(status, body, 403, "forbidden")  # alice has no role clerks
    status, body = client.call("POST", "/v1/clerk/clerks/grants/999/approve", keeper2, {})[:2]
    assert_error(status, body, 404, "not_found")
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{payer_grant}/approve", keeper2, {"note": 5})[:2]
    assert_error(status, body, 400)
    # A grant to keeper2 itself: keeper2 cannot approve it either.
    status, body = client.call("POST", "/v1/clerk/clerks", keeper, {"name": "keeper2", "roles": "adjust"})[:2]
    assert status == 202, (status, body)
    self_grant = body["grant"]
    stack.secrets.append(body["token"])
    stack.issued_online.append(body["token"])
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{self_grant}/approve", keeper2, {})[:2]
    assert_error(status, body, 403, "maker_checker")
    assert "itself" in body["error"]["message"], body
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{self_grant}/reject", keeper, {"note": "withdrawn"})[:2]
    assert status == 200 and body["status"] == "rejected" and body["decided_by"] == "keeper", (status, body)
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{self_grant}/approve", keeper, {})[:2]
    assert_error(status, body, 403, "maker_checker")
    # The second clerk approves: the token works at once; deciding again is refused.
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{payer_grant}/approve", keeper2, {"note": "checked the form"})[:2]
    assert status == 200 and body["status"] == "approved" and body["decided_by"] == "keeper2", (status, body)
    status, body = client.get("/v1/clerk/cluster/position", payer)
    assert status == 200 and "position" in body, (status, body)
    for decision in ("approve", "reject"):
        status, body = client.call("POST", f"/v1/clerk/clerks/grants/{payer_grant}/{decision}", keeper2, {})[:2]
        assert_error(status, body, 409, "not_pending")
    # Roles that move no money need no second clerk (201 at once, as before).
    status, body = client.call("POST", "/v1/clerk/clerks", keeper, {"name": "watcher", "roles": "read,cluster"})[:2]
    assert status == 201 and "grant" not in body, (status, body)
    stack.secrets.append(body["token"])
    stack.issued_online.append(body["token"])
    status, body = client.get("/v1/clerk/clerks/grants", keeper2)
    assert status == 200, body
    grants = {g["grant"]: g for g in body["grants"]}
    assert grants[payer_grant]["status"] == "approved" and grants[self_grant]["status"] == "rejected", grants
    assert "clerk_" not in json.dumps(body) and "hash" not in json.dumps(body), body
    status, body = client.get("/v1/clerk/clerks/grants", stack.clerk["alice"])
    assert_error(status, body, 403, "forbidden")
    journal = [(e["clerk"], e["action"], e["target"], e["outcome"]) for e in client.get("/v1/clerk/journal?limit=1000", stack.clerk["alice"])[1]["entries"]]
    for expected in (("keeper", "clerk_grant_request", f"grant {payer_grant}", "ok"),
                     ("keeper", "clerk_grant_approve", f"grant {payer_grant}", "refused: maker_checker"),
                     ("keeper2", "clerk_grant_approve", "grant 999", "refused: not_found"),
                     ("keeper2", "clerk_grant_approve", f"grant {self_grant}", "refused: maker_checker"),
                     ("keeper", "clerk_grant_reject", f"grant {self_grant}", "ok"),
                     ("keeper2", "clerk_grant_approve", f"grant {payer_grant}", "ok"),
                     ("keeper2", "clerk_grant_reject", f"grant {payer_grant}", "refused: not_pending")):
        assert expected in journal, (expected, [j for j in journal if j[1].startswith("clerk_grant")])
    it.log("  ok  money roles by two clerks: 202 pending (token 401), the requester and the clerk named 403 maker_checker, "
           "unknown 404, decided 409 not_pending, withdrawal, approved by a second clerk (token works at once), all journaled")


def check_admin_while_serving(stack, client):
    """`coconut-clearingd admin --token-file F …` while the daemon serves the directory: through its clerk API
    (the URL from DATA/http.url), journaled under the token's clerk — clerk add / list / revoke (the revoked
    token 401 at once), a money role's grant approved by a second clerk, card tokens re-issued, a card's
    status, a registry file; without --token-file the locked directory's refusal names the API."""
    tokens = {}
    for name in ("keeper", "keeper2", "alice", "reader"):
        tokens[name] = os.path.join(stack.dir, f"{name}.clerk-token")
        with open(tokens[name], "w") as f:
            f.write(stack.clerk[name] + "\n")
    admin = [stack.clearingd, "admin", "--data", stack.data]

    def remote(name, *argv, check=True):
        return it.run([*admin, "--token-file", tokens[name], *argv], check=check)

    locked = it.run([*admin, "clerk-add", "--name", "temp", "--roles", "read"], check=False)
    assert locked.returncode == 3 and "--token-file" in locked.stderr and "http://127.0.0.1:" in locked.stderr, locked.stderr
    temp = remote("keeper", "clerk-add", "--name", "temp", "--roles", "read").stdout.strip()
    assert temp.startswith("clerk_"), temp
    stack.secrets.append(temp)  # shown by the CLI, never in an answer the test client saw
    assert client.get("/v1/clerk/risk", temp)[0] == 200
    listed_run = remote("keeper", "clerk-list")
    listed = listed_run.stdout + listed_run.stderr
    assert "temp\tread\t" in listed and "clerk_" not in listed, repr(listed)
    out = remote("keeper", "clerk-revoke", "--name", "temp").stdout
    assert out.startswith("revoked 1 token(s) of clerk temp"), out
    status, body = client.get("/v1/clerk/risk", temp)
    assert_error(status, body, 401, "unauthorized")  # revoked while serving: refused at once
    again = remote("keeper", "clerk-revoke", "--name", "temp", check=False)
    assert again.returncode == 5 and "409" in again.stderr, (again.returncode, again.stderr)
    no_role = remote("reader", "clerk-add", "--name", "temp2", "--roles", "read", check=False)
    assert no_role.returncode == 5 and "403" in no_role.stderr and "role clerks required" in no_role.stderr, no_role.stderr

    # A money role: pending until a second clerk approves (the requester cannot).
    pending = remote("keeper", "clerk-add", "--name", "teller", "--roles", "counter")
    teller = pending.stdout.strip()
    stack.secrets.append(teller)
    grant = int(re.search(r"grant (\d+) is pending", pending.stderr).group(1))
    assert client.get("/v1/clerk/reports/dormant", teller)[0] == 401
    assert f"{grant}\tteller\tcounter\tpending\trequested by keeper" in remote("keeper2", "clerk-grants").stdout
    own = remote("keeper", "clerk-approve", "--grant", str(grant), check=False)
    assert own.returncode == 5 and "403" in own.stderr and "maker-checker" in own.stderr, own.stderr
    out = remote("keeper2", "clerk-approve", "--grant", str(grant), "--note", "desk form 12").stdout
    assert out.startswith(f"grant {grant} approved: teller roles counter"), out
    assert client.get("/v1/clerk/reports/dormant", teller)[0] == 200
    offline_only = it.run([*admin, "clerk-grants"], check=False)
    assert offline_only.returncode == 2 and "--token-file" in offline_only.stderr, offline_only.stderr

    # Card tokens re-issued through the API: the new one works, the old one no longer.
    number = card_number(extra_asn(7))
    old = stack.token(number)
    out_dir = os.path.join(stack.dir, "reissued")
    out = remote("alice", "issue-tokens", "--card", number, "--out", out_dir).stdout
    assert out.startswith("1 tokens written to"), out
    path = os.path.join(out_dir, number + ".token")
    assert os.stat(path).st_mode & 0o777 == 0o600
    new = open(path).read().strip()
    stack.secrets.append(new)
    assert client.get(f"/v1/cards/{number}", new)[0] == 200 and client.get(f"/v1/cards/{number}", old)[0] == 404
    with open(os.path.join(stack.tokens_dir, number + ".token"), "w") as f:
        f.write(new + "\n")
    every = remote("alice", "issue-tokens", "--out", out_dir, check=False)
    assert every.returncode == 2 and "--card" in every.stderr, every.stderr

    # A card's status, then a registry file: a participant, its terminal and a new card.
    remote("alice", "card-status", extra_asn(8), "blocked")
    status, body = client.get(f"/v1/clerk/cards/{card_number(extra_asn(8))}", stack.clerk["alice"])
    assert body["status"] == "blocked", body
    remote("alice", "card-status", extra_asn(8), "active")
    registry = {"participants": [{"id": 3003, "name": "Night Market", "kind": "shop", "bank_account": "6222000055556666"}],
                "terminals": [{"terminal_id": "NIGHT001", "psam_terminal_id": "460100000099", "participant_id": 3003,
                               "merchant_id": "NIGHT0001"}],
                "cards": [{"asn": extra_asn(EXTRA_CARDS + 1), "issuer_id": it.ISSUER_ID, "purse_balance_fen": 300},
                          {"asn": extra_asn(9), "issuer_id": it.ISSUER_ID, "purse_balance_fen": PURSE_BASE_FEN + 9,
                           "medical_balance_fen": 1000}]}
    path = os.path.join(stack.dir, "night.json")
    with open(path, "w") as f:
        json.dump(registry, f)
    loaded = json.loads(remote("alice", "load", path).stdout)
    assert loaded == {"participants": 1, "terminals": 1, "cards": 1, "cards_already_registered": 1}, loaded
    status, body = client.get(f"/v1/clerk/cards/{card_number(extra_asn(EXTRA_CARDS + 1))}", stack.clerk["alice"])
    assert status == 200, (status, body)
    journal = [(e["clerk"], e["action"], e["target"]) for e in client.get("/v1/clerk/journal?limit=1000", stack.clerk["alice"])[1]["entries"]]
    for expected in (("keeper", "clerk_add", "temp"), ("keeper", "clerk_revoke", "temp"), ("keeper2", "clerk_grant_approve", f"grant {grant}"),
                     ("alice", "card_token", number), ("alice", "participant", "3003"), ("alice", "terminal", "NIGHT001")):
        assert expected in journal, (expected, journal[-30:])
    it.log("  ok  admin --token-file while serving: clerk add / list / revoke (401 at once), a counter grant approved by a "
           "second clerk (the requester refused), a card token re-issued (old 404), card status, a registry file — journaled "
           "under each clerk; without --token-file exit 3 naming the API")


def check_address_limit(stack, seen):
    """Requests without a valid token, per client address: a burst of 50, then 429 with Retry-After at
    the rate; requests with a valid token from the same address still answered."""
    stack.start_daemon(["--http-address-rate", "0.5"])
    client = Client(stack.http_port, seen)
    number, other = card_number(it.CARDS[0]), card_number(it.CARDS[2])
    statuses = []
    for i in range(50):
        path, token = ((f"/v1/cards/{number}", None), (f"/v1/cards/{number}", stack.token(other)),
                       ("/v1/clerk/journal", "clerk_" + "x" * 32))[i % 3]
        status, _ = client.get(path, token)
        statuses.append(status)
    assert set(statuses) == {401, 404}, statuses  # refused as such, not yet limited
    status, body, response = client.call("GET", f"/v1/cards/{number}", stack.token(other))
    assert status == 429 and body["error"]["code"] == "rate_limited", (status, body)
    assert int(response.getheader("Retry-After")) >= 1, response.getheaders()
    status, body, response = client.call("GET", "/v1/clerk/journal", None)
    assert status == 429 and response.getheader("Retry-After"), (status, body)
    status, body = client.get(f"/v1/cards/{number}", stack.token(number))  # a valid token still answers
    assert status == 200 and body["card_number"] == number, (status, body)
    status, body = client.get("/v1/clerk/journal", stack.clerk["alice"])
    assert status == 200, (status, body)
    metrics = client.get("/metrics", stack.clerk["alice"])[1]  # the reader was revoked above
    assert any(line.startswith("coconut_http_rate_limited_total ") and int(line.split()[1]) >= 2 for line in metrics.splitlines()), metrics
    assert stack.stop_daemon() == 0
    it.log("  ok  per address: 50 requests without a valid token answered 401/404, then 429 with Retry-After; valid tokens unaffected")


def check_clerk_revoke(stack, seen):
    """Offline clerk-list / clerk-revoke: no token in the list, a revoked token is answered 401 like an
    unknown one, the other clerks keep theirs, the revocation is journaled."""
    admin = [stack.clearingd, "admin", "--data", stack.data]
    listed = it.run([*admin, "clerk-list"]).stdout
    assert "reader\tread\t" in listed and "alice\thotlist,registry,settlement,read\t" in listed, listed
    assert all(secret not in listed for secret in stack.secrets) and "clerk_" not in listed, listed
    out = it.run([*admin, "clerk-revoke", "--name", "reader"]).stdout
    assert out.startswith("revoked 1 token(s) of clerk reader"), out
    for name in ("reader", "nobody"):
        again = it.run([*admin, "clerk-revoke", "--name", name], check=False)
        assert again.returncode == 5 and "with a token in force" in again.stderr, (name, again.returncode, again.stderr)
    assert "reader\trevoked\t" in it.run([*admin, "clerk-list"]).stdout
    stack.start_daemon()
    client = Client(stack.http_port, seen)
    status, body = client.get("/v1/clerk/journal", stack.clerk["reader"])
    assert status == 401 and body["error"]["code"] == "unauthorized", (status, body)
    status, body = client.get("/v1/clerk/journal?limit=1000", stack.clerk["alice"])
    assert status == 200, (status, body)
    assert any(e["action"] == "clerk_revoke" and e["target"] == "reader" and e["clerk"] == "admin" for e in body["entries"]), body
    assert stack.stop_daemon() == 0
    it.log("  ok  clerk-list shows no token; clerk-revoke: the token answered 401, journaled; repeat or unknown name: exit 5")
    check_connection_limit(stack)


# ---- phase page --------------------------------------------------------------------------------------------------

def chromium(url, artifacts, screenshot=None):
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--virtual-time-budget=8000", "--window-size=390,844",
            f"--user-data-dir={os.path.join(artifacts, 'chromium-profile')}"]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(argv + [url], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def element_text(dom, element_id):
    start = dom.index(f'id="{element_id}"')
    start = dom.index(">", start) + 1
    return dom[start:dom.index("<", start)]


def phase_page(stack, artifacts):
    it.log("phase page")
    os.makedirs(artifacts, exist_ok=True)
    stack.start_daemon()
    stack.purchases(0, 0, "page.log", 300, 3)
    assert json.loads(stack.upload("page.log", 0).stdout)["remaining"] == 0
    card0 = card_number(it.CARDS[0])
    base = f"http://127.0.0.1:{stack.http_port}/"
    api = Client(stack.http_port)
    _, expected = api.get(f"/v1/cards/{card0}", stack.token(card0))
    url = f"{base}#card={card0}&token={stack.token(card0)}"
    dom = chromium(url, artifacts)
    shown = element_text(dom, "purse-balance")
    want = f"¥{expected['purse']['balance_fen'] / 100:.2f}"
    assert shown == want, (shown, want)
    rows = dom.count('<li class="state-')
    _, history = api.get(f"/v1/cards/{card0}/history?limit=10", stack.token(card0))
    assert rows == len(history["rows"]) and rows >= 4, (rows, history)
    assert "Bus ride" in dom and "-¥3.00" in dom
    assert 'id="message" class="message" hidden' in dom  # no error shown
    screenshot = os.path.join(artifacts, "balance_page.png")
    if os.path.exists(screenshot):
        os.remove(screenshot)
    chromium(url, artifacts, screenshot)
    assert os.path.getsize(screenshot) > 5000
    it.log(f"  ok  headless Chromium shows {shown} and {rows} transactions; screenshot {screenshot}")

    dom = chromium(f"{base}#card={card0}&token=card_wrong", artifacts)
    assert "Card number or token is wrong" in element_text(dom, "message"), element_text(dom, "message")
    card1 = card_number(it.CARDS[1])
    status, _, _ = api.call("PUT", f"/v1/clerk/cards/{card1}/status", stack.clerk["alice"], {"status": "blocked"})
    assert status == 200
    dom = chromium(f"{base}#card={card1}&token={stack.token(card1)}", artifacts)
    assert "This card is blocked" in element_text(dom, "message"), element_text(dom, "message")
    chromium(f"{base}#card={card1}&token={stack.token(card1)}", artifacts, os.path.join(artifacts, "balance_page_blocked.png"))
    api.call("PUT", f"/v1/clerk/cards/{card1}/status", stack.clerk["alice"], {"status": "active"})
    it.log("  ok  a wrong token and a blocked card are explained on the page")
    assert stack.stop_daemon() == 0


# ---- phase tls --------------------------------------------------------------------------------------------------------

def phase_tls(stack):
    it.log("phase tls")
    cert, key = os.path.join(stack.dir, "cert.pem"), os.path.join(stack.dir, "key.pem")
    it.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    stack.start_daemon(["--http-tls-cert", cert, "--http-tls-key", key])
    card0 = card_number(it.CARDS[0])
    token = stack.token(card0)
    url = f"https://127.0.0.1:{stack.http_port}/v1/cards/{card0}"
    result = it.run(["curl", "-sS", "--cacert", cert, "-H", f"Authorization: Bearer {token}", url])
    body = json.loads(result.stdout)
    assert body["card_number"] == card0 and "purse" in body, body
    untrusted = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, timeout=30)
    assert untrusted.returncode == 60, (untrusted.returncode, untrusted.stderr)  # peer certificate cannot be verified
    plain = raw_exchange(stack.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not plain.startswith("HTTP/1.1 200"), plain
    it.log("  ok  HTTPS with a test certificate (curl --cacert); untrusted certificate and plain HTTP refused")

    # The per-token rate limit (default: a burst of 20, 10 per second).
    context = ssl.create_default_context(cafile=cert)
    conn = http.client.HTTPSConnection("127.0.0.1", stack.http_port, context=context, timeout=10)
    statuses = []
    for _ in range(40):
        conn.request("GET", f"/v1/cards/{card0}", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = json.loads(response.read())
        statuses.append(response.status)
        if response.status == 429:
            assert body["error"]["code"] == "rate_limited" and int(response.getheader("Retry-After")) >= 1
    assert statuses[0] == 200 and statuses.count(429) >= 10, statuses
    card2 = card_number(it.CARDS[2])
    conn.request("GET", f"/v1/cards/{card2}", headers={"Authorization": f"Bearer {stack.token(card2)}"})
    assert conn.getresponse().status == 200  # another token is not limited
    conn.close()
    it.log(f"  ok  rate limit: {statuses.count(200)} answered, {statuses.count(429)} refused 429 with Retry-After; "
           "other tokens unaffected")
    assert stack.stop_daemon() == 0


# ---- phase load --------------------------------------------------------------------------------------------------------

def phase_load(stack, purchases=600):
    it.log("phase load")
    stack.start_daemon(["--http-token-rate", "100000"])
    stack.purchases(0, 0, "load.log", 10, purchases)
    numbers = [card_number(extra_asn(i)) for i in range(EXTRA_CARDS)]
    tokens = {n: stack.token(n) for n in numbers}
    latencies, answered_at, failures = [], [], []
    stop = threading.Event()

    def reader(offset):
        client = Client(stack.http_port, seen=[])
        i = offset
        while not stop.is_set():
            n = numbers[i % EXTRA_CARDS]
            start = time.perf_counter()
            status, body = client.get(f"/v1/cards/{n}", tokens[n])
            latencies.append(time.perf_counter() - start)
            answered_at.append(time.time())
            if status != 200:
                failures.append((status, body))
            i += 7

    def wait_for_answers(count, seconds):
        deadline = time.time() + seconds
        while len(latencies) < count and not failures and time.time() < deadline:
            time.sleep(0.005)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    # The readers are under way before the upload starts (each has had an answer), so that the queries
    # overlap the upload however busy the machine is; afterwards they go on until there are enough
    # latencies for a p99. Counting from the threads' start raced the upload: on a loaded machine a
    # 0.2-s upload could end before the readers had answered 100 queries.
    wait_for_answers(len(threads), 10)
    assert len(latencies) >= len(threads) and not failures, (len(latencies), failures[:3])
    start = time.time()
    out = json.loads(stack.upload("load.log", 0).stdout)
    end = time.time()
    upload_s = end - start
    wait_for_answers(100, 20)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    during = sum(start <= at <= end for at in answered_at)
    assert out["acknowledged"] == purchases and out["remaining"] == 0, out
    assert not failures, failures[:3]
    assert during >= 10 and len(latencies) >= 100, (during, len(latencies))
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)]
    assert ordered[-1] < 2.0 and p99 < 0.25, (p99, ordered[-1])
    it.log(f"  ok  {purchases} uploads in {upload_s:.1f} s while {during} balance queries answered "
           f"({len(latencies)} in all: p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms, none failed)")
    assert stack.stop_daemon() == 0
    stack.check()


# ---- phase lifecycle ------------------------------------------------------------------------------------------------

SSN = "460102198002031234"
LOST_WAIT_S = 4


def persons_file(stack, person):
    """The setup's registry entries of CARDS[1] and CARDS[2] again (a re-load keeps them), with a person."""
    cards = [{"asn": asn, "issuer_id": it.ISSUER_ID, "purse_balance_fen": it.OPENING_FEN, "medical_balance_fen": it.MEDICAL_FEN,
              "person": person} for asn in it.CARDS[1:]]
    path = os.path.join(stack.dir, "persons.json")
    with open(path, "w") as f:
        json.dump({"cards": cards}, f)
    return path


def wait_for(predicate, what, timeout_s=20):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def carried_load(stack, link, card, amount, stan):
    """A 280000 load (transfer in from the carried holding): 0200, CREDIT FOR LOAD with the MAC2, 0220."""
    shell = it.CardShell(stack.vcard, os.path.join(stack.dir, f"card{card}.img"))
    init = shell.initialize_for_load(amount, "460100000001")
    request = it.load_request(it.CARDS[card], amount, stan, init)
    request[3] = "280000"
    _, answer = link.call("0200", request)
    if answer[39] != "00":
        shell.close()
        return answer[39]
    tac = shell.credit_for_load(it.DATE, it.TIME, it.parse_tlv(answer[62])["DF09"])
    shell.close()
    confirmation = it.load_confirmation(it.CARDS[card], amount, stan + 1, init, tac)
    confirmation[3] = "280000"
    _, confirmed = link.call("0220", confirmation)
    assert confirmed[39] == "00", confirmed
    return "00"


def lifecycle_holder(stack, client, artifacts):
    """The holder of card 0 reports it lost with its token, sees only its status, and finds it again."""
    card0 = card_number(it.CARDS[0])
    token0 = stack.token(card0)
    status, body, _ = client.call("POST", f"/v1/cards/{card0}/lost", token0)
    assert status == 200 and body["status"] == "lost" and body["lost"]["state"] == "waiting", body
    assert body["lost"]["reported_by"] == "cardholder", body
    status, body = client.get(f"/v1/cards/{card0}", token0)
    assert status == 200 and body["status"] == "lost" and "purse" not in body, body
    status, body = client.get(f"/v1/cards/{card0}/transactions", token0)
    assert_error(status, body, 403, "card_reported_lost")
    status, body, _ = client.call("POST", f"/v1/cards/{card0}/lost", token0)
    assert_error(status, body, 403, "card_reported_lost")
    status, body, _ = client.call("POST", f"/v1/cards/{card0}/lost", stack.token(card_number(it.CARDS[2])))
    assert_error(status, body, 404)  # another card's token
    link = stack.link("BUS00001")
    link.sign_on("BUS00001", stan=10)
    _, answer = link.call("0800", {11: "000011", 41: "BUS00001", 70: "101", 48: "000000000000"})
    assert answer[39] == "00" and ("+" + it.CARDS[0]) in answer[63], answer
    shell = it.CardShell(stack.vcard, os.path.join(stack.dir, "card0.img"))
    init = shell.initialize_for_load(500, "460100000001")
    shell.close()
    _, answer = link.call("0200", it.load_request(it.CARDS[0], 500, 12, init))
    assert answer[39] == "41", answer
    link.close()
    # The balance page shows the lost card's status and the "found" button, no balance.
    dom = chromium(f"http://127.0.0.1:{stack.http_port}/#card={card0}&token={token0}", artifacts)
    assert f"Card {card0} is lost since" in element_text(dom, "lost-status"), element_text(dom, "lost-status")
    assert 'id="found" hidden' not in dom and 'id="lost" hidden' not in dom and 'id="result" hidden' in dom
    status, body, _ = client.call("DELETE", f"/v1/cards/{card0}/lost", token0)
    assert status == 200 and body["status"] == "active" and "lost" not in body, body
    dom = chromium(f"http://127.0.0.1:{stack.http_port}/#card={card0}&token={token0}", artifacts)
    assert 'id="report-lost"' in dom and 'id="result" hidden' not in dom and 'id="lost" hidden' in dom
    status, body = client.get(f"/v1/cards/{card0}/transactions", token0)
    assert status == 200, body
    status, body, _ = client.call("DELETE", f"/v1/cards/{card0}/lost", token0)
    assert_error(status, body, 409, "conflict")
    it.log("  ok  holder: report lost (hotlist download has it, 0200 answered 41, token answers status only: 403, the page "
           "shows it with its found button), found (the page's report-lost button back)")


def lifecycle_persons(stack, client):
    desk, reader = stack.clerk["desk"], stack.clerk["reader"]
    card0, card1, card2 = (card_number(a) for a in it.CARDS)
    for method, path, body in (("POST", "/v1/clerk/persons", {"ssn": SSN}),
                               ("POST", f"/v1/clerk/cards/{card1}/lost", {"ssn": SSN}),
                               ("DELETE", f"/v1/clerk/cards/{card1}/lost", {"ssn": SSN}),
                               ("POST", f"/v1/clerk/cards/{card1}/replace", {"ssn": SSN, "new_card": card2})):
        status, answer, _ = client.call(method, path, reader, body)
        assert_error(status, answer, 403, "forbidden")
    status, body, _ = client.call("POST", "/v1/clerk/persons", desk, {"ssn": SSN})
    assert status == 200 and body["name"] == "Li Na" and body["birth_date"] == "1980-02-03", body
    assert [c["card_number"] for c in body["cards"]] == [card1, card2], body  # from `admin load`
    for bad in ({"ssn": "12"}, {"ssn": 460102198002031234}, {"ssn": SSN, "name": "Li Na", "birth_date": "1980-02-31x"},
                {"ssn": SSN, "extra": 1}):
        status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, bad)
        assert_error(status, answer, 400, "bad_request")
    status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, {"ssn": "110101199001011111"})
    assert_error(status, answer, 404, "not_found")
    other = {"ssn": "110101199001011111", "name": "Wang Wei", "birth_date": "1990-01-01"}
    status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, {**other, "cards": ["9999999999999999"]})
    assert_error(status, answer, 404, "not_found")
    status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, {**other, "cards": [card1]})
    assert_error(status, answer, 409, "conflict")  # card 1 is Li Na's
    status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, {**other, "cards": [card0]})
    assert status == 200 and answer["name"] == "Wang Wei", answer
    status, answer, _ = client.call("POST", "/v1/clerk/persons", desk, {**other, "name": "Wang Wu"})
    assert_error(status, answer, 409, "conflict")
    # Identity at the counter: a wrong SSN is refused (403, journaled), a malformed one 400, an unknown card 404.
    status, answer, _ = client.call("POST", f"/v1/clerk/cards/{card1}/lost", desk, {"ssn": "110101199001011111"})
    assert_error(status, answer, 403, "forbidden")
    status, answer, _ = client.call("POST", f"/v1/clerk/cards/{card1}/lost", desk, {"ssn": "abc"})
    assert_error(status, answer, 400, "bad_request")
    status, answer, _ = client.call("POST", "/v1/clerk/cards/9999999999999999/lost", desk, {"ssn": SSN})
    assert_error(status, answer, 404, "not_found")
    it.log("  ok  persons: admin load and the counter route (lookup, register, conflicts), SSN checked (400 / 403), roles (403)")


def lifecycle_replacement(stack, client):
    desk = stack.clerk["desk"]
    card1, card2 = card_number(it.CARDS[1]), card_number(it.CARDS[2])
    # Card 1 pays offline twice; the terminal uploads one purchase during the waiting period, one after the carry.
    stack.purchases(1, 0, "lost-before.log", 300, 1)
    stack.purchases(1, 0, "lost-after.log", 200, 1)
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/lost", desk, {"ssn": SSN})
    assert status == 200 and body["status"] == "lost" and body["lost"]["reported_by"] == "clerk", body
    assert json.loads(stack.upload("lost-before.log", 0).stdout)["remaining"] == 0
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/replace", desk, {"ssn": "110101199001011111", "new_card": card2})
    assert_error(status, body, 403, "forbidden")
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/replace", desk, {"ssn": SSN, "new_card": "9999999999999999"})
    assert_error(status, body, 404, "not_found")
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/replace", desk, {"ssn": SSN, "new_card": card1})
    assert_error(status, body, 409, "conflict")
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/replace", desk, {"ssn": SSN, "new_card": card2})
    assert status == 200 and body["status"] == "replaced" and body["lost"]["replaced_by"] == card2, body
    assert body["lost"]["medical_carried_fen"] == it.MEDICAL_FEN, body
    status, body, _ = client.call("POST", f"/v1/clerk/cards/{card1}/replace", desk, {"ssn": SSN, "new_card": card2})
    assert_error(status, body, 409, "conflict")
    status, body, _ = client.call("DELETE", f"/v1/cards/{card1}/lost", stack.token(card1))
    assert_error(status, body, 409, "conflict")  # a replaced card is not "found"
    token2 = stack.token(card2)
    status, body = client.get(f"/v1/cards/{card2}", token2)
    assert status == 200 and body["carried"]["state"] == "pending_transfer", body
    assert body["carried"]["pending_transfer_fen"] == it.OPENING_FEN - 300 and body["medical"]["balance_fen"] == 2 * it.MEDICAL_FEN, body
    status, body = client.get(f"/v1/clerk/cards/{card1}/lifecycle", stack.clerk["reader"])
    assert status == 200 and body["lost"]["state"] == "pending_transfer", body
    carried = wait_for(lambda: (lambda b: b[1] if b[1].get("carried", {}).get("state") == "carried" else None)(
        client.get(f"/v1/cards/{card2}", token2)), "the carry after the waiting period")
    assert carried["carried"]["carried_fen"] == it.OPENING_FEN - 300 and carried["carried"]["collectable_fen"] == it.OPENING_FEN - 300
    # The purchase uploaded after the carry: lost late spending pays the merchant, reported by name.
    assert json.loads(stack.upload("lost-after.log", 0).stdout)["remaining"] == 0
    status, report = client.get("/v1/clerk/reports/lost-late-spending", desk)
    assert status == 200 and report["account"] == "lost_late_spending" and report["debits_posted_fen"] == 200, report
    assert [(c["card_number"], c["late_fen"], c["late_count"]) for c in report["cards"]] == [(card1, 200, 1)], report
    status, body = client.get(f"/v1/clerk/cards/{card1}/lifecycle", desk)
    assert body["lost"]["state"] == "carried" and body["lost"]["late_after_carry"] == {"account": "lost_late_spending", "count": 1,
                                                                                       "fen": 200}, body
    # Collected by the new card with 280000; a second collection finds nothing (51).
    link = stack.link("BUS00001")
    link.sign_on("BUS00001", stan=30)
    assert carried_load(stack, link, 2, it.OPENING_FEN - 300 + 1, 31) == "51"
    assert carried_load(stack, link, 2, it.OPENING_FEN - 300, 33) == "00"
    assert carried_load(stack, link, 2, 1, 35) == "51"
    link.close()
    status, body = client.get(f"/v1/cards/{card2}", token2)
    assert body["purse"]["balance_fen"] == 2 * it.OPENING_FEN - 300 and body["carried"]["collectable_fen"] == 0, body
    status, body = client.get("/v1/clerk/journal?limit=1000", stack.clerk["reader"])
    actions = [(e["clerk"], e["action"], e["outcome"]) for e in body["entries"]]
    for expected in (("cardholder", "report_lost", "ok"), ("desk", "report_lost", "ok"), ("desk", "replace", "ok"),
                     ("desk", "person", "ok")):
        assert expected in actions, (expected, actions)
    assert any(e[0] == "desk" and e[1] == "report_lost" and e[2] == "refused" for e in actions), actions
    it.log("  ok  counter: lost, offline purchases before and after the carry (lost late spending report), "
           "medical moved at once, carried after the wait, collected with 280000 (then 51), journaled")


def phase_lifecycle(stack, artifacts):
    it.log("phase lifecycle")
    os.makedirs(artifacts, exist_ok=True)
    bad = persons_file(stack, {"ssn": SSN, "name": "Li Na"})
    result = it.run([stack.clearingd, "admin", "--data", stack.data, "load", bad], check=False)
    assert result.returncode == 5 and "person" in result.stderr, (result.returncode, result.stderr)
    good = persons_file(stack, {"ssn": SSN, "name": "Li Na", "birth_date": "1980-02-03"})
    it.run([stack.clearingd, "admin", "--data", stack.data, "load", good])
    out = it.run([stack.clearingd, "admin", "--data", stack.data, "clerk-add", "--name", "desk", "--roles", "counter"]).stdout.strip()
    stack.clerk["desk"] = out
    stack.secrets.append(out)
    stack.start_daemon(["--lost-wait-s", str(LOST_WAIT_S)])
    client = Client(stack.http_port)
    lifecycle_holder(stack, client, artifacts)
    lifecycle_persons(stack, client)
    lifecycle_replacement(stack, client)
    assert stack.stop_daemon() == 0
    report = stack.check()
    it.log(f"  ok  check after the lifecycle: {report.get('cards', '?')} cards = shadows, ledger invariants")


def phase_counter(stack):
    """A service counter's day over real HTTP (clearing/README.md "Card return, refund and tourist cards"): the
    whole balance of card 1 taken by the counter terminal's purchase (a real card image, uploaded by
    coconut-terminal), the card returned by bank and refused when returned twice; a tourist card sold; a
    broken card refunded after --lost-wait-s; roles (403); the dormancy report; `check` afterwards."""
    it.log("phase counter")
    stack.start_daemon(["--http-token-rate", "100000", "--http-address-rate", "100000", "--lost-wait-s", "2",
                        "--tourist-return-fee-fen", "500", "--clerk-grant-ttl-s", "2"])
    client = Client(stack.http_port)
    status, body = client.call("POST", "/v1/clerk/clerks", stack.clerk["keeper"], {"name": "desk", "roles": "counter"})[:2]
    assert status == 202, (status, body)  # counter moves money: a second clerk approves
    desk = body["token"]
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{body['grant']}/approve", stack.clerk["keeper2"], {})[:2]
    assert status == 200 and body["status"] == "approved", (status, body)
    status, body = client.call("POST", "/v1/clerk/clerks", stack.clerk["keeper"], {"name": "late", "roles": "counter"})[:2]
    assert status == 202, (status, body)
    late_grant = body["grant"]
    stack.secrets.append(desk)
    # The shop's participant becomes a service counter: SHOP0001 (PSAM 1) is now a counter's terminal.
    status, body = client.call("POST", "/v1/clerk/participants", stack.clerk["alice"],
                               {"id": 2002, "name": "Coconut Service Desk", "kind": "counter", "bank_account": "6222000033334444"})[:2]
    assert status == 201, (status, body)
    n0, n1, n2 = (card_number(a) for a in it.CARDS)

    # Card 1: the terminal reads the balance and takes all of it, then the clerk returns the card by bank.
    balance = stack.card_balance(1)
    assert balance > 0, balance
    stack.purchases(1, 1, "desk.log", balance, 1)
    record = stack.queue_list("desk.log")["transactions"][0]
    out = json.loads(stack.upload("desk.log", 1).stdout)
    assert out["remaining"] == 0 and out["approved"] == 1, out
    assert stack.card_balance(1) == 0
    body_return = {"terminal_id": "SHOP0001", "terminal_serial": record["terminal_serial"], "payout": "bank",
                   "bank_account": "6222000099990001", "account_holder": "Li Lei"}
    status, body = client.call("POST", f"/v1/clerk/cards/{n1}/return", stack.clerk["reader"], body_return)[:2]
    assert_error(status, body, 403, "forbidden")
    status, body = client.call("POST", f"/v1/clerk/cards/{n1}/return", desk, dict(body_return, terminal_serial=999999))[:2]
    assert_error(status, body, 409, "purchase_not_booked")
    status, body = client.call("POST", f"/v1/clerk/cards/{n1}/return", desk, body_return)[:2]
    assert status == 201 and body["refund_by_bank_fen"] == balance and body["status"] == "returned", (status, body)
    status, body = client.call("POST", f"/v1/clerk/cards/{n1}/return", desk, body_return)[:2]
    assert_error(status, body, 409, "already_returned")
    status, card = client.get(f"/v1/cards/{n1}", stack.token(n1))
    assert status == 200 and card["status"] == "returned" and card["purse"]["balance_fen"] == 0, card
    it.log(f"  ok  card {n1}: its {balance} fen taken by SHOP0001's purchase, returned by bank; twice → 409; reader → 403")

    # A tourist card sold by the counter; the dormancy report lists it and the unpaid refund.
    status, body = client.call("POST", "/v1/clerk/tourist-cards", desk, {"card_number": n2, "seller_id": 2002, "deposit_fen": 1000})[:2]
    assert status == 201, (status, body)
    status, body = client.call("POST", "/v1/clerk/tourist-cards", desk, {"card_number": n2, "seller_id": 1001, "deposit_fen": 1000})[:2]
    assert_error(status, body, 409, "already_sold")
    status, report = client.get("/v1/clerk/reports/dormant", stack.clerk["reader"])
    assert status == 200, report
    rows = {r["card_number"]: r for r in report["cards"]}
    assert rows[n2]["what"] == "tourist" and rows[n2]["deposit_fen"] == 1000, rows
    assert rows[n1]["what"] == "refund_unpaid" and rows[n1]["refund_fen"] == balance, rows
    status, body = client.get("/v1/clerk/reports/dormant", stack.clerk["settler"])
    assert_error(status, body, 403, "forbidden")
    it.log("  ok  tourist card sold (deposit 1000), sold twice → 409; the dormancy report lists it and the unpaid refund")

    # Card 0 is broken: hotlisted at once, refunded from its shadow after --lost-wait-s 2.
    account = {"bank_account": "6222000099990000", "account_holder": "Han Meimei"}
    status, body = client.call("POST", f"/v1/clerk/cards/{n0}/refund-broken", desk, account)[:2]
    assert status == 202 and body["state"] == "waiting", (status, body)
    status, card = client.get(f"/v1/cards/{n0}", stack.token(n0))
    shadow = card["purse"]["balance_fen"]
    assert card["status"] == "returned", card
    time.sleep(2.2)
    status, body = client.call("POST", f"/v1/clerk/clerks/grants/{late_grant}/approve", stack.clerk["keeper2"], {})[:2]
    assert_error(status, body, 409, "expired")  # --clerk-grant-ttl-s 2 has passed
    grants = {g["grant"]: g for g in client.get("/v1/clerk/clerks/grants", stack.clerk["keeper2"])[1]["grants"]}
    assert grants[late_grant]["status"] == "expired", grants
    it.log("  ok  a grant not approved within --clerk-grant-ttl-s: 409 expired, listed as expired")
    status, body = client.call("POST", f"/v1/clerk/cards/{n0}/refund-broken", desk, account)[:2]
    assert status == 200 and body["state"] == "refunded" and body["refund_by_bank_fen"] == shadow, (status, body)
    status, card = client.get(f"/v1/cards/{n0}", stack.token(n0))
    assert card["purse"]["balance_fen"] == 0, card
    status, journal = client.get("/v1/clerk/journal?limit=1000", stack.clerk["reader"])
    actions = [(e["clerk"], e["action"]) for e in journal["entries"] if e["clerk"] == "desk"]
    assert ("desk", "card_return") in actions and ("desk", "tourist_sale") in actions and ("desk", "refund_broken") in actions, actions
    it.log(f"  ok  card {n0} broken: 202 waiting, after the wait {shadow} fen refunded by bank; every counter action journaled")
    assert stack.stop_daemon() == 0
    report = stack.check()
    it.log(f"  ok  check after the counter phase (cards = shadows): {report['transfers']} transfers")


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    openapi_path, artifacts = os.path.abspath(sys.argv[5]), os.path.abspath(sys.argv[6])
    phases = sys.argv[7] if len(sys.argv) > 7 else "all"
    workdir = tempfile.mkdtemp(prefix="coconut-clearingd-http-")
    stack = HttpStack(tools, workdir)
    with it.kept_if_failed(stack, workdir):
        stack.setup()
        if phases in ("api", "all"):
            phase_api(stack, openapi_path)
        if phases in ("page", "all"):
            phase_page(stack, artifacts)
        if phases in ("tls", "all"):
            phase_tls(stack)
        if phases in ("load", "all"):
            phase_load(stack)
        if phases in ("lifecycle", "all"):
            phase_lifecycle(stack, artifacts)
        if phases in ("counter", "all"):
            phase_counter(stack)


if __name__ == "__main__":
    main()
