"""`coconut counter …` end to end: a service desk's day against coconut-hsmd + coconut-clearingd on loopback.

The stack of tests/clearing/test_clearingd_http.py (real card images, terminals in process, mutual TLS on
the ISO 8583 link, the HTTP API) with a counter's HSM client (the maintenance master, permission
maintenance) for the card block. The desk: registers a person, reports a card lost, replaces it; after the
waiting period (--lost-wait-s) the new card collects the carried balance with `coconut-terminal load
--carried` (280000; a card with nothing carried gets 51 → exit 38, no balance changes); a card returned
(whole balance taken by the counter's PSAM, blocked, uploaded, refund by bank) and returned twice (409 →
exit 23); a tourist card sold; the dormancy and late-spending reports. Refusals with their exit codes: a
clerk without the role counter (403 → 21), a bad SSN (400 → 24), a wrong SSN (403 → 21), a token file
readable by others (7), an unknown card (404 → 22), a malformed card number (2), no HTTP answer (26).
`coconut-clearingd check` afterwards (ledger invariants, cards = shadows).

Usage: test_coconut_counter.py HSMD CLEARINGD TERMINAL VCARD COCONUT
"""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clearing"))
import test_clearingd_http as h  # noqa: E402  (the HTTP stack: hsmd, clearingd, cards, clerks)
import test_clearingd_it as it  # noqa: E402

SSN = "460102198002031234"
LOST_WAIT_S = 3

EXIT = {"usage": 2, "bad_input": 7, "forbidden": 21, "not_found": 22, "conflict": 23, "rejected": 24,
        "unreachable": 26, "carried_short": 38}


class CounterStack(h.HttpStack):
    """The HTTP stack plus, in the HSM store before it serves, the maintenance master and a `counter` client."""

    def __init__(self, tools, workdir, coconut):
        super().__init__(tools, workdir)
        self.coconut = coconut
        self.counter_key = os.path.join(workdir, "counter.key")
        init_ca = self.tls.init_ca

        def init_ca_then_counter():
            damk = int(it.MASTER_KEYS["damk"], 16)
            first = int.from_bytes(os.urandom(16), "big")
            it.run([self.hsmd, "key", "import", "--store", self.store, "--label", "mk-maintenance", "--version", "1",
                    "--usage", "maintenance"], input_text=f"{first:032X}\n{first ^ damk:032X}\n")
            it.run([self.hsmd, "client", "add", "--store", self.store, "--id", "counter", "--permissions", "maintenance",
                    "--key-out", self.counter_key])
            init_ca()

        self.tls.init_ca = init_ca_then_counter

    def token_file(self, name, token, mode=0o600):
        path = os.path.join(self.dir, name + ".token")
        with open(path, "w") as f:
            f.write(token + "\n")
        os.chmod(path, mode)
        return path

    def counter(self, token_file, *args, expect=0, http_port=None):
        argv = [self.coconut, "counter", *args, "--clearing-http", f"127.0.0.1:{http_port or self.http_port}",
                "--token-file", token_file]
        result = it.run(argv, check=False, timeout=180)
        assert result.returncode == expect, f"{' '.join(args)}: exit {result.returncode}, expected {expect}\n{result.stdout}{result.stderr}"
        return result

    def counter_json(self, token_file, *args):
        return json.loads(self.counter(token_file, *args, "--json").stdout)

    def load(self, card, amount, carried, expect=0):
        """coconut-terminal load on BUS00001 (PSAM 0) with card `card`."""
        argv = self.term(card, 0, f"load{card}.queue") + ["load", "--amount-fen", str(amount), "--clearing", f"127.0.0.1:{self.port}",
                                                            "--terminal-id", "BUS00001", *self.tls.terminal_args("BUS00001")]
        if carried:
            argv.append("--carried")
        result = it.run(argv, check=False)
        assert result.returncode == expect, f"load {amount} on card {card}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])


def shadow(stack, asn):
    return {c["asn"]: c for c in stack.admin("cards")}[asn]["ledger_shadow_balance_fen"]


