"""coconut-clearingd on a file system that fills up (clearing/README.md "Operations").

The stack of test_clearingd_it.py (coconut-hsmd + coconut-clearingd, terminals in process) with the
daemon's data directory on an 8 MiB tmpfs mounted here. Terminal uploads are booked; then a filler
file takes the rest of the tmpfs and the same terminal keeps uploading. Required:
  - the refusals name the full storage: "storage full: DIR has N bytes free …" (ENOSPC), never
    LMDB's "Input/output error" of its short write;
  - the log holds a bounded number of lines however many requests are refused (one per 10 s, the next
    one with the count of those in between);
  - /healthz answers 503 {"status":"degraded","storage":"full",…}; /metrics shows
    coconut_ledger_storage_full 1 and coconut_ledger_storage_errors_total > 0;
  - after the filler is removed the next upload is booked, /healthz is 200 again, the gauge is 0, the
    saved queue uploads whole, and `coconut-clearingd check` passes.

Needs root (mount -t tmpfs); without it the test says so and exits 77 (ctest: skipped).

Usage: test_clearingd_full_disk.py HSMD CLEARINGD TERMINAL VCARD
"""

import errno
import json
import os
import shutil
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
LOG_INTERVAL_S = 10         # the daemon's repeated_log_interval (clearing/daemon/src/internal.hpp)


class DiskStack(web.HttpStack):
    """The stack with its data directory on a tmpfs; one clerk (role read) for /metrics."""

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
    """Writes a filler file until the file system is full (the last blocks too); returns its path."""
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
    with open(os.path.join(stack.dir, "clearingd.log")) as f:
        return f.read()[start:].splitlines()


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


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-clearingd-disk-")
    stack = DiskStack(tools, workdir)
    mounted, why = mount_tmpfs(stack.data)
    if not mounted:
        shutil.rmtree(workdir, ignore_errors=True)
        it.log(f"SKIPPED: cannot mount a tmpfs for the data directory (needs root): {why}")
        sys.exit(SKIP)
    ok = False
    try:
        it.log("phase full-disk")
        stack.setup()
        phase_full_disk(stack)
        ok = True
    finally:
        stack.close()
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
