#!/usr/bin/python3
"""coconut-terminal with a list of clearing endpoints (--clearing HOST:PORT,HOST:PORT,...) against the real
stack on loopback (coconut-hsmd + coconut-clearingd serving plain TCP, the card side in process): a port
where nothing listens and a standby that answers 91 are passed over, the upload lands on the daemon and
the endpoint that served is remembered beside the queue for the next command; the single HOST:PORT form
still works; a node that dies mid-upload after booking a record whose answer it never returns — the upload
goes on at the next endpoint, all 40 acknowledged, each booked once (shadow = card); every endpoint down ends in clearing_unreachable naming each within --failover-ms; bad lists
are usage errors naming the element. The cards' shadows equal the cards and `check` passes.

usage: test_terminal_failover.py HSMD CLEARINGD TERMINAL VCARD
"""

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clearing"))
import test_clearingd_it as it  # noqa: E402  (the stack: hsmd, clearingd, registry, cards; ISO 8583 codec)

EXIT_USAGE = 2
EXIT_CLEARING_UNREACHABLE = 28


class Standby:
    """A clearing node that is not the primary: accepts connections and answers every request with 91."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(5)
                self.answer_all(conn)

    def answer_all(self, conn):
        link = it.Link.__new__(it.Link)
        link.sock = conn
        try:
            while True:
                message = link.receive()
                if message is None:
                    return
                mti, fields = message
                self.requests.append(mti)
                answer = {f: fields[f] for f in (11, 41, 70) if f in fields}
                answer[39] = "91"
                link.send_raw(it.encode(mti[:2] + str(int(mti[2]) + 1) + "0", answer))
        except OSError:
            return

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


class DyingRelay:
    """A node that serves for a while, then dies: relays each request to the daemon and its answer back; the
    `last`-th request is still relayed (booked) but its answer never returns — both connections close."""

    def __init__(self, upstream_port, last):
        self.upstream_port = upstream_port
        self.last = last
        self.relayed = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(it.WAIT_S)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        client = it.Link.__new__(it.Link)
        client.sock = conn
        conn.settimeout(it.WAIT_S)
        upstream = it.Link(self.upstream_port)
        try:
            while self.relayed < self.last:
                request = client.receive()
                if request is None:
                    return
                answer = upstream.call(*request)
                self.relayed += 1
                if self.relayed < self.last:
                    client.send_raw(it.encode(*answer))
        finally:
            upstream.close()
            conn.close()
            self.sock.close()


def upload(stack, queue, clearing, extra=(), check=True):
    argv = [stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload", "--clearing", clearing,
            "--terminal-id", "BUS00001", "--insecure", "--timeout-ms", "2000", *extra]
    started = time.monotonic()
    result = it.run(argv, check=check)
    return result, time.monotonic() - started


def expect(what, got, wanted):
    assert got == wanted, f"{what}: {got!r}, expected {wanted!r}"
    it.log(f"  ok  {what}: {got!r}")


def phase_failover(stack, standby):
    dead = it.free_port()
    real = f"127.0.0.1:{stack.port}"
    listed = f"127.0.0.1:{dead},127.0.0.1:{standby.port},{real}"
    memory = os.path.join(stack.dir, "bus.log.clearing-endpoint")

    it.log("a node down and a standby answering 91 before the primary: the upload lands on the primary")
    stack.purchases(0, 0, "bus.log", 150, 3)
    result, elapsed = upload(stack, "bus.log", listed)
    it.log(f"  upload past a dead port and a standby: {elapsed * 1000:.0f} ms (the whole command)")
    report = json.loads(result.stdout)
    expect("acknowledged", report["acknowledged"], 3)
    expect("remaining", report["remaining"], 0)
    expect("endpoint that served", report["endpoint"], real)
    # Two moves: past the dead port to the standby (which accepts the connection), past its 91 to the daemon.
    expect("failovers", report["failovers"], 2)
    expect("the standby heard a sign-on and nothing else", standby.requests, ["0800"])
    with open(memory) as f:
        expect("remembered beside the queue", f.read().strip(), real)

    it.log("the next command starts at the endpoint that served last")
    stack.purchases(0, 0, "bus.log", 150, 2)
    result, elapsed = upload(stack, "bus.log", listed)
    it.log(f"  upload starting at the remembered endpoint: {elapsed * 1000:.0f} ms (the whole command)")
    report = json.loads(result.stdout)
    expect("acknowledged", report["acknowledged"], 2)
    expect("failovers", report["failovers"], 0)
    expect("the standby heard nothing more", standby.requests, ["0800"])

    it.log("the single HOST:PORT form and the text output")
    stack.purchases(0, 0, "bus.log", 150, 1)
    result, _ = upload(stack, "bus.log", real)
    expect("single endpoint: endpoint", json.loads(result.stdout)["endpoint"], real)
    stack.purchases(0, 0, "bus.log", 150, 1)
    text = it.run([stack.terminal, "--queue", os.path.join(stack.dir, "bus.log"), "upload", "--clearing", listed,
                   "--terminal-id", "BUS00001", "--insecure"])
    assert f"clearing endpoint {real} (0 failovers)" in text.stdout, text.stdout
    it.log("  ok  text output names the endpoint with a list")
    help_text = it.run([stack.terminal, "upload", "--help"]).stdout
    assert "HOST:PORT,HOST:PORT" in help_text and "--failover-ms" in help_text, help_text
    it.log("  ok  --help documents the list and --failover-ms")
    stack.shadows_match_cards()


def phase_node_dies(stack):
    it.log("the node serving the upload dies mid-upload (one record booked, its answer lost): the rest on the next")
    stack.purchases(2, 0, "bus3.log", 100, 40)
    relay = DyingRelay(stack.port, 12)  # the sign-on and 10 uploads answered, the 11th booked unanswered
    result, elapsed = upload(stack, "bus3.log", f"127.0.0.1:{relay.port},127.0.0.1:{stack.port}")
    relay.thread.join(timeout=it.WAIT_S)
    report = json.loads(result.stdout)
    it.log(f"  upload of 40 across the death: {elapsed * 1000:.0f} ms (the whole command)")
    expect("relayed before it died", relay.relayed, 12)
    expect("acknowledged", report["acknowledged"], 40)
    expect("approved", report["approved"], 40)
    expect("remaining", report["remaining"], 0)
    expect("endpoint that served", report["endpoint"], f"127.0.0.1:{stack.port}")
    expect("failovers", report["failovers"], 1)
    stack.shadows_match_cards()  # the 11th, booked through the dead node and sent again, is booked once


def phase_all_down(stack, standby):
    it.log("every endpoint down (the primary stopped): clearing_unreachable naming each, within --failover-ms")
    port = stack.port
    stack.stop_daemon()
    stack.purchases(1, 0, "bus2.log", 100, 1)
    listed = f"127.0.0.1:{port},127.0.0.1:{standby.port}"
    result, elapsed = upload(stack, "bus2.log", listed, ["--failover-ms", "800"], check=False)
    expect("exit", result.returncode, EXIT_CLEARING_UNREACHABLE)
    error = json.loads(result.stdout)["error"]
    expect("error code", error["code"], "connect_failed")
    for endpoint in (f"127.0.0.1:{port}", f"127.0.0.1:{standby.port}"):
        assert endpoint in error["message"], error["message"]
    assert "answered 91" in error["message"], error["message"]
    assert 0.8 <= elapsed < 5.0, elapsed
    it.log(f"  ok  gave up after {elapsed:.2f} s: {error['message']}")
    expect("the record stays queued", stack.queue_list("bus2.log")["count"], 1)


def phase_bad_lists(stack):
    it.log("bad endpoint lists: usage errors naming the element")
    for text, wanted in (("", "no clearing endpoint"), ("a:", "endpoint 1 of 'a:'"), ("host:0", "1–65535"),
                         ("h:99999", "1–65535"), ("127.0.0.1:1,,127.0.0.1:2", "endpoint 2 of '127.0.0.1:1,,127.0.0.1:2' is empty"),
                         ("127.0.0.1:1,127.0.0.1:1", "127.0.0.1:1 is listed twice")):
        result, _ = upload(stack, "bad.log", text, check=False)
        expect(f"--clearing '{text}': exit", result.returncode, EXIT_USAGE)
        message = json.loads(result.stdout)["error"]["message"]
        assert wanted in message, (text, message)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-terminal-failover-")
    stack = it.Stack(tools, workdir)
    standby = Standby()
    ok = False
    try:
        stack.setup()
        stack.start_daemon(["--insecure-terminals"])
        phase_bad_lists(stack)
        phase_failover(stack, standby)
        phase_node_dies(stack)
        phase_all_down(stack, standby)
        stack.check()
        ok = True
    finally:
        standby.close()
        stack.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            it.log(f"FAILED; work directory kept: {workdir}")
    it.log("PASS")


if __name__ == "__main__":
    main()