def desk_person(stack, desk, reader):
    n1, n2 = (h.card_number(a) for a in it.CARDS[1:])
    out = stack.counter_json(desk, "person", "--ssn", SSN, "--name", "Li Na", "--birth-date", "1980-02-03", "--card", n1, "--card", n2)
    assert out["name"] == "Li Na" and out["birth_date"] == "1980-02-03", out
    out = stack.counter_json(desk, "person", "--ssn", SSN)
    assert [c["card_number"] for c in out["cards"]] == [n1, n2], out
    text = stack.counter(desk, "person", "--ssn", SSN).stdout
    assert "Li Na, born 1980-02-03" in text and n1 in text and n2 in text, text
    result = stack.counter(desk, "person", "--ssn", "12", expect=EXIT["rejected"])
    assert "HTTP 400 bad_request" in result.stderr, result.stderr
    result = stack.counter(reader, "person", "--ssn", SSN, expect=EXIT["forbidden"])
    assert "HTTP 403 forbidden" in result.stderr, result.stderr
    result = stack.counter(desk, "person", "--ssn", "110101199001011111", expect=EXIT["not_found"])
    assert "HTTP 404" in result.stderr, result.stderr
    loose = stack.token_file("loose", stack.clerk["desk"], 0o644)
    result = stack.counter(loose, "person", "--ssn", SSN, expect=EXIT["bad_input"])
    assert "readable by others" in result.stderr, result.stderr
    stack.counter(desk, "report-lost", "123", "--ssn", SSN, expect=EXIT["usage"])
    stack.counter(desk, "lifecycle", n1, expect=EXIT["unreachable"], http_port=it.free_port())
    it.log("  ok  person registered and looked up; bad SSN → 24 (400), reader → 21 (403), unknown → 22, token 0644 → 7, "
           "bad card number → 2, no HTTP answer → 26")


def desk_lost_and_replace(stack, desk):
    n1, n2 = (h.card_number(a) for a in it.CARDS[1:])
    stack.counter(desk, "report-lost", n1, "--ssn", "110101199001011111", expect=EXIT["forbidden"])
    out = stack.counter_json(desk, "report-lost", n1, "--ssn", SSN)
    assert out["status"] == "lost" and out["lost"]["reported_by"] == "clerk", out
    out = stack.counter_json(desk, "found", n1, "--ssn", SSN)
    assert out["status"] == "active", out
    assert "lost" in stack.counter(desk, "report-lost", n1, "--ssn", SSN).stdout
    out = stack.counter_json(desk, "replace", n1, "--new-card", n2, "--ssn", SSN)
    assert out["status"] == "replaced" and out["lost"]["replaced_by"] == n2, out
    result = stack.counter(desk, "replace", n1, "--new-card", n2, "--ssn", SSN, expect=EXIT["conflict"])
    assert "HTTP 409" in result.stderr, result.stderr
    stack.counter(desk, "found", n1, "--ssn", SSN, expect=EXIT["conflict"])  # a replaced card is not "found"
    it.log("  ok  report-lost (wrong SSN → 21), found, report-lost again, replace (twice → 23), found after replace → 23")


def desk_collect(stack, desk):
    n2 = h.card_number(it.CARDS[2])
    # A card with nothing carried: 280000 answered 51 → exit 38, the card and its shadow unchanged.
    before = stack.card_balance(0), shadow(stack, it.CARDS[0])
    out = stack.load(0, 1000, carried=True, expect=EXIT["carried_short"])
    assert out["error"]["code"] == "carried_short" and out["error"]["response_code"] == "51", out
    assert (stack.card_balance(0), shadow(stack, it.CARDS[0])) == before, before

    def carried():
        body = stack.counter_json(desk, "lifecycle", n2)
        return body if body.get("carried", {}).get("state") == "carried" else None

    body = h.wait_for(carried, "the carry after --lost-wait-s", timeout_s=LOST_WAIT_S + 20)
    amount = body["carried"]["collectable_fen"]
    assert amount == it.OPENING_FEN, body
    out = stack.load(2, amount + 1, carried=True, expect=EXIT["carried_short"])
    out = stack.load(2, amount, carried=True)
    assert out["funding"] == "carried" and out["confirmed"] and out["record"]["carried"], out
    assert stack.card_balance(2) == it.OPENING_FEN + amount == shadow(stack, it.CARDS[2])
    stack.load(2, 1, carried=True, expect=EXIT["carried_short"])
    assert stack.counter_json(desk, "lifecycle", n2)["carried"]["collectable_fen"] == 0
    late = stack.counter_json(desk, "late-spending")
    assert late["account"] == "lost_late_spending" and late["cards"] == [], late
    it.log(f"  ok  280000 on a card with nothing carried → 51, exit 38, nothing changed; {amount} fen carried and collected "
           "with load --carried (above it and after it → 38); late-spending report empty")


