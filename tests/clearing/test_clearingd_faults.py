"""coconut-clearingd through faults of what it stands on (clearing/README.md "A full disk", "The HSM link").

The stack of test_clearingd_it.py (coconut-hsmd + coconut-clearingd, terminals in process).

Phase "full_disk": the daemon's data directory on an 8 MiB tmpfs mounted here. Terminal uploads are
booked; then a filler file takes the rest of the tmpfs but 20,000 bytes (so that LMDB's writes come
out short: EIO) and the same terminal keeps uploading. Required:
  - the refusals name the full storage: "storage full: DIR has N bytes free …" (ENOSPC), never
    LMDB's "Input/output error" of its short write;
  - the log holds a bounded number of lines however many requests are refused (one per 10 s, the next
    one with the count of those in between);
  - /healthz answers 503 {"status":"degraded","storage":"full",…}; /metrics shows
    coconut_ledger_storage_full 1 and coconut_ledger_storage_errors_total > 0;
  - after the filler is removed the saved queue uploads whole, /healthz is 200 again, the gauge is 0,
    and `coconut-clearingd check` passes.
  Needs root (mount -t tmpfs); without it the test says so and exits 77 (ctest: skipped).

Phase "hsm_hung": coconut-hsmd stopped (SIGSTOP) while a terminal uploads: the first upload times out
(91), the breaker opens, the rest are answered 91 at once; the log holds a bounded number of "HSM:"
lines, /metrics shows the breaker open with its openings and fast failures; after SIGCONT and the
cooldown the saved queue uploads whole and the breaker is closed.

Phase "hsm_pair": a second coconut-hsmd on a copy of the store (`coconut-hsmd replicate`: 0700/0600,
the copy's audit log its own), the daemon started with `--hsm FIRST,SECOND`; purchases uploaded, the
first coconut-hsmd killed (SIGKILL) with the link to it open, and the next purchases booked (00, no 91)
through the second; /metrics shows one failover and the second in use; bad --hsm lists exit 2 naming
the entry; `check` passes.

Usage: test_clearingd_faults.py HSMD CLEARINGD TERMINAL VCARD full_disk|hsm_hung|hsm_pair
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_clearingd_it as it  # noqa: E402  (the shared stack: hsmd, cards, terminals, ISO 8583 helpers)
import test_clearingd_http as web  # noqa: E402  (the daemon with its HTTP listener; the HTTP client)

SKIP = 77                   # ctest SKIP_RETURN_CODE
TMPFS_BYTES = 8 << 20       # room for the small ledger of three cards, then the filler
RECORDS = 40                # purchases made before the disk fills: the uploads refused, then booked
REFUSALS_MIN = 300          # refused uploads while full: far more than the log lines allowed
# Left free after filling: less than the next commits need, so their pwrite is short and LMDB reports
# EIO ("Input/output error", what a disk filling in the middle of a write gives), not ENOSPC.
FILL_LEAVE_BYTES = 20000
LOG_INTERVAL_S = 10         # the daemon's repeated_log_interval (clearing/daemon/src/internal.hpp)
HSM_TIMEOUT_MS = 500        # --hsm-timeout-ms: the first upload to the stopped HSM waits this long
HSM_COOLDOWN_MS = 2000      # --hsm-breaker-cooldown-ms
HSM_FAST_MIN = 200          # uploads answered 91 at once behind the open breaker
PAIR_PURCHASES = 20         # purchases uploaded one by one: half before the first HSM is killed, half after


class FaultStack(web.HttpStack):
    """The stack with its HTTP listener and one clerk (role read) for /metrics (no 1,000 extra cards)."""

    def setup(self):
        it.Stack.setup(self)
        out = it.run([self.clearingd, "admin", "--data", self.data, "clerk-add", "--name", "ops", "--roles", "read"]).stdout
        self.clerk["ops"] = out.strip()


def mount_tmpfs(directory):
    os.makedirs(directory)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", directory],
                            capture_output=True, text=True, timeout=30)
    return result.returncode == 0, result.stderr.strip()


def unmount(directory):
    if subprocess.run(["umount", directory], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", directory], capture_output=True, timeout=30)


def fill(directory):
    """Writes a filler file until the file system is full, then gives FILL_LEAVE_BYTES back; returns its path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 512):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
        os.ftruncate(fd, os.fstat(fd).st_size - FILL_LEAVE_BYTES)
    finally:
        os.close(fd)
    return path


