#!/usr/bin/env python3
"""coconut-clearingd's log (docs/CLI.md "Logs"): every line parses in both formats, an HTTP request's id
is on its access line, on the line of the change it made and in its X-Request-Id answer; a client's own
X-Request-Id is kept; an ISO 8583 message's id is on the engine's line about it; under the journal
(JOURNAL_STREAM) lines carry their priority and no time.

usage: test_clearingd_logs.py COCONUT_HSMD COCONUT_CLEARINGD
"""
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_clearingd_it as it  # noqa: E402  (its ISO 8583 encoder, independent of the C++ codec)

WAIT_S = 20
TEXT_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>debug|info|warning|error) "
                       r"(?P<component>[a-z0-9-]+) (?P<request>-|[hbt]-[0-9a-f]{12}|[A-Za-z0-9._:-]+) (?P<message>.*)$")
JOURNAL_LINE = re.compile(r"^<[3-7]>(?P<level>debug|info|warning|error) (?P<component>[a-z0-9-]+) (?P<request>\S+) (?P<message>.*)$")


def run(argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, (argv, result.stderr)
    return result.stdout


class Daemon:
    def __init__(self, clearingd, data, key, log_path, extra=(), env=None):
        self.ready = log_path + ".port"
        self.http_ready = log_path + ".http"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([clearingd, "serve", "--data", data, "--hsm", "127.0.0.1:1", "--hsm-key", key,
                                         "--insecure-terminals", "--iso-listen", "127.0.0.1:0", "--ready-file", self.ready,
                                         "--http-listen", "127.0.0.1:0", "--http-ready-file", self.http_ready, *extra],
                                        stdout=self.log, stderr=self.log, env=env)
        deadline = time.monotonic() + WAIT_S
        while not os.path.exists(self.ready):
            assert self.process.poll() is None and time.monotonic() < deadline, open(log_path).read()
            time.sleep(0.05)
        self.http_port = int(open(self.http_ready).read().strip())

    def request(self, method, path, token, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        h = {"Authorization": "Bearer " + token, **(headers or {})}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, response.getheader("X-Request-Id")

    def wait_for(self, text):
        """The access line is written once the answer's write completed: a moment after the client has it."""
        deadline = time.monotonic() + WAIT_S
        while text not in open(self.log_path).read():
            assert time.monotonic() < deadline, f"{text!r} never logged: " + open(self.log_path).read()
            time.sleep(0.02)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=WAIT_S)
        self.log.close()
        return open(self.log_path).read().splitlines()


def setup(hsmd, clearingd, work):
    store, key, data = os.path.join(work, "store"), os.path.join(work, "clearing.key"), os.path.join(work, "data")
    run([hsmd, "init", "--store", store])
    run([hsmd, "client", "add", "--store", store, "--id", "clearing", "--permissions", "tac,load,auth", "--key-out", key])
    registry = os.path.join(work, "registry.json")
    with open(registry, "w") as f:
        json.dump({"participants": [{"id": 1001, "name": "Haikou Bus", "kind": "bus", "bank_account": "6222000011112222"}],
                   "terminals": [{"terminal_id": "BUS00001", "psam_terminal_id": "460100000001", "participant_id": 1001}]}, f)
    run([clearingd, "admin", "--data", data, "load", registry])
    token = run([clearingd, "admin", "--data", data, "clerk-add", "--name", "alice", "--roles", "registry"]).strip()
    return data, key, token


def participant(number):
    return {"id": number, "name": f"Shop {number}", "kind": "shop", "bank_account": "6222000033334444"}


def check_text(clearingd, data, key, token, work):
    daemon = Daemon(clearingd, data, key, os.path.join(work, "text.log"))
    status, request_id = daemon.request("POST", "/v1/clerk/participants?note=secret-token", token, participant(2002))
    assert status in (200, 201), status
    kept_status, kept = daemon.request("POST", "/v1/clerk/participants", token, participant(2003), {"X-Request-Id": "lb-42.a"})
    _, replaced = daemon.request("GET", "/healthz", token, None, {"X-Request-Id": "bad id\u00e9"})
    daemon.wait_for(replaced)
    lines = daemon.stop()
    parsed = []
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match, f"not a log line: {line!r}"
        parsed.append(match.groupdict())
    assert re.fullmatch(r"h-[0-9a-f]{12}", request_id), request_id
    mine = [p for p in parsed if p["request"] == request_id]
    access = [p for p in mine if p["component"] == "http" and p["message"].startswith("access ")]
    change = [p for p in mine if p["component"] == "api" and p["message"].startswith("clerk alice: participant")]
    assert len(access) == 1 and len(change) == 1, mine
    fields = dict(item.split("=", 1) for item in access[0]["message"].split(" ")[1:])
    assert fields["method"] == "POST" and fields["path"] == "/v1/clerk/participants" and fields["status"] == str(status), fields
    assert int(fields["bytes"]) > 0 and float(fields["duration_ms"]) >= 0, fields
    assert not any("secret-token" in line for line in lines), "a query reached the log"
    assert kept == "lb-42.a" and kept_status in (200, 201), kept
    assert any(p["request"] == "lb-42.a" and p["component"] == "api" for p in parsed), "the client's id is not on the change"
    assert replaced != "bad id\u00e9" and re.fullmatch(r"h-[0-9a-f]{12}", replaced or ""), replaced
    assert any(p["component"] == "daemon" and p["message"].startswith("listening on") for p in parsed)
    print(f"  ok  text: {len(lines)} lines parse; request {request_id} on its access line and its change's line; "
          "a client's X-Request-Id kept, a strange one replaced; no query logged")


def check_json(clearingd, data, key, token, work):
    daemon = Daemon(clearingd, data, key, os.path.join(work, "json.log"), ["--log-format", "json"])
    status, request_id = daemon.request("POST", "/v1/clerk/participants", token, participant(2004))
    daemon.wait_for('"status":' + str(status))
    lines = daemon.stop()
    events = [json.loads(line) for line in lines]
    for event in events:
        assert {"time", "level", "program", "component", "message"} <= event.keys(), event
        assert event["program"] == "coconut-clearingd" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])
    access = [e for e in events if e.get("request_id") == request_id and e["component"] == "http"]
    change = [e for e in events if e.get("request_id") == request_id and e["component"] == "api"]
    assert len(access) == 1 and len(change) == 1, events
    assert access[0]["status"] == status and access[0]["method"] == "POST" and isinstance(access[0]["duration_ms"], float), access
    print(f"  ok  json: {len(events)} objects, one per line; request {request_id} on its access and change events")


