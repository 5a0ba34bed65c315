"""coconut-clearingd end to end on loopback, in process on the card side (no pcscd):

  coconut-hsmd (store with the scheme's TAC master) + coconut-clearingd (registry loaded by `admin load`);
  terminals make real card transactions with coconut-terminal --card/--psam images, then
  `coconut-terminal upload --clearing`.

Phase "flows":  a forged TAC (a genuine transaction whose TAC was altered on the way) lands in suspense
                and is answered 59; the terminal's re-upload of a saved queue is booked once; the same id
                with a different amount is refused with 94 and flagged; every card's shadow balance
                equals the card's own balance; `check` passes; a malformed frame gets 30 and the daemon
                keeps serving.
Phase "online": a real card image driven through `coconut-vcard shell` (INITIALIZE FOR LOAD, CREDIT FOR
                LOAD, INTERNAL AUTHENTICATE) against the daemon's online messages (ISO8583.md §4): a load
                approved with the HSM's MAC2 and confirmed with the card's TAC; a repeat answered with the
                same MAC2; a forged MAC1 refused 59; a load reversed; a load that expires (--load-timeout-s 1)
                yet is credited and confirmed late; a clinic authorization partially approved (10) and
                completed, another reversed; a lost card in the downloaded hotlist and refused online (41);
                0500 balanced; afterwards shadow = card balance and `check` passes.
Phase "kill9":  kill -9 of the daemon at random moments while a terminal uploads; after each restart
                every acknowledged transaction is in the ledger; at the end each is booked exactly once
                and `check` passes.

Terminals reach the daemon over mutual TLS (tests/tls_island.py: the island CA in coconut-hsmd, a certificate
per terminal); phase "flows" also checks that the daemon refuses to start without TLS or --insecure-terminals,
closes a plain-TCP peer on its TLS port and serves plain TCP only with --insecure-terminals.

Usage: test_clearingd_it.py HSMD CLEARINGD TERMINAL VCARD [flows|kill9|online|all] [--transactions N]
"""

import contextlib
import hashlib
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tls_island  # noqa: E402  (the island CA in coconut-hsmd; certificates for the daemon and the terminals)

MASTER_KEYS = {  # the scheme's masters (tests/integration/pcsc_harness.py)
    "dpk": "0123456789ABCDEFFEDCBA9876543210",
    "dlk": "11223344556677888877665544332211",
    "dtk": "2B7E151628AED2A6ABF7158809CF4F3C",
    "iak": "00112233445566778899AABBCCDDEEFF",
    "damk": "FFEEDDCCBBAA99887766554433221100",
    "ssse_iak": "8899AABBCCDDEEFF0011223344556677",
}
ISSUER_ID = "4600000000000001"
OPENING_FEN = 50000
MEDICAL_FEN = 20000
CARDS = ["46010000000000000011", "46010000000000000022", "46010000000000000033"]
TERMINALS = [("BUS00001", "460100000001", 1001), ("SHOP0001", "460100000002", 2002)]
TLS_TERMINALS = ["BUS00001", "SHOP0001", "CLINIC01"]  # a certificate each (CLINIC01 is registered in phase online)
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


def freeze(process):
    """SIGSTOP, returning only once every thread of the process is stopped: kill() returns before the threads
    have taken the signal, and a request sent meanwhile could still be answered."""
    def thread_states():
        tasks = f"/proc/{process.pid}/task"
        states = []
        try:
            for task in os.listdir(tasks):
                with open(f"{tasks}/{task}/stat") as stat:
                    text = stat.read()
                states.append(text[text.rfind(")") + 2])
        except FileNotFoundError:  # a thread (or the process) went meanwhile: look again
            return []
        return states

    process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + WAIT_S
    while True:
        states = thread_states()
        if states and all(state == "T" for state in states):
            return
        assert time.monotonic() < deadline and process.poll() is None, f"pid {process.pid} did not stop on SIGSTOP"
        time.sleep(0.001)


# ---- a minimal ISO 8583 encoder/decoder for the fields of our profile (independent of the C++ codec) ----