def metrics(client, token):
    status, text = client.get("/metrics", token)
    assert status == 200, (status, text)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def log_lines(stack, start):
    """The daemon's event lines since `start`, without the HTTP access lines (one per /healthz or /metrics
    the test itself asks for; docs/CLI.md "Logs")."""
    with open(os.path.join(stack.dir, "clearingd.log")) as f:
        return [line for line in f.read()[start:].splitlines() if not re.search(r" info http \S+ access", line)]


def log_size(stack):
    return os.path.getsize(os.path.join(stack.dir, "clearingd.log"))


def phase_full_disk(stack):
    stack.start_daemon()
    client = web.Client(stack.http_port)
    token = stack.clerk["ops"]
    stack.purchases(0, 0, "before.log", 100, 3)
    out = json.loads(stack.upload("before.log", 0).stdout)
    assert out["remaining"] == 0, out
    stack.purchases(1, 0, "full.log", 100, RECORDS)
    records = stack.queue_list("full.log")["transactions"]
    assert len(records) == RECORDS
    status, body = client.get("/healthz")
    assert status == 200 and body["status"] == "ok", body
    it.log(f"  ok  3 uploads booked on the {TMPFS_BYTES >> 20} MiB tmpfs; {RECORDS} more purchases saved")

    filler = fill(stack.data)
    start = log_size(stack)
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")
    stan = 2
    answers = {}
    consecutive = 0
    began = time.monotonic()
    # Until REFUSALS_MIN refusals and the last 20 in a row refused (a commit that fits the pages a
    # refused one already grew the file by may still succeed at first), bounded.
    for _ in range(REFUSALS_MIN * 4):
        _, answer = link.call("0320", it.upload_fields(records[stan % RECORDS], "BUS00001", stan))
        stan += 1
        answers[answer[39]] = answers.get(answer[39], 0) + 1
        consecutive = consecutive + 1 if answer[39] == "96" else 0
        if answers.get("96", 0) >= REFUSALS_MIN and consecutive >= 20:
            break
    refused = answers.get("96", 0)
    assert refused >= REFUSALS_MIN and consecutive >= 20, answers
    elapsed = time.monotonic() - began

    status, body = client.get("/healthz")
    assert status == 503 and body["status"] == "degraded" and body["storage"] == "full", (status, body)
    assert body["storage_error"].startswith(f"storage full: {stack.data} has "), body
    values = metrics(client, token)
    assert values["coconut_ledger_storage_full"] == 1, values.get("coconut_ledger_storage_full")
    assert values["coconut_ledger_storage_errors_total"] > 0, values.get("coconut_ledger_storage_errors_total")

    lines = log_lines(stack, start)
    assert not any("Input/output error" in line for line in lines), lines
    full = [line for line in lines if "storage full: " + stack.data in line]
    assert full and "No space left on device" in full[0] and "nothing was lost" in full[0], lines
    allowed = 2 + int(elapsed / LOG_INTERVAL_S)
    assert len(lines) <= allowed, (len(lines), allowed, lines)
    it.log(f"  ok  disk full: {refused} uploads refused (96) in {elapsed:.1f} s, answers {answers}; "
           f"{len(lines)} log line(s): {full[0][:160]}")
    it.log(f"  ok  /healthz 503 {json.dumps({k: body[k] for k in ('status', 'storage')})}; "
           f"storage_full 1, storage_errors_total {values['coconut_ledger_storage_errors_total']:.0f}")

    # After the interval the next refusal is logged, with the count of those not logged.
    time.sleep(LOG_INTERVAL_S + 0.5)
    _, answer = link.call("0320", it.upload_fields(records[stan % RECORDS], "BUS00001", stan))
    stan += 1
    assert answer[39] == "96", answer
    lines = log_lines(stack, start)
    counted = [line for line in lines if "more refused requests since the previous such line" in line]
    assert counted, lines
    it.log(f"  ok  after {LOG_INTERVAL_S} s one line with the count: {counted[-1][-90:]}")

    link.close()
    os.remove(filler)
    # The last 20 refused are not booked: the terminal's upload of the whole queue commits them.
    out = json.loads(stack.upload("full.log", 0).stdout)
    assert out["remaining"] == 0, out
    status, body = client.get("/healthz")
    assert status == 200 and body["status"] == "ok" and body["storage"] == "ok" and "storage_error" not in body, (status, body)
    values = metrics(client, token)
    assert values["coconut_ledger_storage_full"] == 0, values.get("coconut_ledger_storage_full")
    it.log(f"  ok  filler removed: the saved queue of {RECORDS} uploaded whole, /healthz 200, storage_full 0")
    assert stack.stop_daemon() == 0
    report = stack.check()
    assert report["transfers"] >= 3 + RECORDS, report
    it.log(f"  ok  check after the full disk: {report['transfers']} transfers")


