"""coconut-clearingd end to end on loopback, in process on the card side (no pcscd):

  coconut-hsmd (store with the scheme's TAC master) + coconut-clearingd (registry loaded by `admin load`);
  terminals make real card transactions with coconut-terminal --card/--psam images, then
  `coconut-terminal upload --clearing`.

Phase "flows":  a forged TAC (a genuine transaction whose TAC was altered on the way) lands in suspense
                and is answered 59; the terminal's re-upload of a saved queue is booked once; the same id
                with a different amount is refused with 94 and flagged; every card's shadow balance
                equals the card's own balance; `check` passes; a malformed frame gets 30 and the daemon
                keeps serving.
Phase "kill9":  kill -9 of the daemon at random moments while a terminal uploads; after each restart
                every acknowledged transaction is in the ledger; at the end each is booked exactly once
                and `check` passes.

Usage: test_clearingd_it.py HSMD CLEARINGD TERMINAL VCARD [flows|kill9|all] [--transactions N]
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

MASTER_KEYS = {  # the scheme's masters (tests/integration/pcsc_harness.py)
    "dpk": "0123456789ABCDEFFEDCBA9876543210",
    "dlk": "11223344556677888877665544332211",
    "dtk": "2B7E151628AED2A6ABF7158809CF4F3C",
    "iak": "00112233445566778899AABBCCDDEEFF",
    "damk": "FFEEDDCCBBAA99887766554433221100",
}
ISSUER_ID = "4600000000000001"
OPENING_FEN = 50000
CARDS = ["46010000000000000011", "46010000000000000022", "46010000000000000033"]
TERMINALS = [("BUS00001", "460100000001", 1001), ("SHOP0001", "460100000002", 2002)]
WAIT_S = 20  # every wait for a process is bounded


def log(text):
    print(text, flush=True)


def run(argv, check=True, timeout=120, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready_file(path, process, what):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{what} not ready within {WAIT_S} s")


def wait_port(port):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"port {port} not accepting within {WAIT_S} s")


# ---- a minimal ISO 8583 encoder/decoder for the fields of our profile (independent of the C++ codec) ----

FIELDS = {2: ("ll", 19), 3: ("fix", 6), 4: ("fix", 12), 7: ("fix", 10), 11: ("fix", 6), 12: ("fix", 6), 13: ("fix", 4),
          25: ("fix", 2), 32: ("ll", 11), 39: ("fix", 2), 41: ("fix", 8), 42: ("fix", 15), 49: ("fix", 3),
          60: ("lll", 999), 62: ("lll", 999), 70: ("fix", 3)}


def encode(mti, fields):
    secondary = any(f > 64 for f in fields)
    bitmap = bytearray(16 if secondary else 8)
    if secondary:
        bitmap[0] |= 0x80
    body = b""
    for f in sorted(fields):
        bitmap[(f - 1) // 8] |= 0x80 >> ((f - 1) % 8)
        kind, size = FIELDS[f]
        value = fields[f].encode()
        if kind == "ll":
            body += b"%02d" % len(value)
        elif kind == "lll":
            body += b"%03d" % len(value)
        else:
            assert len(value) == size, (f, value)
        body += value
    message = mti.encode() + bytes(bitmap) + body
    return struct.pack(">H", len(message)) + message


def decode(message):
    mti = message[:4].decode()
    secondary = message[4] & 0x80
    bitmap = message[4:20] if secondary else message[4:12]
    at = 4 + len(bitmap)
    fields = {}
    for f in range(2, len(bitmap) * 8 + 1):
        if not bitmap[(f - 1) // 8] & (0x80 >> ((f - 1) % 8)):
            continue
        kind, size = FIELDS[f]
        if kind == "ll":
            size, at = int(message[at:at + 2]), at + 2
        elif kind == "lll":
            size, at = int(message[at:at + 3]), at + 3
        fields[f], at = message[at:at + size].decode(), at + size
    return mti, fields


class Link:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        header = self._exact(2)
        if header is None:
            return None
        body = self._exact(struct.unpack(">H", header)[0])
        return decode(body) if body is not None else None

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def call(self, mti, fields):
        self.send_raw(encode(mti, fields))
        return self.receive()

    def sign_on(self, terminal_id, stan=1):
        mti, fields = self.call("0800", {11: f"{stan:06d}", 41: terminal_id, 70: "001"})
        assert fields[39] == "00", fields

    def close(self):
        self.sock.close()


def card_data(record, amount_fen=None, tac=None):
    """Field 62 (ISO8583.md §3.1) from a `coconut-terminal queue list --json` record."""
    tlv = [("DF01", record["asn"]), ("DF02", record["type"]), ("DF03", f"{record['balance_before_fen']:08X}"),
           ("DF04", f"{record['atc']:04X}"), ("DF05", f"{record['terminal_serial']:08X}"),
           ("DF06", record["terminal_id"]), ("DF07", record["date"] + record["time"]), ("DF08", tac or record["tac"])]
    return "".join(tag + f"{len(value) // 2:02X}" + value for tag, value in tlv).upper()


def upload_fields(record, terminal_id, stan, amount_fen=None, tac=None):
    return {2: record["asn"][4:], 3: "000000", 4: f"{amount_fen or record['amount_fen']:012d}", 11: f"{stan:06d}",
            12: record["time"], 13: record["date"][4:], 25: "08", 41: terminal_id, 60: "000001",
            62: card_data(record, amount_fen, tac)}


# ---- the stack ----------------------------------------------------------------------------------------------

class Stack:
    def __init__(self, tools, workdir):
        self.hsmd, self.clearingd, self.terminal, self.vcard = tools
        self.dir = workdir
        self.store = os.path.join(workdir, "hsm")
        self.data = os.path.join(workdir, "data")
        self.key = os.path.join(workdir, "clearing.key")
        self.hsm_process = None
        self.daemon = None
        self.port = None

    def setup(self):
        run([self.hsmd, "init", "--store", self.store])
        component_1 = os.urandom(16).hex().upper()
        component_2 = f"{int(component_1, 16) ^ int(MASTER_KEYS['dtk'], 16):032X}"
        run([self.hsmd, "key", "import", "--store", self.store, "--label", "mk-tac", "--version", "1", "--usage", "tac"],
            input_text=f"{component_1}\n{component_2}\n")
        run([self.hsmd, "client", "add", "--store", self.store, "--id", "clearing", "--permissions", "tac",
             "--key-out", self.key])
        ready = os.path.join(self.dir, "hsm.port")
        self.hsm_process = subprocess.Popen([self.hsmd, "serve", "--store", self.store, "--listen", "127.0.0.1:0",
                                             "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.hsm_port = wait_ready_file(ready, self.hsm_process, "coconut-hsmd")
        log(f"  coconut-hsmd pid {self.hsm_process.pid} on port {self.hsm_port}")
        for index, asn in enumerate(CARDS):
            self.personalize(f"card{index}", {
                "kind": "card", "asn": asn, "issuer_id": ISSUER_ID, "balance_fen": OPENING_FEN, "max_balance_fen": 1000000,
                "pin": "123456", "seed": f"{index + 1:032X}", "start_date": "20260101", "expiry_date": "20351231",
                "master_keys": MASTER_KEYS, "key_version": 1})
        for index, (_, psam_terminal, _) in enumerate(TERMINALS):
            self.personalize(f"psam{index}", {
                "kind": "psam", "terminal_id": psam_terminal, "purchase_key": MASTER_KEYS["dpk"], "key_level": "master",
                "issuer_id": ISSUER_ID, "key_index": 1, "key_version": 1, "terminal_serial": 1})
        registry = {
            "participants": [{"id": 1001, "name": "Haikou Bus", "kind": "bus", "bank_account": "6222000011112222", "fee_rate_bp": 30},
                             {"id": 2002, "name": "Coconut Shop", "kind": "shop", "bank_account": "6222000033334444"}],
            "terminals": [{"terminal_id": t, "psam_terminal_id": p, "participant_id": pid} for t, p, pid in TERMINALS],
            "cards": [{"asn": asn, "issuer_id": ISSUER_ID, "purse_balance_fen": OPENING_FEN} for asn in CARDS],
        }
        path = os.path.join(self.dir, "registry.json")
        with open(path, "w") as f:
            json.dump(registry, f)
        out = json.loads(run([self.clearingd, "admin", "--data", self.data, "load", path]).stdout)
        assert out["cards"] == len(CARDS), out

    def personalize(self, name, profile):
        path = os.path.join(self.dir, name + ".json")
        with open(path, "w") as f:
            json.dump(profile, f)
        run([self.vcard, "personalize", "--profile", path, "--out", os.path.join(self.dir, name + ".img")])

    def start_daemon(self):
        ready = os.path.join(self.dir, "clearingd.port")
        if os.path.exists(ready):
            os.remove(ready)
        self.daemon = subprocess.Popen([self.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", self.data,
                                        "--hsm", f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.key, "--ready-file", ready],
                                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "clearingd.log"), "a"))
        self.port = wait_ready_file(ready, self.daemon, "coconut-clearingd")
        wait_port(self.port)

    def stop_daemon(self, sig=signal.SIGTERM):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            self.daemon.wait(timeout=WAIT_S)
        code = self.daemon.returncode if self.daemon else None
        self.daemon = None
        return code

    def close(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(timeout=WAIT_S)
        if self.hsm_process and self.hsm_process.poll() is None:
            self.hsm_process.kill()
            self.hsm_process.wait(timeout=WAIT_S)

    def term(self, card, psam, queue):
        return [self.terminal, "--json", "--card", os.path.join(self.dir, f"card{card}.img"),
                "--psam", os.path.join(self.dir, f"psam{psam}.img"), "--queue", os.path.join(self.dir, queue),
                "--hotlist", os.path.join(self.dir, "hotlist.bin")]

    def purchases(self, card, psam, queue, amount, repeat):
        run(self.term(card, psam, queue) + ["purchase", "--amount", str(amount), "--repeat", str(repeat)], timeout=600)

    def queue_list(self, queue):
        return json.loads(run([self.terminal, "--json", "--queue", os.path.join(self.dir, queue), "queue", "list"]).stdout)

    def upload(self, queue, terminal_index, check=True, timeout_ms=10000):
        argv = [self.terminal, "--json", "--queue", os.path.join(self.dir, queue), "upload", "--clearing",
                f"127.0.0.1:{self.port}", "--terminal-id", TERMINALS[terminal_index][0], "--timeout-ms", str(timeout_ms)]
        result = run(argv, check=check, timeout=600)
        return result

    def admin(self, what):
        return json.loads(run([self.clearingd, "admin", "--data", self.data, "list", what]).stdout)

    def check(self):
        result = run([self.clearingd, "check", "--data", self.data, "--json"], check=False)
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["ok"], f"check failed: {result.stdout}{result.stderr}"
        return report

    def card_balance(self, index):
        return json.loads(run([self.vcard, "info", os.path.join(self.dir, f"card{index}.img"), "--json"]).stdout)["balance_fen"]

    def shadows_match_cards(self):
        shadows = {c["asn"]: c for c in self.admin("cards")}
        for index, asn in enumerate(CARDS):
            card = self.card_balance(index)
            shadow = shadows[asn]
            assert shadow["ledger_shadow_balance_fen"] == card == shadow["shadow_balance_fen"], (asn, card, shadow)
        log("  ok  every card's shadow balance equals the card's own balance")


# ---- phases -------------------------------------------------------------------------------------------------

def phase_flows(stack):
    log("phase flows")
    stack.start_daemon()
    stack.purchases(0, 0, "bus.log", 200, 5)
    stack.purchases(1, 0, "bus.log", 150, 3)
    stack.purchases(2, 1, "shop.log", 999, 4)
    bus = stack.queue_list("bus.log")["transactions"]
    assert len(bus) == 8

    # A genuine transaction whose TAC was altered on the way arrives first: suspense, 59, flagged.
    forged = bus[0]
    bad_tac = f"{int(forged['tac'], 16) ^ 1:08X}"
    link = Link(stack.port)
    link.sign_on("BUS00001")
    _, answer = link.call("0320", upload_fields(forged, "BUS00001", 2, tac=bad_tac))
    assert answer[39] == "59", answer
    log("  ok  forged TAC answered 59 (suspense)")

    shutil.copy(os.path.join(stack.dir, "bus.log"), os.path.join(stack.dir, "bus-replay.log"))
    out = json.loads(stack.upload("bus.log", 0).stdout)
    assert out["acknowledged"] == 8 and out["remaining"] == 0, out
    assert out["suspense"] == 1 and out["approved"] == 7, out
    out = json.loads(stack.upload("shop.log", 1).stdout)
    assert out["approved"] == 4 and out["remaining"] == 0, out
    payables = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}
    assert payables == {1001: 200 * 4 + 150 * 3, 2002: 999 * 4}, payables
    log(f"  ok  upload: payables {payables} (the forged one is not paid)")

    # The terminal uploads the same queue again (it lost the acknowledgements): booked once.
    out = json.loads(stack.upload("bus-replay.log", 0).stdout)
    assert out["acknowledged"] == 8 and out["approved"] == 7 and out["suspense"] == 1, out
    payables_again = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}
    assert payables_again == payables, payables_again
    log("  ok  replayed upload acknowledged again and booked once")

    # Same id, different amount: 94, flagged, nothing booked.
    _, answer = link.call("0320", upload_fields(bus[3], "BUS00001", 3, amount_fen=bus[3]["amount_fen"] + 100))
    assert answer[39] == "94", answer
    flags = stack.admin("risk")
    kinds = sorted(f["kind"] for f in flags)
    assert kinds == ["duplicate_different", "tac_invalid"], flags
    log("  ok  same id with a different amount answered 94 and flagged")

    # Malformed frames: 30 where 11/41 are readable, a closed connection otherwise; others keep being served.
    broken = bytearray(encode("0320", upload_fields(bus[3], "BUS00001", 4)))
    broken[2 + 4 + 8 + 18 + 6 + 3] = ord("A")  # a letter in field 4 (n12)
    link.send_raw(bytes(broken))
    _, answer = link.receive()
    assert answer[39] == "30" and answer[11] == "000004", answer
    bad = Link(stack.port)
    bad.send_raw(b"\xff\xff0800")
    assert bad.receive() is None
    bad.close()
    _, answer = link.call("0800", {11: "000005", 41: "BUS00001", 70: "301"})
    assert answer[39] == "00"
    link.close()
    log("  ok  malformed frames: 30 / closed connection; the daemon keeps serving")

    stack.shadows_match_cards()
    assert stack.stop_daemon() == 0
    report = stack.check()
    log(f"  ok  check: {report['transfers']} transfers, {report['journal_entries']} journal entries, "
        f"{report['risk_flags']} risk flags")


def phase_kill9(stack, transactions):
    log(f"phase kill9 ({transactions} transactions)")
    amount = 7
    per_card = transactions // len(CARDS)
    queue = "kill.log"
    payable_before = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}[1001]
    started = time.time()
    for card in range(len(CARDS)):
        stack.purchases(card, 0, queue, amount, per_card)
    total = per_card * len(CARDS)
    log(f"  {total} card transactions queued in {time.time() - started:.1f} s")
    rounds = 0
    kills = 0
    remaining = total
    while remaining > 0:
        rounds += 1
        assert rounds <= 200, "upload did not finish in 200 rounds"
        stack.start_daemon()
        uploader = subprocess.Popen([stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload",
                                     "--clearing", f"127.0.0.1:{stack.port}", "--terminal-id", "BUS00001",
                                     "--timeout-ms", "5000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = False
        if rounds < 100:
            time.sleep(random.uniform(0.005, 0.06))  # an upload of 3,000 takes ~0.3-3 s here
            if uploader.poll() is None:
                stack.daemon.send_signal(signal.SIGKILL)
                stack.daemon.wait(timeout=WAIT_S)
                stack.daemon = None
                killed = True
                kills += 1
        uploader.wait(timeout=120)
        if not killed:
            assert uploader.returncode == 0, uploader.stderr
            assert stack.stop_daemon() == 0
        else:
            stack.stop_daemon()
        remaining = stack.queue_list(queue)["count"]
        payable = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}[1001] - payable_before
        booked = payable // amount
        acknowledged = total - remaining
        # Every acknowledged transaction survived the kill; nothing beyond what was sent is booked.
        assert booked >= acknowledged, f"round {rounds}: {acknowledged} acknowledged but only {booked} booked"
        assert booked <= total, f"round {rounds}: {booked} booked of {total}: something booked twice"
    payable = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}[1001] - payable_before
    assert payable == total * amount, (payable, total * amount)
    assert kills >= 3, f"only {kills} kills landed during an upload: the test did not test much"
    assert len(stack.queue_list(queue)["open_intents"]) == 0
    log(f"  ok  {kills} kill -9 in {rounds} rounds: {total} transactions each booked exactly once, every acknowledged one kept")
    stack.shadows_match_cards()
    report = stack.check()
    log(f"  ok  check after kill -9: {report['transfers']} transfers, {report['journal_entries']} journal entries")


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    phases = sys.argv[5] if len(sys.argv) > 5 else "all"
    transactions = 600
    if "--transactions" in sys.argv:
        transactions = int(sys.argv[sys.argv.index("--transactions") + 1])
    workdir = tempfile.mkdtemp(prefix="coconut-clearingd-it-")
    stack = Stack(tools, workdir)
    ok = False
    try:
        stack.setup()
        if phases in ("flows", "all"):
            phase_flows(stack)
        if phases in ("kill9", "all"):
            phase_kill9(stack, transactions)
        ok = True
    finally:
        stack.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"FAILED; work directory kept: {workdir}")
    log("PASS")


if __name__ == "__main__":
    main()
