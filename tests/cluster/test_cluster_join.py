#!/usr/bin/env python3
"""Nodes that join a clearing cluster by snapshot (clearing/README.md "Joining a node") and settlement
against a standby (settlement/README.md "Settling on a standby"), on loopback: 3 nats-server (TLS),
coconut-hsmd, 3 coconut-clearingd nodes.

  a  is the first node (its directory is the one `admin load` made) and becomes primary;
  b  joins from a into a directory that does not exist, c into an empty one: `coconut-clearingd join`
     (GET /v1/clerk/cluster/snapshot, role cluster), no directory copied; both follow the stream from
     their snapshot's position while purchases are booked;
  bad inputs: 401 (unknown token), 403 (no role cluster), a non-empty directory refused without
     --replace, a served one refused even with it, a server that is not a clearing node;
  settlement: coconut-settle run reads b's directory (a standby applying) and posts through a's clerk
     API; a stopped standby that is behind is refused (exit 13);
  b is wiped (join --replace) and joins again; a node whose position the stream no longer holds (the
     stream purged below it) stops saying so, and joins again;
  a and b are SIGKILLed: c becomes primary and books; at the end every node's check passes, every
     journal head is equal, every purchase is booked once on each node.

  test_cluster_join.py HSMD CLEARINGD TERMINAL VCARD SETTLE
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "clearing"))
sys.path.insert(0, os.path.join(HERE, ".."))
from cluster_node import ClusterNode  # noqa: E402
from nats_cluster import NatsCluster  # noqa: E402
from test_clearingd_it import CARDS, Stack, log, run, wait_port  # noqa: E402

WAIT_S = 60
AMOUNT = 3
EXIT_BAD_INPUT = 5
EXIT_LOCKED = 3
EXIT_CLUSTER = 8
EXIT_SETTLE_BEHIND = 13


class Node(ClusterNode):
    def __init__(self, name, stack, nats, key, work, data=None, https=False):
        super().__init__(name, stack, nats, key, work, data=data, https=https, extra_args=["--settlement-margin-s", "1"])


def wait_primary(nodes, wait_s=30):
    deadline = time.time() + wait_s
    while time.time() < deadline:
        for node in nodes:
            if node.alive() and node.status().get("role") == "primary":
                try:
                    wait_port(node.port)
                    wait_port(node.http_port)
                    return node
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
        time.sleep(0.02)
    raise AssertionError("no primary within %d s: %s" % (wait_s, [(n.name, n.status()) for n in nodes]))


def wait_standby(node):
    """`node` says it is a standby and its HTTP port answers."""
    deadline = time.time() + WAIT_S
    while node.status().get("role") != "standby":
        assert node.alive() and time.time() < deadline, (node.name, node.status(), node.log_text()[-2000:])
        time.sleep(0.02)
    wait_port(node.http_port)


def wait_caught_up(nodes, primary, token):
    """Every node applied what `primary` holds now. The primary's status file is not rewritten per commit:
    its position comes from GET /v1/clerk/cluster/position, whose own journal entry is one more commit."""
    status, body = get(primary.url + "/v1/clerk/cluster/position", token)
    assert status == 200, (status, body)
    target = json.loads(body)["position"] + 1
    deadline = time.time() + WAIT_S
    while any(n.status().get("position", 0) < target for n in nodes if n is not primary):
        assert time.time() < deadline, (target, [(n.name, n.status()) for n in nodes])
        time.sleep(0.05)
    return target


def book(stack, nodes, queue, per_card):
    """per_card purchases on every card, uploaded to the nodes' endpoints until the queue is empty."""
    for card in range(len(CARDS)):
        stack.purchases(card, 0, queue, AMOUNT, per_card)
    endpoints = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    for _ in range(10):
        subprocess.run([stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload", "--clearing", endpoints,
                        "--failover-ms", "20000", "--terminal-id", "BUS00001", "--timeout-ms", "10000",
                        *stack.tls.terminal_args("BUS00001")], capture_output=True, text=True, timeout=120)
        if stack.queue_list(queue)["count"] == 0:
            return per_card * len(CARDS)
    raise AssertionError(f"queue {queue} not empty after 10 uploads")