def desk_return(stack, desk):
    n0 = h.card_number(it.CARDS[0])
    balance = stack.card_balance(0)
    assert balance > 0
    bank = ["--payout", "bank", "--bank-account", "6222000099990001", "--account-holder", "Han Meimei"]
    args = ["return", n0, "--terminal-id", "SHOP0001", "--card", os.path.join(stack.dir, "card0.img"),
            "--psam", os.path.join(stack.dir, "psam1.img"), "--queue", os.path.join(stack.dir, "desk.queue"),
            "--hotlist", os.path.join(stack.dir, "desk.hotlist"), "--clearing", f"127.0.0.1:{stack.port}",
            *stack.tls.terminal_args("SHOP0001"), "--hsm", f"127.0.0.1:{stack.hsm_port}", "--hsm-key", stack.counter_key, *bank]
    # The wrong card in the reader: nothing taken.
    wrong = [a if a != n0 else h.card_number(it.CARDS[2]) for a in args]
    stack.counter(desk, *wrong, expect=EXIT["bad_input"])
    assert stack.card_balance(0) == balance
    stack.counter(desk, *args[:2], "--terminal-id", "SHOP0001", "--payout", "cash", "--bank-account", "1", expect=EXIT["usage"])
    out = stack.counter_json(desk, *args)
    assert out["status"] == "returned" and out["refund_by_bank_fen"] == balance, out
    assert stack.card_balance(0) == 0 == shadow(stack, it.CARDS[0])
    # Blocked on the card itself: SELECT of the purse answers 6283 (application blocked), the terminal stops there.
    read = it.run(stack.term(0, 1, "after-return.queue") + ["balance"], check=False)
    assert read.returncode == 12 and json.loads(read.stdout)["error"]["sw"] == "6283", (read.returncode, read.stdout, read.stderr)
    serial = stack.queue_list("desk.queue")["transactions"]
    assert serial == [], serial  # the purchase was uploaded and acknowledged
    result = stack.counter(desk, "return", n0, "--terminal-id", "SHOP0001", "--terminal-serial", "1", *bank, expect=EXIT["conflict"])
    assert "already_returned" in result.stderr, result.stderr
    # The whole flow again on the returned card: SELECT answers 6283 at the balance read, nothing is taken (28).
    result = stack.counter(desk, *args, expect=28)
    assert "reading the card" in result.stderr and "6283" in result.stderr, result.stderr
    assert stack.queue_list("desk.queue")["transactions"] == []
    it.log(f"  ok  return: wrong card → 7 (nothing taken), {balance} fen taken by SHOP0001's PSAM, card blocked, uploaded, "
           "refund by bank; returned twice → 23 already_returned, the whole flow again → 28 with nothing taken")
    return balance


def desk_return_empty(stack, desk):
    """Card 2 spent to 0 at the desk's terminal: returned with no purchase (nothing to take), blocked, paid 0."""
    n2 = h.card_number(it.CARDS[2])
    balance = stack.card_balance(2)
    stack.purchases(2, 1, "spend2.queue", balance, 1)
    assert json.loads(stack.upload("spend2.queue", 1).stdout)["remaining"] == 0
    assert stack.card_balance(2) == 0 == shadow(stack, it.CARDS[2])
    args = ["return", n2, "--terminal-id", "SHOP0001", "--card", os.path.join(stack.dir, "card2.img"),
            "--psam", os.path.join(stack.dir, "psam1.img"), "--queue", os.path.join(stack.dir, "desk2.queue"),
            "--hotlist", os.path.join(stack.dir, "desk.hotlist"), "--clearing", f"127.0.0.1:{stack.port}",
            *stack.tls.terminal_args("SHOP0001"), "--hsm", f"127.0.0.1:{stack.hsm_port}", "--hsm-key", stack.counter_key,
            "--payout", "cash"]
    out = stack.counter_json(desk, *args)
    assert out["status"] == "returned" and out["paid_cash_fen"] == 0 and "purchase_id" not in out, out
    read = it.run(stack.term(2, 1, "after-return2.queue") + ["balance"], check=False)
    assert read.returncode == 12 and json.loads(read.stdout)["error"]["sw"] == "6283", (read.returncode, read.stdout)
    it.log(f"  ok  return of an empty card ({balance} fen spent at the desk first): no purchase named, blocked, 0 paid")