FIELDS = {2: ("ll", 19), 3: ("fix", 6), 4: ("fix", 12), 7: ("fix", 10), 11: ("fix", 6), 12: ("fix", 6), 13: ("fix", 4),
          25: ("fix", 2), 32: ("ll", 11), 39: ("fix", 2), 41: ("fix", 8), 42: ("fix", 15), 49: ("fix", 3),
          48: ("lll", 999), 60: ("lll", 999), 62: ("lll", 999), 63: ("lll", 999), 70: ("fix", 3),
          74: ("fix", 10), 75: ("fix", 10), 76: ("fix", 10), 77: ("fix", 10), 86: ("fix", 16), 87: ("fix", 16),
          88: ("fix", 16), 89: ("fix", 16), 90: ("fix", 42), 97: ("fix", 17)}


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
    def __init__(self, port, tls=None, terminal_id=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = tls.wrap(sock, terminal_id) if tls else sock

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
        self.hsm_list = None  # --hsm for the daemon when not just this coconut-hsmd (HOST:PORT,HOST:PORT)
        self.daemon = None
        self.port = None
        self.tls = tls_island.IslandTls(self.hsmd, self.store, workdir)

    def setup(self):
        run([self.hsmd, "init", "--store", self.store])
        component_1 = os.urandom(16).hex().upper()
        component_2 = f"{int(component_1, 16) ^ int(MASTER_KEYS['dtk'], 16):032X}"
        run([self.hsmd, "key", "import", "--store", self.store, "--label", "mk-tac", "--version", "1", "--usage", "tac"],
            input_text=f"{component_1}\n{component_2}\n")
        for label, usage, master in (("mk-load", "load", "dlk"), ("mk-internal-auth", "internal-auth", "iak"),
                                     ("mk-ssse-auth", "ssse-auth", "ssse_iak")):
            component_1 = os.urandom(16).hex().upper()
            component_2 = f"{int(component_1, 16) ^ int(MASTER_KEYS[master], 16):032X}"
            run([self.hsmd, "key", "import", "--store", self.store, "--label", label, "--version", "1", "--usage", usage],
                input_text=f"{component_1}\n{component_2}\n")
        run([self.hsmd, "client", "add", "--store", self.store, "--id", "clearing", "--permissions", "tac,load,auth",
             "--key-out", self.key])
        self.tls.init_ca()
        ready = os.path.join(self.dir, "hsm.port")
        self.hsm_process = subprocess.Popen([self.hsmd, "serve", "--store", self.store, "--listen", "127.0.0.1:0",
                                             "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.hsm_port = wait_ready_file(ready, self.hsm_process, "coconut-hsmd")
        log(f"  coconut-hsmd pid {self.hsm_process.pid} on port {self.hsm_port}")
        self.tls.issue_server(self.hsm_port)
        for terminal_id in TLS_TERMINALS:
            self.tls.issue_terminal(self.hsm_port, terminal_id)
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
            "cards": [{"asn": asn, "issuer_id": ISSUER_ID, "purse_balance_fen": OPENING_FEN, "medical_balance_fen": MEDICAL_FEN}
                      for asn in CARDS],
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

    def start_daemon(self, extra=()):
        ready = os.path.join(self.dir, "clearingd.port")
        if os.path.exists(ready):
            os.remove(ready)
        self.daemon = subprocess.Popen([self.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", self.data,
                                        "--hsm", self.hsm_list or f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.key,
                                        "--ready-file", ready,
                                        *([] if "--insecure-terminals" in extra else self.tls.server_args()), *extra],
                                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "clearingd.log"), "a"))
        self.port = wait_ready_file(ready, self.daemon, "coconut-clearingd")
        wait_port(self.port)

    def link(self, terminal_id="BUS00001"):
        """An ISO 8583 connection over TLS with `terminal_id`'s certificate."""
        return Link(self.port, self.tls, terminal_id)

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
        run(self.term(card, psam, queue) + ["purchase", "--amount-fen", str(amount), "--repeat", str(repeat)], timeout=600)

    def queue_list(self, queue):
        return json.loads(run([self.terminal, "--json", "--queue", os.path.join(self.dir, queue), "queue", "list"]).stdout)

    def upload(self, queue, terminal_index, check=True, timeout_ms=10000):
        argv = [self.terminal, "--json", "--queue", os.path.join(self.dir, queue), "upload", "--clearing",
                f"127.0.0.1:{self.port}", "--terminal-id", TERMINALS[terminal_index][0], "--timeout-ms", str(timeout_ms),
                *self.tls.terminal_args(TERMINALS[terminal_index][0])]
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

def thread_cpus(pid):
    """{thread name: [Cpus_allowed_list, ...]} of a running process, from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            cpus = next(line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list:"))
        out.setdefault(name, []).append(cpus)
    return out


def cpu_list(cpus):
    """[0, 2, 3] -> "0,2-3" (the kernel's Cpus_allowed_list spelling)."""
    parts, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


def check_writer_cpu(stack):
    """serve --writer-cpu: a bad value is refused before anything starts; the default (auto) puts the ledger
    writer alone on the highest allowed CPU and every other daemon thread on the rest."""
    allowed = sorted(os.sched_getaffinity(0))
    bad = run([stack.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", stack.data, "--hsm", f"127.0.0.1:{stack.hsm_port}",
               "--hsm-key", stack.key, "--writer-cpu", "4000", *stack.tls.server_args()], check=False)
    assert bad.returncode == 2, (bad.returncode, bad.stderr)
    assert f"--writer-cpu: CPU 4000 is not one this process may use ({cpu_list(allowed)})" in bad.stderr, bad.stderr
    stack.start_daemon()
    threads = thread_cpus(stack.daemon.pid)
    assert threads.get("ledger-writer") is not None, threads
    if len(allowed) >= 2:
        others = cpu_list(allowed[:-1])
        assert threads["ledger-writer"] == [str(allowed[-1])], threads
        for name, cpus in threads.items():
            if name != "ledger-writer":
                assert all(c == others for c in cpus), threads
        log(f"  ok  default --writer-cpu auto: ledger writer alone on CPU {allowed[-1]}, {sum(map(len, threads.values())) - 1} other threads on {others}")
    else:
        assert all(c == cpu_list(allowed) for cpus in threads.values() for c in cpus), threads
        log("  ok  --writer-cpu auto on one CPU: no layout")
    log("  ok  --writer-cpu 4000 refused with exit 2, naming the allowed CPUs")


def check_terminal_transport(stack):
    """Mutual TLS or, explicitly, plain TCP: nothing in between."""
    base = [stack.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", stack.data, "--hsm", f"127.0.0.1:{stack.hsm_port}",
            "--hsm-key", stack.key]
    neither = run(base, check=False)
    assert neither.returncode == 2 and "--insecure-terminals" in neither.stderr, (neither.returncode, neither.stderr)
    both = run(base + stack.tls.server_args() + ["--insecure-terminals"], check=False)
    assert both.returncode == 2 and "exclude each other" in both.stderr, (both.returncode, both.stderr)
    log("  ok  serve without --tls-* nor --insecure-terminals (or with both) refused with exit 2")
    stack.start_daemon()
    plain = Link(stack.port)  # ISO 8583 where a ClientHello belongs: the handshake fails, the connection closes
    plain.send_raw(encode("0800", {11: "000001", 41: "BUS00001", 70: "001"}))
    assert plain.receive() is None
    plain.close()
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")
    assert link.sock.version() in ("TLSv1.3", "TLSv1.2"), link.sock.version()
    link.close()
    assert stack.stop_daemon() == 0
    stack.start_daemon(["--insecure-terminals"])
    plain = Link(stack.port)
    plain.sign_on("BUS00001")
    plain.close()
    assert stack.stop_daemon() == 0
    log("  ok  a plain-TCP peer on the TLS port is closed, a terminal certificate signs on; --insecure-terminals serves plain TCP")


def phase_flows(stack):
    log("phase flows")
    check_terminal_transport(stack)
    check_writer_cpu(stack)
    stack.purchases(0, 0, "bus.log", 200, 5)
    stack.purchases(1, 0, "bus.log", 150, 3)
    stack.purchases(2, 1, "shop.log", 999, 4)
    bus = stack.queue_list("bus.log")["transactions"]
    assert len(bus) == 8

    # A genuine transaction whose TAC was altered on the way arrives first: recorded for review under an id
    # of its own, 59, flagged; the genuine upload of it is booked normally afterwards (ISO8583.md §4.8).
    forged = bus[0]
    bad_tac = f"{int(forged['tac'], 16) ^ 1:08X}"
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")
    _, answer = link.call("0320", upload_fields(forged, "BUS00001", 2, tac=bad_tac))
    assert answer[39] == "59", answer
    log("  ok  forged TAC answered 59 (review)")

    shutil.copy(os.path.join(stack.dir, "bus.log"), os.path.join(stack.dir, "bus-replay.log"))
    out = json.loads(stack.upload("bus.log", 0).stdout)
    assert out["acknowledged"] == 8 and out["remaining"] == 0, out
    assert out["suspense"] == 0 and out["approved"] == 8, out
    out = json.loads(stack.upload("shop.log", 1).stdout)
    assert out["approved"] == 4 and out["remaining"] == 0, out
    payables = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}
    assert payables == {1001: 200 * 5 + 150 * 3, 2002: 999 * 4}, payables
    log(f"  ok  upload: payables {payables} (the forgery took nothing, the genuine record was booked)")

    # The terminal uploads the same queue again (it lost the acknowledgements): booked once.
    out = json.loads(stack.upload("bus-replay.log", 0).stdout)
    assert out["acknowledged"] == 8 and out["approved"] == 8 and out["suspense"] == 0, out
    payables_again = {p["id"]: p.get("purse_payable_fen", 0) for p in stack.admin("participants")}
    assert payables_again == payables, payables_again
    log("  ok  replayed upload acknowledged again and booked once")

    # Same id, different amount under the genuine TAC: the TAC does not cover it — a forgery colliding
    # with a booked record: 94, flagged, nothing booked.
    _, answer = link.call("0320", upload_fields(bus[3], "BUS00001", 3, amount_fen=bus[3]["amount_fen"] + 100))
    assert answer[39] == "94", answer
    flags = stack.admin("risk")
    kinds = sorted(f["kind"] for f in flags)
    assert kinds == ["tac_invalid", "tac_invalid"], flags
    log("  ok  same id with a different amount answered 94 and flagged")

    # Malformed frames: 30 where 11/41 are readable, a closed connection otherwise; others keep being served.
    broken = bytearray(encode("0320", upload_fields(bus[3], "BUS00001", 4)))
    broken[2 + 4 + 8 + 18 + 6 + 3] = ord("A")  # a letter in field 4 (n12)
    link.send_raw(bytes(broken))
    _, answer = link.receive()
    assert answer[39] == "30" and answer[11] == "000004", answer
    bad = stack.link("BUS00001")
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

    # The operator suspends a terminal offline; a status that does not exist is a usage error.
    run([stack.clearingd, "admin", "--data", stack.data, "terminal-status", "SHOP0001", "suspended"])
    statuses = {t["terminal_id"]: t["status"] for t in stack.admin("terminals")}
    assert statuses == {"BUS00001": "active", "SHOP0001": "suspended"}, statuses
    bad = run([stack.clearingd, "admin", "--data", stack.data, "terminal-status", "SHOP0001", "paused"], check=False)
    assert bad.returncode == 2 and "active, suspended or retired" in bad.stderr, (bad.returncode, bad.stderr)
    unknown = run([stack.clearingd, "admin", "--data", stack.data, "terminal-status", "NOBODY00", "retired"], check=False)
    assert unknown.returncode != 0 and "not registered" in unknown.stderr, (unknown.returncode, unknown.stderr)
    run([stack.clearingd, "admin", "--data", stack.data, "terminal-status", "SHOP0001", "active"])
    log("  ok  admin terminal-status: suspended and listed, a bad status exit 2, an unknown terminal named")

    # A ledger that outgrows its map: the write fails whole, the error names --map-size; a larger map works.
    small = os.path.join(stack.dir, "small-map")
    registry = os.path.join(stack.dir, "many-cards.json")
    with open(registry, "w") as f:
        json.dump({"cards": [{"asn": f"4601{i:016d}", "issuer_id": ISSUER_ID, "purse_balance_fen": 100} for i in range(3000)]}, f)
    full = run([stack.clearingd, "admin", "--data", small, "--map-size", "1MiB", "load", registry], check=False)
    assert full.returncode == 4 and "map full" in full.stderr and "--map-size" in full.stderr, (full.returncode, full.stderr)
    bad = run([stack.clearingd, "admin", "--data", small, "--map-size", "12XB", "list", "cards"], check=False)
    assert bad.returncode == 2 and "KiB, MiB, GiB or TiB" in bad.stderr, (bad.returncode, bad.stderr)
    run([stack.clearingd, "admin", "--data", small, "--map-size", "64MiB", "load", registry])
    assert len(json.loads(run([stack.clearingd, "admin", "--data", small, "--map-size", "64MiB", "list", "cards"]).stdout)) == 3000
    log("  ok  --map-size: a 1 MiB map fills (exit 4, the error names --map-size), 64 MiB holds 3,000 cards, 12XB exit 2")


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
        stack.start_daemon([] if rounds % 2 else ["--writer-cpu", "off"])  # with and without the writer's own CPU
        uploader = subprocess.Popen([stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload",
                                     "--clearing", f"127.0.0.1:{stack.port}", "--terminal-id", "BUS00001",
                                     "--timeout-ms", "5000", *stack.tls.terminal_args("BUS00001")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


# ---- online flows with a real card image ---------------------------------------------------------------------

PURSE_AID = "A000000632010105"
SSSE_AID = "7378312E73682EC9E7BBE1B1A3D5CF"  # the social-security application (docs/CARD-SPEC.md §1)
CARD_PIN = "123456"
CLINIC = {"participants": [{"id": 3003, "name": "Haikou Clinic", "kind": "clinic", "bank_account": "6222000055556666"}],
          "terminals": [{"terminal_id": "CLINIC01", "psam_terminal_id": "460100000003", "participant_id": 3003}]}


class CardShell:
    """`coconut-vcard shell IMAGE`: one APDU per line; the purse application selected."""

    def __init__(self, vcard, image):
        self.process = subprocess.Popen([vcard, "shell", image], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        data, sw = self.apdu("00A40400" + f"{len(PURSE_AID) // 2:02X}" + PURSE_AID)
        assert sw == "9000", sw

    def apdu(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline().strip()
        assert line and not line.startswith("ERROR"), (command, line)
        return line[:-4].strip(), line[-4:]

    def initialize_for_load(self, amount, terminal):
        data, sw = self.apdu(f"805000020B01{amount:08X}{terminal}10")
        assert sw == "9000", sw
        return {"old_balance": int(data[0:8], 16), "atc": int(data[8:12], 16), "key_version": data[12:14],
                "random": data[16:24], "mac1": data[24:32]}

    def credit_for_load(self, date, time_text, mac2):
        data, sw = self.apdu(f"805200000B{date}{time_text}{mac2}04")
        assert sw == "9000", (sw, "CREDIT FOR LOAD refused")
        return data

    def internal_authenticate(self, challenge_hex):
        data, sw = self.apdu(f"0088000108{challenge_hex}")
        assert sw == "9000", sw
        return data

    def select_ssse_with_pin(self, pin):
        """SELECT the social-security application and VERIFY the holder's PIN: its INTERNAL AUTHENTICATE
        then answers under the SSSE key (the proof a clinic hold needs)."""
        _, sw = self.apdu("00A40400" + f"{len(SSSE_AID) // 2:02X}" + SSSE_AID)
        assert sw == "9000", sw
        _, sw = self.apdu(f"00200000{len(pin) // 2:02X}{pin}")
        assert sw == "9000", sw

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=WAIT_S)


def tlv(items):
    return "".join(tag + f"{len(value) // 2:02X}" + value for tag, value in items).upper()


def parse_tlv(text):
    out, at = {}, 0
    while at < len(text):
        tag, size = text[at:at + 4], int(text[at + 4:at + 6], 16) * 2
        out[tag] = text[at + 6:at + 6 + size]
        at += 6 + size
    return out


DATE, TIME = "20261126", "103000"


def online_fields(asn, processing, amount, stan, terminal_id, batch="000001"):
    return {2: asn[4:], 3: processing, 4: f"{amount:012d}", 7: "1126023000", 11: f"{stan:06d}", 41: terminal_id, 60: batch}


def load_request(asn, amount, stan, init, terminal="460100000001", mac1=None):
    fields = online_fields(asn, "210000", amount, stan, "BUS00001")
    fields[62] = tlv([("DF01", asn), ("DF02", "02"), ("DF03", f"{init['old_balance']:08X}"), ("DF04", f"{init['atc']:04X}"),
                      ("DF06", terminal), ("DF07", DATE + TIME), ("DF09", mac1 or init["mac1"]), ("DF0A", init["random"]),
                      ("DF0D", init["key_version"])])
    return fields


def load_confirmation(asn, amount, stan, init, tac, terminal="460100000001"):
    fields = online_fields(asn, "210000", amount, stan, "BUS00001")
    fields[62] = tlv([("DF01", asn), ("DF02", "02"), ("DF03", f"{init['old_balance']:08X}"), ("DF04", f"{init['atc']:04X}"),
                      ("DF06", terminal), ("DF07", DATE + TIME), ("DF08", tac)])
    return fields


def original(mti, stan):
    return mti + f"{stan:06d}" + "1126023000" + "0" * 22


def online_load(stack, link, card, amount, stan):
    """INITIALIZE FOR LOAD, 0200, CREDIT FOR LOAD, 0220; returns the card's new balance."""
    shell = CardShell(stack.vcard, os.path.join(stack.dir, f"card{card}.img"))
    init = shell.initialize_for_load(amount, "460100000001")
    _, answer = link.call("0200", load_request(CARDS[card], amount, stan, init))
    assert answer[39] == "00", answer
    mac2 = parse_tlv(answer[62])["DF09"]
    _, repeat = link.call("0200", load_request(CARDS[card], amount, stan, init))
    assert repeat[39] == "00" and repeat[62] == answer[62], repeat
    tac = shell.credit_for_load(DATE, TIME, mac2)
    shell.close()
    _, confirmed = link.call("0220", load_confirmation(CARDS[card], amount, stan + 1, init, tac))
    assert confirmed[39] == "00", confirmed
    return init


def request_challenge(link, card, stan):
    """0800 70 = 201: the host's single-use card-presence challenge (DF0E) for this card at this terminal."""
    _, answer = link.call("0800", {2: CARDS[card][4:], 11: f"{stan:06d}", 41: "CLINIC01", 70: "201",
                                   62: tlv([("DF01", CARDS[card])])})
    assert answer[39] == "00", answer
    return parse_tlv(answer[62])["DF0E"]


def clinic_authorization(stack, link, card, amount, stan):
    """A 0100 whose DF0B is the SSSE application's INTERNAL AUTHENTICATE (after VERIFY PIN) over
    SHA-256("coconut-clinic-v2" ‖ DF0E ‖ 41 ‖ 11 ‖ 7 ‖ 4 ‖ 60 ‖ ASN)[0..8] (ISO8583.md §4.4)."""
    challenge = request_challenge(link, card, stan + 500)
    fields = online_fields(CARDS[card], "003000", amount, stan, "CLINIC01")
    material = (b"coconut-clinic-v2" + bytes.fromhex(challenge) +
                (fields[41] + fields[11] + fields[7] + fields[4] + fields[60]).encode() + bytes.fromhex(CARDS[card]))
    proof_input = hashlib.sha256(material).hexdigest()[:16].upper()
    shell = CardShell(stack.vcard, os.path.join(stack.dir, f"card{card}.img"))
    shell.select_ssse_with_pin(CARD_PIN)
    cryptogram = shell.internal_authenticate(proof_input)
    shell.close()
    return {**fields, 62: tlv([("DF01", CARDS[card]), ("DF0B", cryptogram), ("DF0E", challenge)])}


def phase_online(stack):
    log("phase online")
    path = os.path.join(stack.dir, "clinic.json")
    with open(path, "w") as f:
        json.dump(CLINIC, f)
    run([stack.clearingd, "admin", "--data", stack.data, "load", path])
    stack.start_daemon()
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")

    online_load(stack, link, 0, 3000, 10)
    assert stack.card_balance(0) == OPENING_FEN + 3000
    log("  ok  0200 → MAC2 (a repeat: the same MAC2) → CREDIT FOR LOAD → 0220 with the card's TAC: 00")

    shell = CardShell(stack.vcard, os.path.join(stack.dir, "card1.img"))
    init = shell.initialize_for_load(1000, "460100000001")
    forged = f"{int(init['mac1'], 16) ^ 0x80:08X}"
    _, answer = link.call("0200", load_request(CARDS[1], 1000, 20, init, mac1=forged))
    assert answer[39] == "59" and 62 not in answer, answer
    _, answer = link.call("0420", {**online_fields(CARDS[1], "210000", 1000, 21, "BUS00001"),
                                   62: tlv([("DF01", CARDS[1]), ("DF04", f"{init['atc']:04X}")]), 90: original("0200", 20)})
    assert answer[39] == "00", answer  # the advice of an unknown original: acknowledged, nothing booked
    init = shell.initialize_for_load(1000, "460100000001")
    _, answer = link.call("0200", load_request(CARDS[1], 1000, 22, init))
    assert answer[39] == "00", answer
    _, answer = link.call("0400", {**online_fields(CARDS[1], "210000", 1000, 23, "BUS00001"),
                                   62: tlv([("DF01", CARDS[1]), ("DF04", f"{init['atc']:04X}")]), 90: original("0200", 22)})
    assert answer[39] == "00", answer
    shell.close()
    assert stack.card_balance(1) == OPENING_FEN
    log("  ok  forged MAC1 → 59 (nothing booked); 0420 of an unknown load → 00; a load reversed by 0400 → 00")

    # Clinic: 25,000 asked, 20,000 on the medical account → partial approval; completed with 15,000. The
    # clinic's own connection: a TLS connection speaks for the terminal of its certificate only.
    bus_link, link = link, stack.link("CLINIC01")
    link.sign_on("CLINIC01", stan=30)
    _, answer = link.call("0100", clinic_authorization(stack, link, 1, 25000, 31))
    assert answer[39] == "10" and answer[4] == f"{MEDICAL_FEN:012d}", answer
    _, answer = link.call("0220", {**online_fields(CARDS[1], "003000", 15000, 32, "CLINIC01"), 90: original("0100", 31)})
    assert answer[39] == "00", answer
    _, answer = link.call("0220", {**online_fields(CARDS[1], "003000", 12000, 33, "CLINIC01"), 90: original("0100", 31)})
    assert answer[39] == "94", answer  # the same completion with another amount
    _, answer = link.call("0100", clinic_authorization(stack, link, 2, 3000, 34))
    assert answer[39] == "00", answer
    _, answer = link.call("0400", {**online_fields(CARDS[2], "003000", 3000, 35, "CLINIC01"), 90: original("0100", 34)})
    assert answer[39] == "00", answer
    medical = {c["asn"]: c["medical_balance_fen"] for c in stack.admin("cards")}
    assert medical == {CARDS[0]: MEDICAL_FEN, CARDS[1]: MEDICAL_FEN - 15000, CARDS[2]: MEDICAL_FEN}, medical
    log("  ok  0100 with INTERNAL AUTHENTICATE: partial approval 10, completion 00, repeat with another amount 94, 0400 voids a hold")
    link.close()
    link = bus_link

    # 0500: the bus terminal's batch: one load confirmed; two reversals answered 00 — the 0420 of the
    # unknown load counts too, with its field 4 (ISO8583.md §4.7), as the terminal counts it.
    totals = {74: 1, 75: 2, 76: 0, 77: 0, 86: 3000, 87: 2000, 88: 0, 89: 0}
    _, answer = link.call("0500", {11: "000040", 41: "BUS00001", 60: "000001",
                                   **{f: f"{v:0{10 if f < 80 else 16}d}" for f, v in totals.items()}})
    assert answer[39] == "00" and answer[97] == "C0000000000001000", answer
    link.close()
    assert stack.stop_daemon() == 0
    log("  ok  0500 with credits and credit reversals (every reversal answered 00) balanced")

    # A lost card: in the hotlist the terminal downloads, refused online with 41.
    run([stack.clearingd, "admin", "--data", stack.data, "card-status", CARDS[2], "lost"])
    stack.start_daemon(["--load-timeout-s", "1"])
    link = stack.link("BUS00001")
    link.sign_on("BUS00001", stan=50)
    _, answer = link.call("0800", {11: "000051", 41: "BUS00001", 70: "101", 48: "000000000000"})
    assert answer[39] == "00" and answer[63] == "000000010+" + CARDS[2], answer
    shell = CardShell(stack.vcard, os.path.join(stack.dir, "card2.img"))
    init = shell.initialize_for_load(500, "460100000001")
    _, answer = link.call("0200", load_request(CARDS[2], 500, 52, init))
    assert answer[39] == "41", answer
    shell.close()
    log("  ok  hotlist download from version 0 carries the lost card; its 0200 is refused with 41")

    # A load nobody confirms expires (--load-timeout-s 1): the daemon logs it; the card was credited after
    # all, so its late confirmation is booked.
    shell = CardShell(stack.vcard, os.path.join(stack.dir, "card0.img"))
    init = shell.initialize_for_load(700, "460100000001")
    _, answer = link.call("0200", load_request(CARDS[0], 700, 60, init))
    assert answer[39] == "00", answer
    mac2 = parse_tlv(answer[62])["DF09"]
    deadline = time.time() + WAIT_S
    log_path = os.path.join(stack.dir, "clearingd.log")
    while "expired unresolved" not in open(log_path).read():
        assert time.time() < deadline, "the load did not expire"
        time.sleep(0.1)
    tac = shell.credit_for_load(DATE, TIME, mac2)
    shell.close()
    _, answer = link.call("0220", load_confirmation(CARDS[0], 700, 61, init, tac))
    assert answer[39] == "00", answer
    link.close()
    assert stack.stop_daemon() == 0
    assert stack.card_balance(0) == OPENING_FEN + 3000 + 700
    kinds = sorted(f["kind"] for f in stack.admin("risk"))
    assert kinds == ["duplicate_different", "late_load_confirmation", "mac1_invalid"], kinds
    log("  ok  an unconfirmed load expired (logged); the card's late confirmation booked it; flags " + ", ".join(kinds))
    stack.shadows_match_cards()
    report = stack.check()
    log(f"  ok  check: {report['transfers']} transfers, {report['pending_open']} open holds")


@contextlib.contextmanager
def kept_if_failed(stack, workdir):
    """Runs the body, then closes `stack` whatever happened; removes `workdir` when the body finished, keeps it
    (and says where) when it failed; says PASS when it finished. For a test script's main()."""
    ok = False
    try:
        yield
        ok = True
    finally:
        stack.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"FAILED; work directory kept: {workdir}")
    log("PASS")


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
    with kept_if_failed(stack, workdir):
        stack.setup()
        if phases in ("flows", "all"):
            phase_flows(stack)
        if phases in ("kill9", "all"):
            phase_kill9(stack, transactions)
        if phases in ("online", "all"):
            phase_online(stack)


if __name__ == "__main__":
    main()
