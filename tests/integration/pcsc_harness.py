"""Shared pieces of the card integration tests: profiles, images, and the real PC/SC stack.

The stack is brought up exactly as docs/PCSC.md §4 describes: wait until no other pcscd runs (only one
per machine), rm -rf /run/pcscd, pcscd --foreground, wait for its socket, start `coconut-vcard serve`,
wait until `opensc-tool -l` shows the card. Every wait is bounded; every process we start is stopped by
its PID and reaped.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
CARD_READER = "Virtual PCD 00 00"  # vpcd slot 0, TCP 35963
PSAM_READER = "Virtual PCD 00 01"  # vpcd slot 1, TCP 35964

FOREIGN_PCSCD_WAIT_S = 120  # another engineer's test run may hold pcscd for a while
PCSCD_SOCKET_WAIT_S = 5     # ~0.06 s measured
CARD_PRESENT_WAIT_S = 10    # ~0.5 s measured (one 400 ms presence poll)
PROCESS_STOP_WAIT_S = 5     # pcscd stops in 20-40 ms, serve at once

PURSE_AID = "A000000632010105"
PSAM_AID = "A0000006324D4F542E435053414D3031"

# The card's keys are diversified from these (issuer id, then card factor). The test PSAM holds the master
# DPK itself (key_level "master": 80 70 applies both factors), so the tests need no DES of their own; the
# demo covers the issuer-level PSAM.
MASTER_KEYS = {
    "dpk": "0123456789ABCDEFFEDCBA9876543210",
    "dlk": "11223344556677888877665544332211",
    "dtk": "2B7E151628AED2A6ABF7158809CF4F3C",
    "iak": "404142434445464748494A4B4C4D4E4F",  # the purse's INTERNAL AUTHENTICATE key (no PIN)
    "damk": "000102030405060708090A0B0C0D0E0F",
    "ssse_iak": "606162636465666768696A6B6C6D6E6F",  # the SSSE application's own (after VERIFY)
}
ISSUER_ID = "4600000000000001"
ASN = "46010000000012345678"
TERMINAL_ID = "460100000001"
OPENING_BALANCE_FEN = 5000


def log(message):
    print(message, flush=True)


def card_profile(protocol="T=1", balance_fen=OPENING_BALANCE_FEN):
    return {
        "kind": "card", "asn": ASN, "issuer_id": ISSUER_ID, "balance_fen": balance_fen,
        "max_balance_fen": 100000, "pin": "123456", "pin_tries": 3, "protocol": protocol,
        "seed": "C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0", "start_date": "20260101", "expiry_date": "20351231",
        "cardholder": {"name": "王小椰", "id_number": "460100199001011234", "id_type": 0,
                       "ssn": "460100199001011234", "sex": "1", "birth_date": "19900101"},
        "medical_account": "46010000000000000001", "master_keys": MASTER_KEYS, "key_version": 1,
    }


def psam_profile(protocol="T=1"):
    return {"kind": "psam", "terminal_id": TERMINAL_ID, "purchase_key": MASTER_KEYS["dpk"], "key_level": "master",
            "issuer_id": ISSUER_ID, "key_index": 1, "key_version": 1, "terminal_serial": 1, "protocol": protocol}


def expected_ef15():
    """EF15: issuer id(8) | app type(1) 02 | app version(1) 01 | ASN(10) | start(4) | expiry(4) | FCI(2)."""
    return ISSUER_ID + "02" + "01" + ASN + "20260101" + "20351231" + "0000"


def run(argv, check=True, input_text=None, timeout=60):
    result = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def personalize(vcard, workdir, name, profile):
    profile_path = os.path.join(workdir, name + ".json")
    image_path = os.path.join(workdir, name + ".img")
    with open(profile_path, "w", encoding="utf-8") as out:
        json.dump(profile, out, ensure_ascii=False, indent=2)
    run([vcard, "personalize", "--profile", profile_path, "--out", image_path])
    return image_path


def shell(vcard, image, lines):
    """Runs `coconut-vcard shell IMAGE` over the lines; returns the output lines."""
    result = run([vcard, "shell", image], input_text="\n".join(lines) + "\n")
    return result.stdout.splitlines()


def check_equal(what, got, expected):
    if got != expected:
        raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")
    log(f"  ok  {what}: {got}")


def processes_named(name):
    """PIDs of processes named exactly `name` (pgrep -x; zombies count, as for pcscd's own check)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == name:
                    found.append(int(entry))
        except OSError:
            pass
    return found


def wait_until(predicate, timeout_s, what, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop_process(process, sig=signal.SIGTERM):
    """Signals a child by PID, waits (bounded) and reaps it; returns its exit code."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout=PROCESS_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"pid {process.pid} ({process.args[0]}) did not stop on signal {sig}")


class PcscStack:
    """pcscd + coconut-vcard serve, owned by this test."""

    def __init__(self, vcard, workdir):
        self.vcard = vcard
        self.workdir = workdir
        self.pcscd = None
        self.serve = None
        self.serve_log_path = os.path.join(workdir, "serve.log")
        self.starts = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stop_process(self.serve)
        stop_process(self.pcscd)
        return False

    def start_pcscd(self):
        others = [pid for pid in processes_named("pcscd") if self.pcscd is None or pid != self.pcscd.pid]
        if others:
            log(f"  another pcscd (pid {others[0]}) is running; waiting up to {FOREIGN_PCSCD_WAIT_S} s")
            wait_until(lambda: not processes_named("pcscd"), FOREIGN_PCSCD_WAIT_S, "the other pcscd to exit", 0.2)
        shutil.rmtree("/run/pcscd", ignore_errors=True)  # stale socket/pid of a killed run (none runs now)
        self.starts += 1
        log_file = open(os.path.join(self.workdir, f"pcscd-{self.starts}.log"), "w")
        self.pcscd = subprocess.Popen(["pcscd", "--foreground", "--error"], stdout=log_file,
                                      stderr=subprocess.STDOUT)
        log_file.close()

        def socket_ready():
            if self.pcscd.poll() is not None:
                raise AssertionError(f"pcscd exited at start with {self.pcscd.returncode}")
            return os.path.exists(PCSCD_SOCKET)

        wait_until(socket_ready, PCSCD_SOCKET_WAIT_S, "pcscd's socket")
        log(f"  pcscd started (pid {self.pcscd.pid})")

    def stop_pcscd(self):
        code = stop_process(self.pcscd)
        self.pcscd = None
        return code

    def start_serve(self, card_image, psam_image=None, extra_args=()):
        argv = [self.vcard, "serve", card_image] + (["--psam", psam_image] if psam_image else []) + list(extra_args)
        self.serve_log = open(self.serve_log_path, "a")
        self.serve = subprocess.Popen(argv, stdout=self.serve_log, stderr=subprocess.STDOUT)
        log(f"  coconut-vcard serve started (pid {self.serve.pid})")

    def stop_serve(self, sig=signal.SIGTERM):
        code = stop_process(self.serve, sig)
        self.serve = None
        return code

    def serve_log_text(self):
        with open(self.serve_log_path, encoding="utf-8") as text:
            return text.read()

    def card_present(self, slot):
        listing = run(["opensc-tool", "-l"], check=False, timeout=10).stdout
        return re.search(rf"^{slot}\s+Yes\s", listing, re.MULTILINE) is not None

    def wait_card(self, slot=0):
        def present():
            if self.serve is not None and self.serve.poll() is not None:
                raise AssertionError(f"coconut-vcard serve exited with {self.serve.returncode}:\n"
                                     + self.serve_log_text())
            return self.card_present(slot)

        try:
            wait_until(present, CARD_PRESENT_WAIT_S, f"a card in slot {slot}", 0.1)
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}{self.port_conflict()}") from None
        log(f"  card present in slot {slot}")

    def port_conflict(self):
        """Why no reader came up, when pcscd's log says vpcd could not bind its port: who holds it."""
        path = os.path.join(self.workdir, f"pcscd-{self.starts}.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as text:
                if "Address already in use" not in text.read():
                    return ""
        except OSError:
            return ""
        holders = run(["ss", "-tanp", "( sport = :35963 or sport = :35964 )"], check=False, timeout=10).stdout
        return ("\n  pcscd's vpcd could not bind its port (Address already in use); sockets on 35963/35964 now:\n"
                + holders + "  tools/setup.sh keeps these ports out of the ephemeral range (net.ipv4.ip_local_reserved_ports)")


# ---- output of the command-line PC/SC clients --------------------------------------------------------

def parse_opensc(output):
    """opensc-tool -s prints 'Received (SW1=0x90, SW2=0x00):' then a hex dump: up to 16 'XX ' groups a line,
    then the ASCII column (padded to 48 columns only on multi-line dumps)."""
    responses = []
    current = None
    for line in output.splitlines():
        match = re.match(r"Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)", line)
        if match:
            current = {"data": "", "sw": match.group(1) + match.group(2)}
            responses.append(current)
        elif line.startswith("Sending:"):
            current = None
        elif current is not None:
            groups = re.match(r"((?:[0-9A-F]{2} ){1,16})", line)
            current["data"] += groups.group(1).replace(" ", "") if groups else ""
    return responses


def parse_scriptor(output):
    """scriptor prints '< 46 00 ... 90 00 : Normal processing.', the dump wrapped at 16 bytes."""
    responses = []
    collecting = None
    for line in output.splitlines():
        if line.startswith("< "):
            collecting = line[2:]
        elif collecting is not None:
            collecting += " " + line
        if collecting is not None and " : " in collecting:
            hex_text = collecting.split(" : ")[0].replace(" ", "")
            responses.append({"data": hex_text[:-4], "sw": hex_text[-4:]})
            collecting = None
    return responses


def parse_args():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} PATH/TO/coconut-vcard [args]")
    vcard = os.path.abspath(sys.argv[1])
    if not os.access(vcard, os.X_OK):
        sys.exit(f"{vcard} is not an executable")
    return vcard, sys.argv[2:]


def main(test_function):
    """Runs test_function(vcard, workdir, extra_args) in a fresh directory; exit 0 on success, 1 on failure."""
    vcard, extra = parse_args()
    workdir = tempfile.mkdtemp(prefix="coconut-it-")
    try:
        test_function(vcard, workdir, extra)
    except (AssertionError, OSError, subprocess.SubprocessError) as failure:
        print(f"FAILED: {failure}\n(work directory kept: {workdir})", file=sys.stderr, flush=True)
        sys.exit(1)
    shutil.rmtree(workdir, ignore_errors=True)
    log("PASSED")