def desk_tourist_and_dormant(stack, desk, reader, refund_fen):
    tourist = h.card_number(h.extra_asn(7))
    n0 = h.card_number(it.CARDS[0])
    assert "deposit 2000 fen" in stack.counter(desk, "sell-tourist", tourist, "--seller-id", "2002", "--deposit-fen", "2000").stdout
    result = stack.counter(desk, "sell-tourist", tourist, "--seller-id", "2002", "--deposit-fen", "2000", expect=EXIT["conflict"])
    assert "already_sold" in result.stderr, result.stderr
    stack.counter(reader, "sell-tourist", h.card_number(h.extra_asn(8)), "--seller-id", "2002", "--deposit-fen", "100",
                  expect=EXIT["forbidden"])
    rows = {r["card_number"]: r for r in stack.counter_json(desk, "dormant")["cards"]}
    assert rows[tourist]["what"] == "tourist" and rows[tourist]["deposit_fen"] == 2000, rows
    assert rows[n0]["what"] == "refund_unpaid" and rows[n0]["refund_fen"] == refund_fen, rows
    table = stack.counter(desk, "dormant").stdout
    assert tourist in table and n0 in table and "card(s)" in table, table
    it.log("  ok  tourist card sold (twice → 23, reader → 21); dormant report (table and --json) lists it and the unpaid refund")

    # A broken card: registered now (202 → exit 29, hotlisted), refunded by bank by the same command after the wait.
    broken = h.card_number(h.extra_asn(9))
    account = ["--bank-account", "6222000099990009", "--account-holder", "Wang Wei"]
    out = json.loads(stack.counter(desk, "refund-broken", broken, *account, "--json", expect=29).stdout)
    assert out["state"] == "waiting", out
    time.sleep(LOST_WAIT_S + 0.5)
    text = stack.counter(desk, "refund-broken", broken, *account).stdout
    assert f"card {broken} refunded: {h.PURSE_BASE_FEN + 9} fen by bank" in text, text
    it.log("  ok  refund-broken: waiting (exit 29), then refunded by bank after --lost-wait-s")


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-counter-")
    stack = CounterStack(tools, workdir, os.path.abspath(sys.argv[5]))
    with it.kept_if_failed(stack, workdir):
        stack.setup()
        out = it.run([stack.clearingd, "admin", "--data", stack.data, "clerk-add", "--name", "desk", "--roles", "counter"]).stdout.strip()
        stack.clerk["desk"] = out
        desk = stack.token_file("desk", out)
        reader = stack.token_file("reader", stack.clerk["reader"])
        stack.start_daemon(["--lost-wait-s", str(LOST_WAIT_S), "--http-token-rate", "100000", "--http-address-rate", "100000"])
        client = h.Client(stack.http_port)
        status, body, _ = client.call("POST", "/v1/clerk/participants", stack.clerk["alice"],
                                      {"id": 2002, "name": "Coconut Service Desk", "kind": "counter", "bank_account": "6222000033334444"})
        assert status == 201, (status, body)
        desk_person(stack, desk, reader)
        desk_lost_and_replace(stack, desk)
        desk_collect(stack, desk)
        refund = desk_return(stack, desk)
        desk_return_empty(stack, desk)
        desk_tourist_and_dormant(stack, desk, reader, refund)
        assert stack.stop_daemon() == 0
        report = stack.check()
        it.log(f"  ok  coconut-clearingd check after the desk's day: {report.get('transfers', '?')} transfers, cards = shadows")


if __name__ == "__main__":
    main()
