#!/usr/bin/env python3
"""coconut-clearingd's listeners against one client that would take every slot: connections per client
address (ISO 8583 and HTTP; another address still gets in), connections per terminal certificate, the
sign-on deadline (an echo before sign-on does not keep a slot; none with --allow-without-sign-on), and an accept loop that waits instead of
spinning when the process is out of descriptors.

Usage: test_clearingd_limits.py HSMD CLEARINGD TERMINAL VCARD
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_clearingd_it as it  # noqa: E402  (the shared stack: hsmd, cards, terminals, ISO 8583 helpers)


def connect(port, source="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_within(sock, seconds):
    """True when the daemon closes `sock` within `seconds` (answers read meanwhile are discarded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def echo(sock, stan):
    sock.sendall(it.encode("0800", {11: f"{stan:06d}", 41: "BUS00001", 70: "301"}))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_sign_on_deadline(stack):
    stack.start_daemon(["--insecure-terminals", "--sign-on-timeout-s", "1"])
    idle = connect(stack.port)
    echoing = connect(stack.port)
    signed = it.Link(stack.port)
    signed.sign_on("BUS00001")
    started = time.monotonic()
    closed_at = None
    for stan in range(1, 12):  # an echo every 0.25 s for ~2.75 s
        try:
            echo(echoing, stan)
        except (BrokenPipeError, ConnectionResetError):
            closed_at = closed_at or time.monotonic() - started
        if closed_at is None and closed_within(echoing, 0.25):
            closed_at = time.monotonic() - started
    assert closed_at is not None and closed_at < 2.5, closed_at
    assert closed_within(idle, 0.5)
    # A signed-on terminal is not touched by the deadline.
    _, answer = signed.call("0800", {11: "000099", 41: "BUS00001", 70: "301"})
    assert answer[39] == "00", answer
    signed.close()
    assert stack.stop_daemon() == 0
    it.log(f"  ok  sign-on deadline 1 s: an echoing peer that never signs on closed after {closed_at:.1f} s, a silent one too; "
           "a signed-on terminal kept")


def check_no_deadline_without_sign_on(stack):
    # With --allow-without-sign-on terminals upload without signing on: the deadline must not close them.
    stack.start_daemon(["--insecure-terminals", "--allow-without-sign-on", "--sign-on-timeout-s", "1"])
    link = it.Link(stack.port)
    _, answer = link.call("0800", {11: "000001", 41: "BUS00001", 70: "301"})
    assert answer[39] == "00", answer
    time.sleep(2)  # twice the deadline
    reply = link.call("0800", {11: "000002", 41: "BUS00001", 70: "301"})
    assert reply is not None, "closed by the sign-on deadline although no sign-on is required"
    assert reply[1][39] == "00", reply
    link.close()
    assert stack.stop_daemon() == 0
    it.log("  ok  --allow-without-sign-on with a 1 s sign-on deadline: a connection that never signs on is still served after 2 s")


def check_iso_per_address(stack):
    stack.start_daemon(["--insecure-terminals", "--connections-per-address", "3", "--connections-max", "8", "--sign-on-timeout-s", "0"])
    held = [connect(stack.port) for _ in range(3)]
    time.sleep(0.2)
    fourth = connect(stack.port)
    assert closed_within(fourth, 2), "a fourth connection from 127.0.0.1 was kept"
    other = it.Link.__new__(it.Link)
    other.sock = connect(stack.port, "127.0.0.2")
    other.sign_on("BUS00001")  # another address still gets in
    other.close()
    held.pop().close()
    time.sleep(0.2)
    again = it.Link.__new__(it.Link)
    again.sock = connect(stack.port)
    again.sign_on("BUS00001")  # a freed slot serves again
    again.close()
    for sock in held:
        sock.close()
    assert stack.stop_daemon() == 0
    it.log("  ok  ISO 8583 per address 3: a fourth connection from 127.0.0.1 closed, 127.0.0.2 signs on, a freed slot serves")


def check_per_terminal(stack):
    stack.start_daemon(["--connections-per-terminal", "1"])
    first = stack.link("BUS00001")
    first.sign_on("BUS00001")
    second = stack.link("BUS00001")  # the handshake completes; the daemon then closes it
    assert closed_within(second.sock, 2), "a second connection with BUS00001's certificate was kept"
    shop = stack.link("SHOP0001")
    shop.sign_on("SHOP0001")  # another terminal is not affected
    shop.close()
    first.close()
    time.sleep(0.2)
    third = stack.link("BUS00001")
    third.sign_on("BUS00001")  # its slot came back with the first connection
    third.close()
    assert stack.stop_daemon() == 0
    it.log("  ok  per terminal certificate 1: a second BUS00001 connection closed after its handshake, SHOP0001 served, "
           "the slot returns")


def http_status(port, source="127.0.0.1"):
    sock = connect(port, source)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    sock.close()
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else data.decode(errors="replace")


def check_http_per_address(stack):
    ready = os.path.join(stack.dir, "http.port")
    stack.start_daemon(["--insecure-terminals", "--http-listen", "127.0.0.1:0", "--http-ready-file", ready,
                        "--http-connections-per-address", "2"])
    port = it.wait_ready_file(ready, stack.daemon, "coconut-clearingd HTTP")
    held = [connect(port) for _ in range(2)]
    time.sleep(0.2)
    assert http_status(port) == "503", "a third HTTP connection from 127.0.0.1 was served"
    assert http_status(port, "127.0.0.2") == "200"
    held.pop().close()
    time.sleep(0.2)
    assert http_status(port) == "200"
    for sock in held:
        sock.close()
    assert stack.stop_daemon() == 0
    it.log("  ok  HTTP per address 2: a third connection from 127.0.0.1 answered 503, 127.0.0.2 served, a freed slot serves")


def check_descriptor_limit(stack):
    """Under `prlimit --nofile=64:64` (the daemon cannot raise it further), connections fill the descriptor
    table: the daemon must not spin on EMFILE, and must serve again once connections close."""
    ready = os.path.join(stack.dir, "clearingd.port")
    if os.path.exists(ready):
        os.remove(ready)
    stack.daemon = subprocess.Popen(["prlimit", "--nofile=64:64", stack.clearingd, "serve", "--insecure-terminals",
                                     "--iso-listen", "127.0.0.1:0", "--data", stack.data, "--hsm", f"127.0.0.1:{stack.hsm_port}",
                                     "--hsm-key", stack.key, "--ready-file", ready, "--sign-on-timeout-s", "0"],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(stack.dir, "clearingd.log"), "a"))
    stack.port = it.wait_ready_file(ready, stack.daemon, "coconut-clearingd")
    held = []
    for _ in range(90):  # more than the daemon has descriptors left: the rest wait in the listen backlog
        held.append(connect(stack.port))
    time.sleep(0.5)
    before = cpu_seconds(stack.daemon.pid)
    time.sleep(3)
    spent = cpu_seconds(stack.daemon.pid) - before
    assert spent < 0.5, f"the daemon used {spent:.2f} s of CPU in 3 s at its descriptor limit (spinning)"
    for sock in held:
        sock.close()
    time.sleep(1.5)  # the backoff is at most 1 s
    link = it.Link(stack.port)
    link.sign_on("BUS00001")
    link.close()
    assert stack.stop_daemon() == 0
    it.log(f"  ok  at 64 descriptors with 90 connections: {spent:.2f} s of CPU in 3 s (no spin); serves again once they close")


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-clearingd-limits-")
    stack = it.Stack(tools, workdir)
    with it.kept_if_failed(stack, workdir):
        stack.setup()
        check_sign_on_deadline(stack)
        check_no_deadline_without_sign_on(stack)
        check_iso_per_address(stack)
        check_per_terminal(stack)
        check_http_per_address(stack)
        check_descriptor_limit(stack)
        stack.check()


if __name__ == "__main__":
    main()