def phase_hsm_hung(stack):
    stack.start_daemon(["--hsm-timeout-ms", str(HSM_TIMEOUT_MS), "--hsm-breaker-cooldown-ms", str(HSM_COOLDOWN_MS)])
    client = web.Client(stack.http_port)
    token = stack.clerk["ops"]
    stack.purchases(2, 0, "hung.log", 100, 20)
    records = stack.queue_list("hung.log")["transactions"]
    link = stack.link("BUS00001")
    link.sign_on("BUS00001")
    start = log_size(stack)
    it.freeze(stack.hsm_process)
    try:
        began = time.monotonic()
        _, answer = link.call("0320", it.upload_fields(records[0], "BUS00001", 2))
        assert answer[39] == "91", answer
        first_s = time.monotonic() - began
        answers = {}
        stan = 3
        fast_began = time.monotonic()
        while answers.get("91", 0) < HSM_FAST_MIN and stan < 4 * HSM_FAST_MIN:
            _, answer = link.call("0320", it.upload_fields(records[stan % len(records)], "BUS00001", stan))
            answers[answer[39]] = answers.get(answer[39], 0) + 1
            stan += 1
        fast_s = time.monotonic() - fast_began
        assert answers == {"91": HSM_FAST_MIN}, answers
        values = metrics(client, token)
        elapsed = time.monotonic() - began
    finally:
        stack.hsm_process.send_signal(signal.SIGCONT)
    link.close()
    lines = log_lines(stack, start)
    hsm_lines = [line for line in lines if " HSM: " in line]
    allowed = 2 + int(elapsed / LOG_INTERVAL_S)
    assert 1 <= len(hsm_lines) <= allowed, (len(hsm_lines), allowed, lines)
    assert len(lines) <= allowed + 4, lines  # + the breaker's transitions (opened, probe, reopened)
    assert values["coconut_hsm_breaker_open"] == 1 and values["coconut_hsm_breaker_opens_total"] >= 1, values
    assert values["coconut_hsm_fast_failures_total"] >= HSM_FAST_MIN - 1, values["coconut_hsm_fast_failures_total"]
    assert values["coconut_hsm_timeouts_total"] >= 1, values["coconut_hsm_timeouts_total"]
    it.log(f"  ok  HSM stopped: first upload 91 after {first_s * 1000:.0f} ms, then {HSM_FAST_MIN} answered 91 in "
           f"{fast_s:.2f} s; breaker open, {values['coconut_hsm_fast_failures_total']:.0f} fast failures, "
           f"{values['coconut_hsm_breaker_opens_total']:.0f} opening(s); {len(hsm_lines)} \"HSM:\" log line(s), {len(lines)} in all")

    deadline = time.monotonic() + it.WAIT_S
    while True:  # the next probe after the cooldown closes the breaker
        values = metrics(client, token)
        if values["coconut_hsm_breaker_open"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert values["coconut_hsm_breaker_open"] == 0 and values["coconut_hsm_breaker_state"] == 0, values
    out = json.loads(stack.upload("hung.log", 0).stdout)
    assert out["remaining"] == 0, out
    it.log(f"  ok  HSM continued: breaker closed after the cooldown, the saved queue of {len(records)} uploaded whole")
    assert stack.stop_daemon() == 0
    stack.check()


def start_second_hsm(stack):
    """A copy of the stack's store for a second coconut-hsmd, and that daemon; returns (process, port)."""
    copy = os.path.join(stack.dir, "hsm-b")
    it.run([stack.hsmd, "replicate", "--store", stack.store, "--to", copy])
    assert os.stat(copy).st_mode & 0o777 == 0o700, oct(os.stat(copy).st_mode)
    for name in ("master.key", "keys.sealed", "audit.log"):
        assert os.stat(os.path.join(copy, name)).st_mode & 0o777 == 0o600, name
    ready = os.path.join(stack.dir, "hsm-b.port")
    process = subprocess.Popen([stack.hsmd, "serve", "--store", copy, "--listen", "127.0.0.1:0", "--ready-file", ready,
                                "--instance", "hsm-b"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, it.wait_ready_file(ready, process, "coconut-hsmd (copy)")


def check_bad_hsm_lists(stack):
    for bad, named in ((f"127.0.0.1:{stack.hsm_port},", "HSM endpoint 2 of"),
                       (f"127.0.0.1:{stack.hsm_port},127.0.0.1:{stack.hsm_port}", "repeats"),
                       ("127.0.0.1:7501;127.0.0.1:7502", "HSM endpoint 1 of")):
        out = it.run([stack.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", stack.data, "--hsm", bad,
                      "--hsm-key", stack.key, *stack.tls.server_args()], check=False, timeout=it.WAIT_S)
        assert out.returncode == 2 and "--hsm: " in out.stderr and named in out.stderr, (bad, out.returncode, out.stderr)
    it.log("  ok  bad --hsm lists: exit 2, the entry named")


def phase_hsm_pair(stack):
    check_bad_hsm_lists(stack)
    second, second_port = start_second_hsm(stack)
    try:
        stack.hsm_list = f"127.0.0.1:{stack.hsm_port},127.0.0.1:{second_port}"
        stack.start_daemon(["--hsm-timeout-ms", "1000"])
        client = web.Client(stack.http_port)
        token = stack.clerk["ops"]
        stack.purchases(2, 0, "pair.log", 100, PAIR_PURCHASES)
        records = stack.queue_list("pair.log")["transactions"]
        link = stack.link("BUS00001")
        link.sign_on("BUS00001")
        half = len(records) // 2
        for stan, record in enumerate(records[:half], start=2):
            _, answer = link.call("0320", it.upload_fields(record, "BUS00001", stan))
            assert answer[39] == "00", answer
        stack.hsm_process.kill()  # SIGKILL by PID: the daemon's connections to it break
        stack.hsm_process.wait(timeout=it.WAIT_S)
        began = time.monotonic()
        for stan, record in enumerate(records[half:], start=2 + half):
            _, answer = link.call("0320", it.upload_fields(record, "BUS00001", stan))
            assert answer[39] == "00", (stan, answer)
        after_s = time.monotonic() - began
        link.close()
        values = metrics(client, token)
        assert values["coconut_hsm_failovers_total"] == 1 and values["coconut_hsm_endpoint"] == 1, values
        assert values["coconut_hsm_breaker_open"] == 0 and values["coconut_hsm_tac_failures_total"] == 0, values
        with open(os.path.join(stack.dir, "clearingd.log")) as f:
            moved = [line for line in f if f"moving to 127.0.0.1:{second_port}" in line]
        assert len(moved) == 1, moved
        it.log(f"  ok  first coconut-hsmd killed after {half} uploads: the other {len(records) - half} booked 00 through the "
               f"second in {after_s:.2f} s; 1 failover, {values['coconut_hsm_moved_requests_total']:.0f} request(s) moved")
        assert stack.stop_daemon() == 0
        stack.check()
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=it.WAIT_S)


def main():
    if len(sys.argv) < 6 or sys.argv[5] not in ("full_disk", "hsm_hung", "hsm_pair"):
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    phase = sys.argv[5]
    workdir = tempfile.mkdtemp(prefix="coconut-clearingd-faults-")
    stack = FaultStack(tools, workdir)
    mounted = False
    if phase == "full_disk":
        mounted, why = mount_tmpfs(stack.data)
        if not mounted:
            shutil.rmtree(workdir, ignore_errors=True)
            it.log(f"SKIPPED: cannot mount a tmpfs for the data directory (needs root): {why}")
            sys.exit(SKIP)
    ok = False
    try:
        it.log(f"phase {phase}")
        stack.setup()
        if phase == "full_disk":
            phase_full_disk(stack)
        elif phase == "hsm_pair":
            phase_hsm_pair(stack)
        else:
            phase_hsm_hung(stack)
        ok = True
    finally:
        if stack.hsm_process and stack.hsm_process.poll() is None:
            stack.hsm_process.send_signal(signal.SIGCONT)
        stack.close()
        if mounted:
            if not ok:  # keep the ledger next to the daemon's log
                shutil.copytree(stack.data, os.path.join(workdir, "data-copy"), ignore=shutil.ignore_patterns("filler"),
                                dirs_exist_ok=True)
            unmount(stack.data)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            it.log(f"FAILED; work directory kept: {workdir}")
    it.log("PASS")


if __name__ == "__main__":
    main()
