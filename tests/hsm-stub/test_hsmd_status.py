"""coconut-hsmd's status port (serve --http-port): /healthz and /metrics on loopback.

Starts coconut-hsmd on a fresh store with --http-port 0, sends requests through coconut-hsm (a KCV, a KCV
of a key that does not exist, a purchase TAC that does not verify) and checks that /metrics counts each
by kind and outcome with its latency, the TAC batch's size, process_* and coconut_build_info — and that
`promtool check metrics` accepts the text. 404 / 405 with a JSON error; the port is loopback by default;
a status port already in use stops the daemon at start with a message; SIGTERM stops it with exit 0.

Usage: test_hsmd_status.py HSMD HSM_CLI
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def log(text):
    print(text, flush=True)


def run(argv, check=True, **kw):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}: {result.stderr}")
    return result


def wait_file(path, process, what, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode} before it was ready")
        if os.path.exists(path):
            text = open(path).read().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready within {timeout_s} s")


def get(port, path, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, response.getheader("Content-Type"), body


def samples(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: tools/setup.sh installs it (Debian package prometheus)"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    hsmd, cli = (os.path.abspath(p) for p in sys.argv[1:3])
    work = tempfile.mkdtemp(prefix="coconut-hsmd-status-")
    daemon = None
    ok = False
    try:
        store = os.path.join(work, "store")
        run([hsmd, "init", "--store", store])
        run([hsmd, "key", "generate", "--store", store, "--label", "mk-tac", "--version", "1", "--usage", "tac"])
        key = os.path.join(work, "client.key")
        run([hsmd, "client", "add", "--store", store, "--id", "probe", "--permissions", "key-info,tac", "--key-out", key])
        ready, status_ready = os.path.join(work, "port"), os.path.join(work, "status.port")
        out = open(os.path.join(work, "hsmd.out"), "w")
        daemon = subprocess.Popen([hsmd, "serve", "--store", store, "--listen", "127.0.0.1:0", "--ready-file", ready,
                                   "--http-port", "0", "--http-ready-file", status_ready], stdout=out, stderr=subprocess.STDOUT)
        port = wait_file(ready, daemon, "coconut-hsmd")
        status_port = wait_file(status_ready, daemon, "coconut-hsmd status port")
        printed = open(os.path.join(work, "hsmd.out")).read()
        assert f"status on http://127.0.0.1:{status_port} " in printed, printed  # loopback by default

        status, content_type, body = get(status_port, "/healthz")
        health = json.loads(body)
        assert status == 200 and content_type == "application/json", (status, content_type)
        assert health["status"] == "ok" and health["audit"] == "ok" and health["store_generation"] >= 1, health
        log(f"  ok  /healthz 200 {body}")

        hsm = [cli, "--connect", f"127.0.0.1:{port}", "--client-key", key]
        assert "KCV" in run([*hsm, "kcv", "--key", "mk-tac"]).stdout
        assert run([*hsm, "kcv", "--key", "no-such-key"], check=False).returncode != 0
        tac = run([*hsm, "verify-tac", "--issuer", "0000000000000001", "--asn", "46010000000000000001", "--amount", "100",
                   "--terminal", "000000000001", "--date", "20261206", "--time", "120000", "--serial", "1", "--tac", "00000000"],
                  check=False)
        assert tac.stdout.strip() == "invalid", (tac.returncode, tac.stdout, tac.stderr)

        status, content_type, text = get(status_port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
        values = samples(text)
        assert values['coconut_hsm_requests_total{kind="key-info",outcome="ok"}'] == 1, text
        assert values['coconut_hsm_requests_total{kind="key-info",outcome="key_not_found"}'] == 1, text
        assert values['coconut_hsm_requests_total{kind="verify-purchase-tacs",outcome="ok"}'] == 1, text
        assert values['coconut_hsm_request_duration_seconds_count{kind="key-info"}'] == 2, text
        assert values['coconut_hsm_request_duration_seconds_bucket{kind="key-info",le="+Inf"}'] == 2, text
        assert values['coconut_hsm_request_duration_seconds_sum{kind="key-info"}'] > 0, text
        assert values["coconut_hsm_tac_batch_items_count"] == 1 and values['coconut_hsm_tac_batch_items_bucket{le="1"}'] == 1, text
        assert values["coconut_hsm_connections_open"] == 0 and values["coconut_hsm_audit_failing"] == 0, text
        assert values["process_open_fds"] > 0 and values["process_resident_memory_bytes"] > 0, text
        assert abs(values["process_start_time_seconds"] - time.time()) < 600, values["process_start_time_seconds"]
        assert any(re.fullmatch(r'coconut_build_info\{program="coconut-hsmd",version="[0-9.]+"\}', k) for k in values), text
        assert "mk-tac" not in text and "probe" not in text  # counts only: no key label, no client id
        promtool_check(text)
        log(f"  ok  /metrics: {len(values)} samples, requests by kind and outcome, latency, batch size, process_*, "
            "build_info; promtool check metrics clean")

        for path, method, code in (("/nowhere", "GET", 404), ("/metrics", "POST", 405), ("/healthz", "DELETE", 405)):
            status, content_type, body = get(status_port, path, method)
            assert status == code and json.loads(body)["error"]["code"] in ("not_found", "method_not_allowed"), (path, status, body)
        log("  ok  404 / 405 answered with a JSON error")

        # A status port in use: the second daemon stops at start, naming it.
        second = run([hsmd, "serve", "--store", store, "--listen", "127.0.0.1:0", "--http-port", str(status_port)], check=False)
        assert second.returncode != 0 and f"status port on 127.0.0.1:{status_port}" in second.stderr, (second.returncode, second.stderr)
        log(f"  ok  a status port in use: exit {second.returncode} naming it")

        daemon.terminate()
        assert daemon.wait(timeout=15) == 0
        daemon = None
        try:
            socket.create_connection(("127.0.0.1", status_port), timeout=1).close()
            raise AssertionError("the status port still answers after SIGTERM")
        except OSError:
            pass
        log("  ok  SIGTERM: exit 0, the status port closed")
        ok = True
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"FAILED; work directory kept: {work}")
    log("PASS")


if __name__ == "__main__":
    main()