def check_iso8583(clearingd, data, key, token, work):
    """An 0320 whose card data does not parse: the engine's line about it carries the message's id."""
    daemon = Daemon(clearingd, data, key, os.path.join(work, "iso.log"), ["--allow-without-sign-on"])
    port = int(open(daemon.ready).read().strip())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for stan in (7, 8):
            sock.sendall(it.encode("0320", {2: "0000000000000001", 3: "000000", 4: "000000000100", 11: f"{stan:06d}",
                                            12: "120000", 13: "1206", 25: "08", 41: "BUS00001", 60: "000001", 62: "00"}))
            size = struct.unpack(">H", sock.recv(2))[0]
            body = b""
            while len(body) < size:
                body += sock.recv(size - len(body))
            mti, fields = it.decode(body)
            assert mti == "0330" and fields[39] == "30", (mti, fields)
    daemon.wait_for("STAN 8")
    lines = [TEXT_LINE.match(line).groupdict() for line in daemon.stop()]
    refused = [p for p in lines if p["component"] == "engine" and p["message"].startswith("0320 from BUS00001 STAN")]
    assert len(refused) == 2 and all(re.fullmatch(r"t-[0-9a-f]{12}", p["request"]) for p in refused), refused
    assert refused[0]["request"] != refused[1]["request"], refused
    print(f"  ok  ISO 8583: each 0320's engine line carries its own id ({refused[0]['request']}, {refused[1]['request']})")


def check_journal(clearingd, data, key, token, work):
    log_path = os.path.join(work, "journal.log")
    open(log_path, "w").close()
    st = os.stat(log_path)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    daemon = Daemon(clearingd, data, key, log_path, env=env)
    _, request_id = daemon.request("GET", "/healthz", token)
    daemon.wait_for(request_id)
    lines = daemon.stop()
    assert lines and all(JOURNAL_LINE.match(line) for line in lines), lines
    assert not any(re.search(r"\d{4}-\d\d-\d\dT", line) for line in lines), lines
    assert any(line.startswith("<6>info http ") for line in lines), lines
    # The same file again (same device and inode): a time only because --log-time utc asks for one.
    daemon = Daemon(clearingd, data, key, log_path, ["--log-time", "utc"], env=env)
    lines = daemon.stop()
    assert all(re.match(r"^<[3-7]>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in lines), lines
    print("  ok  JOURNAL_STREAM naming stderr: priority prefix, no time (unless --log-time utc)")


def main():
    hsmd, clearingd = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="coconut-logs-") as work:
        data, key, token = setup(hsmd, clearingd, work)
        check_text(clearingd, data, key, token, work)
        check_json(clearingd, data, key, token, work)
        check_iso8583(clearingd, data, key, token, work)
        check_journal(clearingd, data, key, token, work)
    print("clearingd logs: all ok")


if __name__ == "__main__":
    main()