def get(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_metrics(primary, standby, token, caught):
    """/metrics on the primary and on a standby (role read): the node's role and its journal stream position,
    which the standby lag alert compares (ops/prometheus/coconut-alerts.yml); promtool accepts both texts."""
    positions = {}
    for node, role in ((primary, 0), (standby, 1)):
        status, body = get(node.url + "/metrics", token)
        text = body.decode()
        assert status == 200, (node.name, status, text[:500])
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert int(values["coconut_cluster_standby"]) == role, (node.name, values.get("coconut_cluster_standby"))
        positions[node.name] = int(values["coconut_cluster_position"])
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, (node.name, checked.stdout, checked.stderr)
    assert positions[standby.name] >= caught and positions[primary.name] >= positions[standby.name], (positions, caught)
    log(f"  /metrics on primary {primary.name} and standby {standby.name}: roles, positions {positions} (promtool clean)")


def join(stack, peer, token_file, data, *extra, expect=0):
    result = run([stack.clearingd, "join", "--from", peer.url, "--token-file", token_file, "--data", data, *extra], check=False)
    assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    return result


def joined_position(result):
    # "... now holds stream position N (journal entry M, ..."
    return int(result.stdout.split("stream position ")[1].split(" ")[0])


def jetstream(nats, subject, request):
    """One JetStream API request over the NATS protocol (TLS, the clearing user); its JSON answer."""
    raw = socket.create_connection(("127.0.0.1", nats.ports[0][0]), timeout=10)
    raw.recv(4096)  # INFO
    context = ssl.create_default_context(cafile=os.path.join(nats.dir, "ca.pem"))
    context.load_cert_chain(os.path.join(nats.dir, "client.pem"), os.path.join(nats.dir, "client.key"))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    connect = {"user": "clearing", "pass": nats.password, "verbose": False, "pedantic": False, "tls_required": True}
    body = json.dumps(request) if request is not None else ""
    sock.sendall((f"CONNECT {json.dumps(connect)}\r\nSUB _INBOX.test 1\r\n"
                  f"PUB {subject} _INBOX.test {len(body)}\r\n{body}\r\n").encode())
    received = b""
    deadline = time.time() + 10
    while True:
        assert time.time() < deadline, received
        received += sock.recv(65536)
        start = received.find(b"MSG _INBOX.test")
        if start < 0 or b"\r\n" not in received[start:]:
            continue
        head, rest = received[start:].split(b"\r\n", 1)
        size = int(head.split()[-1])
        if len(rest) >= size:
            sock.close()
            return json.loads(rest[:size])


def expire_stream(nats):
    """Lets every message of the journal stream expire (its max age set to 1 s, then back): the stream no
    longer holds the positions before its next message, as when --stream-keep-days has passed them."""
    subject = "$JS.API.STREAM.{}.COCONUT_JOURNAL"
    config = jetstream(nats, subject.format("INFO"), None)["config"]
    answer = jetstream(nats, subject.format("UPDATE"), dict(config, max_age=1_000_000_000, duplicate_window=1_000_000_000))
    assert "error" not in answer, answer
    deadline = time.time() + 30
    while jetstream(nats, subject.format("INFO"), None)["state"]["messages"] > 0:
        assert time.time() < deadline, "the journal stream's messages did not expire"
        time.sleep(0.5)
    answer = jetstream(nats, subject.format("UPDATE"), config)
    assert "error" not in answer, answer


class NotClearing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        body = b"<html>hello</html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def clerk(stack, name, roles):
    token = run([stack.clearingd, "admin", "--data", stack.data, "clerk-add", "--name", name, "--roles", roles]).stdout.strip()
    path = os.path.join(stack.dir, f"{name}.token")
    with open(path, "w") as f:
        f.write(token + "\n")
    return token, path


def payable(stack, data):
    out = json.loads(run([stack.clearingd, "admin", "--data", data, "list", "participants"]).stdout)
    return {p["id"]: p.get("purse_payable_fen", 0) for p in out}[1001]


def check_bad_inputs(stack, a, work, tokens):
    status, body = get(a.url + "/v1/clerk/cluster/snapshot", "clerk_" + "x" * 32)
    assert status == 401, (status, body)
    status, body = get(a.url + "/v1/clerk/cluster/snapshot", tokens["reader"][0])
    assert status == 403 and b"role cluster required" in body, (status, body)
    result = join(stack, a, tokens["reader"][1], os.path.join(work, "never"), expect=EXIT_BAD_INPUT)
    assert "answered 403" in result.stderr and not os.path.exists(os.path.join(work, "never")), result.stderr
    full = os.path.join(work, "full")
    os.makedirs(full)
    with open(os.path.join(full, "keep.txt"), "w") as f:
        f.write("mine\n")
    result = join(stack, a, tokens["joiner"][1], full, expect=EXIT_BAD_INPUT)
    assert "is not empty" in result.stderr and os.listdir(full) == ["keep.txt"], (result.stderr, os.listdir(full))
    result = join(stack, a, tokens["joiner"][1], a.data, "--replace", expect=EXIT_LOCKED)
    server = http.server.HTTPServer(("127.0.0.1", 0), NotClearing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run([stack.clearingd, "join", "--from", f"http://127.0.0.1:{server.server_port}", "--token-file",
                      tokens["joiner"][1], "--data", os.path.join(work, "never")], check=False)
        assert result.returncode == EXIT_BAD_INPUT and "not a snapshot" in result.stderr, (result.returncode, result.stderr)
    finally:
        server.shutdown()
    assert not os.path.exists(os.path.join(work, "never"))
    log("  bad inputs: 401, 403, non-empty directory, a served directory, not a clearing node: refused, nothing written")


def settle_on_standby(stack, primary, standby, stopped, work, settler_file):
    local = time.gmtime(time.time() + 8 * 3600 + 2)
    cutoff = time.strftime("%H:%M:%S", local)
    date = time.strftime("%Y-%m-%d", local)
    config = os.path.join(work, "settle.json")
    with open(config, "w") as f:
        json.dump({"initiator_name": "Coconut Card Clearing", "cutoff": "24:00",
                   "purse_float": {"name": "Hainan Coconut Bank purse float", "account": "FLOAT0001", "agent_bic": "HNCBCNBJXXX"},
                   "medical_fund": {"name": "Hainan Social Insurance medical fund", "account": "FUND0001", "agent_bic": "HNSICNBJ"}},
                  f)
    time.sleep(4)  # the cut-off and the 1 s settling margin have passed

    def settle(data, out, *extra):
        return run([stack.settle, "run", "--date", date, "--cutoff", cutoff, "--settling-margin", "1", "--data", data, "--config",
                    config, "--clearingd", primary.url, "--token-file", settler_file, "--out", out, *extra], check=False)

    # A stopped standby that is behind the primary (a clerk read moved the primary on) is refused.
    get(primary.url + "/v1/clerk/cluster/position", stack.settler_token)
    behind = settle(stopped.data, os.path.join(work, "settle-behind"), "--standby-wait-s", "1")
    assert behind.returncode == EXIT_SETTLE_BEHIND and "not reached within 1 s" in behind.stderr, (behind.returncode, behind.stderr)
    assert not os.path.exists(os.path.join(work, "settle-behind")) or not os.listdir(os.path.join(work, "settle-behind"))
    result = settle(standby.data, os.path.join(work, "settlement"))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "transfers posted now" in result.stdout and " new, 0 already booked" in result.stdout, result.stdout
    log(f"  settlement on standby {standby.name}, posted through {primary.name}: "
        f"{result.stdout.strip().splitlines()[-1]}; " + [line for line in result.stderr.splitlines() if "stream position" in line][0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tools", nargs=5)
    parser.add_argument("--per-card", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="coconut-join-")
    stack = Stack(args.tools[:4], work)
    stack.settle = args.tools[4]
    nats = None
    nodes = []
    try:
        stack.setup()
        payable_before = payable(stack, stack.data)
        tokens = {name: clerk(stack, name, roles) for name, roles in
                  (("joiner", "cluster"), ("reader", "read"), ("settler", "settlement"))}
        stack.settler_token = tokens["settler"][0]
        nats = NatsCluster(os.path.join(work, "nats"))
        key = os.path.join(work, "cluster.key")
        run([stack.clearingd, "cluster-key", "--out", key])
        a = Node("a", stack, nats, key, work, data=stack.data)  # the first node: the directory `admin load` made
        b = Node("b", stack, nats, key, work, https=True)  # HTTPS: c joins from it with --ca
        c = Node("c", stack, nats, key, work)
        nodes = [a, b, c]
        a.start()
        wait_primary([a])
        total = book(stack, [a], "day1.log", args.per_card)
        log(f"  a primary, {total} purchases booked")

        check_bad_inputs(stack, a, work, tokens)
        joined_b = join(stack, a, tokens["joiner"][1], b.data)  # from the primary; b's directory does not exist
        b.start()
        wait_standby(b)
        os.makedirs(c.data)
        refused = join(stack, b, tokens["joiner"][1], c.data, "--ca", os.path.join(nats.dir, "ca.pem"), expect=EXIT_BAD_INPUT)
        assert "certificate" in refused.stderr and os.listdir(c.data) == [], refused.stderr  # not the island CA
        joined_c = join(stack, b, tokens["joiner"][1], c.data, "--ca", stack.tls.ca)  # from the standby b, over HTTPS
        position_c = joined_position(joined_c)
        log(f"  b joined from primary a at position {joined_position(joined_b)}, c from standby b at {position_c}: "
            f"{joined_c.stdout.strip()}")
        for name in ("http-token.key", "data.mdb"):
            assert os.path.exists(os.path.join(c.data, name)), os.listdir(c.data)
        c.start()
        total += book(stack, nodes, "day2.log", args.per_card)
        caught = wait_caught_up(nodes, a, tokens["reader"][0])
        assert caught > position_c and f"standby at position {position_c}" in c.log_text(), (caught, position_c)
        log(f"  b and c follow the stream from their snapshots: all at position {caught}")
        check_metrics(a, c, tokens["reader"][0], caught)

        b.stop()  # b is behind from here on: settlement must refuse its copy
        settle_on_standby(stack, a, c, b, work, tokens["settler"][1])
        result = join(stack, a, tokens["joiner"][1], b.data, expect=EXIT_BAD_INPUT)  # not empty: --replace needed
        result = join(stack, a, tokens["joiner"][1], b.data, "--replace")
        b.start()
        caught = wait_caught_up(nodes, a, tokens["reader"][0])
        log(f"  b replaced by a new snapshot at position {joined_position(result)}; all at {caught}")

        # A node whose next position the stream no longer holds says so, and joins again.
        c.stop()
        total += book(stack, [a, b], "day3.log", 2)
        expire_stream(nats)
        c.start()
        wait_standby(c)  # a standby again, waiting for the next message
        get(a.url + "/v1/clerk/cluster/position", tokens["reader"][0])  # a commit: the stream's next message
        c.process.wait(timeout=WAIT_S)
        assert c.process.returncode == EXIT_CLUSTER and "no longer holds position" in c.log_text(), c.log_text()[-2000:]
        log("  " + [line for line in c.log_text().splitlines() if "no longer holds" in line][-1].strip())
        join(stack, a, tokens["joiner"][1], c.data, "--replace")
        c.start()
        wait_caught_up(nodes, a, tokens["reader"][0])

        a.kill()
        b.kill()
        primary = wait_primary([c])
        total += book(stack, [a, b, c], "day4.log", 2)
        log(f"  a and b SIGKILLed: {primary.name} primary, books")
        a.start()
        b.start()
        wait_caught_up(nodes, c, tokens["reader"][0])
        for node in nodes:
            assert node.stop() == 0, f"node {node.name} did not stop cleanly (see {node.log_file})"
        heads = {}
        for node in nodes:
            result = run([stack.clearingd, "check", "--data", node.data, "--json"], check=False)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["ok"], f"check on {node.name}: {result.stdout}"
            heads[node.name] = (report["journal_head"]["sequence"], report["journal_head"]["hash"], report["replicated_position"])
        assert len(set(heads.values())) == 1, f"the nodes' journal heads differ: {heads}"
        paid = {node.name: payable(stack, node.data) for node in nodes}
        assert len(set(paid.values())) == 1, paid
        log(f"  ok  {total} purchases on nodes that joined by snapshot; check ok on every node; heads equal at entry "
            f"{heads['c'][0]} (position {heads['c'][2]}); payable {payable_before} -> {paid['c']} fen after settlement")
    finally:
        for node in nodes:
            if node.alive():
                node.process.kill()
                node.process.wait(timeout=WAIT_S)
        if nats:
            nats.close()
        stack.close()
        if os.environ.get("COCONUT_KEEP_WORK"):
            print("work directory kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
