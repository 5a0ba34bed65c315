#!/usr/bin/env python3
"""A clearing cluster on loopback (docs/DESIGN.md §10, clearing/README.md "Cluster"): 3 nats-server (TLS,
the clearing user), coconut-hsmd, 3 coconut-clearingd nodes seeded from one data directory.

  chaos    terminals upload through coconut-terminal with the three nodes' endpoints while the primary is
           SIGKILLed again and again (and a NATS server now and then); a standby's cardholder API answers
           from its copy with Coconut-Applied-Position and sends clerks to the primary. At the end: every
           acknowledged record booked, none twice, every node's journal head equal, `check` passing on
           every node, cards = shadows; failover times (p50, max) printed.
  fencing  the primary is frozen (SIGSTOP) past its lease; another node takes over and books; the old
           primary, thawed, is refused by the stream, approves nothing and becomes a standby again.
  lapsed   the primary never renews its lease (--lease-renew-ms above the ttl): another node takes over and
           books while the old primary still believes it leads. Sent uploads, the old primary commits them
           to its own ledger while the stream refuses them: it approves nothing, steps down, rolls that
           commit back and follows the new primary to the same head as every node.

  test_cluster_failover.py HSMD CLEARINGD TERMINAL VCARD chaos|fencing|lapsed [--kills N] [--nats-kill-every K]
                           [--transactions N]
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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
NODES = ("a", "b", "c")


def primary_of(nodes):
    for node in nodes:
        if node.alive() and node.status().get("role") == "primary":
            return node
    return None


def wait_primary(nodes, wait_s=30):
    deadline = time.time() + wait_s
    while time.time() < deadline:
        primary = primary_of(nodes)
        if primary:
            try:
                wait_port(primary.port)
                return primary
            except Exception:  # noqa: BLE001 - the port is not open yet
                pass
        time.sleep(0.02)
    raise AssertionError("no primary within %d s: %s" % (wait_s, [(n.name, n.status()) for n in nodes]))


def uploader(stack, nodes, queue):
    endpoints = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    return subprocess.Popen([stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload", "--clearing", endpoints,
                             "--failover-ms", "30000", "--terminal-id", "BUS00001", "--timeout-ms", "10000",
                             *stack.tls.terminal_args("BUS00001")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def payable(node_data, stack):
    out = json.loads(run([stack.clearingd, "admin", "--data", node_data, "list", "participants"]).stdout)
    return {p["id"]: p.get("purse_payable_fen", 0) for p in out}[1001]


def http_get(port, path, token, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def wait_caught_up(standby, primary, clerk_token, deadline):
    """Waits until `standby` has applied everything the primary has committed so far. The primary's position
    is asked of its API: its status file is rewritten only at lease renewals."""
    status, _, body = http_get(primary.http_port, "/v1/clerk/cluster/position", clerk_token)
    assert status == 200 and "position" in body, (status, body)
    while standby.status().get("position", 0) < body["position"]:
        assert time.time() < deadline, f"the standby did not catch up with position {body['position']}: {standby.status()}"
        time.sleep(0.05)


def check_standby_http(nodes, primary, card_token, clerk_token):
    """A standby answers the cardholder from its copy and sends a clerk to the primary."""
    standby = next(n for n in nodes if n is not primary and n.alive() and n.status().get("role") == "standby")
    deadline = time.time() + WAIT_S
    wait_caught_up(standby, primary, clerk_token, deadline)
    status, headers, body = http_get(standby.http_port, f"/v1/cards/{CARDS[0][-16:]}", card_token)
    assert status == 200 and "Coconut-Applied-Position" in headers, (status, headers, body)
    p_status, _, p_body = http_get(primary.http_port, f"/v1/cards/{CARDS[0][-16:]}", card_token)
    assert p_status == 200 and p_body.get("purse") == body.get("purse") and "purse" in body, (p_body, body)
    status, headers, body = http_get(standby.http_port, "/v1/clerk/cards/" + CARDS[0][-16:], clerk_token)
    assert status == 503 and body["error"]["code"] == "standby", (status, body)
    assert headers.get("Coconut-Primary") == f"127.0.0.1:{primary.http_port}", headers
    log(f"  ok  standby {standby.name}: cardholder balance from its copy at position {headers['Coconut-Applied-Position']} "
        f"(= the primary's), clerk sent to the primary")
    # A card reported lost on the primary reads as lost on the standby (the lifecycle record travelled),
    # its token answering the status only; found again before the day goes on.
    card = CARDS[0][-16:]
    status, _, body = http_get(primary.http_port, f"/v1/cards/{card}/lost", card_token, method="POST")
    assert status == 200 and body["status"] == "lost", (status, body)
    status, _, body = http_get(standby.http_port, f"/v1/cards/{card}/lost", card_token, method="POST")
    assert status == 503 and body["error"]["code"] == "standby", (status, body)
    wait_caught_up(standby, primary, clerk_token, deadline)
    status, _, body = http_get(standby.http_port, f"/v1/cards/{card}", card_token)
    assert status == 200 and body["status"] == "lost" and body["lost"]["state"] == "waiting", (status, body)
    status, _, body = http_get(standby.http_port, f"/v1/cards/{card}/transactions", card_token)
    assert status == 403 and body["error"]["code"] == "card_reported_lost", (status, body)
    status, _, body = http_get(primary.http_port, f"/v1/cards/{card}/lost", card_token, method="DELETE")
    assert status == 200 and body["status"] == "active", (status, body)
    log(f"  ok  standby {standby.name}: a card reported lost on the primary reads as lost from its copy (403 for its history)")


class Cluster:
    def __init__(self, tools, work):
        self.stack = Stack(tools, work)
        self.nats = None
        self.nodes = []
        self.work = work

    def start(self, first=None):
        """Seeds and starts the nodes; the primary. `first`: (name, extra serve args) — that node alone is
        started first, with those arguments, and is the primary returned; the others start once it leads."""
        stack = self.stack
        stack.setup()
        out = run([stack.clearingd, "admin", "--data", stack.data, "clerk-add", "--name", "ops", "--roles", "read"]).stdout
        self.clerk_token = out.strip()
        tokens = os.path.join(self.work, "tokens")
        run([stack.clearingd, "admin", "--data", stack.data, "issue-tokens", "--out", tokens, "--card", CARDS[0][-16:]])
        self.card_token = open(os.path.join(tokens, os.listdir(tokens)[0])).read().strip()
        self.payable_before = payable(stack.data, stack)
        self.nats = NatsCluster(os.path.join(self.work, "nats"))
        key = os.path.join(self.work, "cluster.key")
        run([stack.clearingd, "cluster-key", "--out", key])
        self.nodes = [ClusterNode(name, stack, self.nats, key, self.work, copy_from=stack.data,
                                  extra_args=first[1] if first and first[0] == name else ()) for name in NODES]
        leader = [n for n in self.nodes if first and n.name == first[0]]
        for node in leader:
            node.start()
        if leader:
            wait_primary(leader)
        for node in self.nodes:
            if node not in leader:
                node.start()
        primary = leader[0] if leader else wait_primary(self.nodes)
        log(f"  primary {primary.name}; standbys follow")
        return primary

    def queue(self, transactions, queue="cluster.log"):
        per_card = max(1, transactions // len(CARDS))
        for card in range(len(CARDS)):
            self.stack.purchases(card, 0, queue, AMOUNT, per_card)
        return per_card * len(CARDS)

    def upload_until_empty(self, queue="cluster.log"):
        for _ in range(10):
            upload = uploader(self.stack, self.nodes, queue)
            upload.communicate(timeout=300)
            if self.stack.queue_list(queue)["count"] == 0:
                return
        raise AssertionError("the queue did not empty in 10 uploads")

    def finish(self, total):
        """Every node applies the whole stream, stops cleanly, passes check, and holds the same head."""
        stack = self.stack
        primary = self.settle()
        # Standbys first, the primary last: a primary stopped first hands its lease over, and the standby
        # that takes it opens its daemon — a commit of its own the others would not all see.
        for node in sorted(self.nodes, key=lambda n: n is primary):
            assert node.stop() == 0, f"node {node.name} did not stop cleanly (see {node.log_file})"
        heads = {}
        for node in self.nodes:
            result = run([stack.clearingd, "check", "--data", node.data, "--json"], check=False)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["ok"], f"check on {node.name}: {result.stdout}"
            heads[node.name] = (report["journal_head"]["sequence"], report["journal_head"]["hash"], report["replicated_position"])
            booked = (payable(node.data, stack) - self.payable_before) // AMOUNT
            assert booked == total, f"node {node.name}: {booked} booked of {total} acknowledged (lost or booked twice)"
        assert len(set(heads.values())) == 1, f"the nodes' journal heads differ: {heads}"
        # `admin` would change one copy alone: refused on a node's directory (reads still answer).
        refused = run([stack.clearingd, "admin", "--data", self.nodes[0].data, "clerk-add", "--name", "x", "--roles", "read"],
                      check=False)
        assert refused.returncode == 5 and "cluster node's copy" in refused.stderr, (refused.returncode, refused.stderr)
        run([stack.clearingd, "admin", "--data", self.nodes[0].data, "list", "participants"])
        stack.data = self.nodes[0].data
        stack.shadows_match_cards()
        return heads["a"]

    def settle(self):
        """Waits until one node is primary, every node holds the same position, and nothing has changed for
        1.5 s (a lease lost late on a loaded machine moves the primary and adds a commit); the primary."""
        deadline = time.time() + WAIT_S
        stable_since, last = time.time(), None
        while True:
            statuses = [(n.name, n.status().get("role"), n.status().get("position", 0)) for n in self.nodes]
            positions = {p for _, _, p in statuses}
            primaries = [name for name, role, _ in statuses if role == "primary"]
            if statuses != last:
                stable_since, last = time.time(), statuses
            elif len(positions) == 1 and len(primaries) == 1 and time.time() - stable_since > 1.5:
                return next(n for n in self.nodes if n.name == primaries[0])
            if time.time() > deadline:
                for node in self.nodes:
                    node.print_stacks()
                raise AssertionError(f"the nodes did not settle on one position and one primary: {statuses}")
            time.sleep(0.1)

    def close(self):
        for node in self.nodes:
            if node.alive():
                node.process.kill()
                node.process.wait(timeout=WAIT_S)
        if self.nats:
            self.nats.close()
        self.stack.close()


def chaos(cluster, args):
    primary = cluster.start()
    check_standby_http(cluster.nodes, primary, cluster.card_token, cluster.clerk_token)
    failovers, nats_kills, total = [], 0, 0
    per_round = max(len(CARDS), args.transactions // max(1, args.kills))
    for round_number in range(1, args.kills + 1):
        total += cluster.queue(per_round)
        upload = uploader(cluster.stack, cluster.nodes, "cluster.log")
        time.sleep(random.uniform(0.05, 0.3))
        victim = primary_of(cluster.nodes)
        if victim:
            nats_victim = None
            if args.nats_kill_every and round_number % args.nats_kill_every == 0:
                nats_victim = random.randrange(3)
                cluster.nats.kill(nats_victim)
                nats_kills += 1
            victim.kill()
            killed_at = time.time()
            successor = wait_primary([n for n in cluster.nodes if n is not victim], wait_s=45)
            failovers.append((time.time() - killed_at, nats_victim is not None))
            log(f"  kill {round_number}: {victim.name} SIGKILLed{' with NATS n%d' % (nats_victim + 1) if nats_victim is not None else ''}; "
                f"{successor.name} primary after {failovers[-1][0]:.2f} s")
            victim.start()
            if nats_victim is not None:
                cluster.nats.start(nats_victim)
        upload.communicate(timeout=300)
    cluster.upload_until_empty()
    head = cluster.finish(total)
    plain = [t for t, with_nats in failovers if not with_nats]
    with_nats = [t for t, w in failovers if w]
    if plain:
        log(f"  failover after SIGKILL of the primary: p50 {statistics.median(plain):.2f} s, max {max(plain):.2f} s ({len(plain)} kills)")
    if with_nats:
        log(f"  failover with a NATS server killed too: p50 {statistics.median(with_nats):.2f} s, max {max(with_nats):.2f} s "
            f"({len(with_nats)} kills)")
    log(f"  ok  {total} purchases, each booked exactly once on all 3 nodes (acknowledged-but-missing 0, booked twice 0); "
        f"journal heads equal at entry {head[0]} (stream position {head[2]}); check ok on every node")


def fencing(cluster, args):
    primary = cluster.start()
    total = cluster.queue(len(CARDS) * 4)
    cluster.upload_until_empty()
    primary.process.send_signal(signal.SIGSTOP)
    frozen_at = time.time()
    successor = wait_primary([n for n in cluster.nodes if n is not primary], wait_s=45)
    log(f"  {primary.name} frozen; {successor.name} primary after {time.time() - frozen_at:.2f} s")
    total += cluster.queue(len(CARDS) * 2, "after.log")
    cluster.upload_until_empty("after.log")  # booked through the new primary: the stream moved on
    # The old primary thaws believing it leads: whatever it is sent now is refused, none of it approved.
    total += cluster.queue(len(CARDS), "stale.log")
    primary.process.send_signal(signal.SIGCONT)
    stale = subprocess.run([cluster.stack.terminal, "--json", "--queue", os.path.join(cluster.stack.dir, "stale.log"), "upload",
                            "--clearing", f"127.0.0.1:{primary.port}", "--terminal-id", "BUS00001", "--timeout-ms", "10000",
                            *cluster.stack.tls.terminal_args("BUS00001")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    assert cluster.stack.queue_list("stale.log")["count"] == len(CARDS), \
        f"the deposed primary acknowledged records: exit {stale.returncode} {stale.stdout} {stale.stderr}"
    deadline = time.time() + WAIT_S
    while primary.status().get("role") != "standby":
        assert time.time() < deadline and primary.alive(), f"{primary.name} did not step down: {primary.status()}"
        time.sleep(0.05)
    log(f"  ok  {primary.name} thawed: upload exit {stale.returncode}, nothing acknowledged; it stepped down to standby")
    cluster.upload_until_empty("stale.log")
    head = cluster.finish(total)
    log(f"  ok  fencing: {total} purchases booked once on every node; heads equal at entry {head[0]}")


def publish_durations(node, clerk_token):
    """coconut_cluster_publish_duration_seconds from the node's /metrics: count, sum (s), cumulative bucket
    counts in the order given; None when the node reports no such histogram."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}/metrics", headers={"Authorization": f"Bearer {clerk_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    name = "coconut_cluster_publish_duration_seconds"
    values = {}
    buckets = []
    for line in body.splitlines():
        if line.startswith(name + "_bucket"):
            buckets.append(int(float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_count "):
            values["count"] = int(float(line.split()[1]))
        elif line.startswith(name + "_sum "):
            values["sum"] = float(line.split()[1])
    if not values:
        return None
    return {**values, "buckets": buckets}


def upload_to(stack, node, queue):
    """Uploads `queue` to `node` alone; the finished coconut-terminal process."""
    return subprocess.run([stack.terminal, "--json", "--queue", os.path.join(stack.dir, queue), "upload", "--clearing",
                           f"127.0.0.1:{node.port}", "--terminal-id", "BUS00001", "--timeout-ms", "10000",
                           *stack.tls.terminal_args("BUS00001")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)


def lapsed(cluster, args):
    stale = cluster.start(first=("a", ["--lease-renew-ms", "600000"]))  # renews after 10 min; the ttl is 2 s
    successor = wait_primary([n for n in cluster.nodes if n is not stale], wait_s=45)
    assert stale.status().get("role") == "primary", f"{stale.name} should still believe it leads: {stale.status()}"
    log(f"  {stale.name}'s lease lapsed; {successor.name} primary, {stale.name} still believes it leads")
    total = cluster.queue(len(CARDS) * 2, "after.log")
    for _ in range(10):
        upload_to(cluster.stack, successor, "after.log")
        if cluster.stack.queue_list("after.log")["count"] == 0:
            break
    assert cluster.stack.queue_list("after.log")["count"] == 0, "the new primary did not take the uploads"
    # The primary's /metrics has the stream's answer time per commit it published; a standby publishes nothing.
    published = publish_durations(successor, cluster.clerk_token)
    assert published and published["count"] >= 1 and published["buckets"][-1] == published["count"], \
        f"{successor.name} /metrics: the publish histogram: {published}"
    standby = next(n for n in cluster.nodes if n is not stale and n is not successor)
    assert publish_durations(standby, cluster.clerk_token) is None, f"standby {standby.name} reports publishes"
    log(f"  ok  {successor.name} /metrics: {published['count']} commits published, "
        f"{published['sum'] * 1000 / published['count']:.2f} ms to the stream's answer on average")
    total += cluster.queue(len(CARDS), "stale.log")
    refused = upload_to(cluster.stack, stale, "stale.log")
    assert cluster.stack.queue_list("stale.log")["count"] == len(CARDS), \
        f"the lapsed primary acknowledged records: exit {refused.returncode} {refused.stdout} {refused.stderr}"
    deadline = time.time() + WAIT_S
    while "rolled back its last commit" not in stale.log_text() or stale.status().get("role") != "standby":
        assert time.time() < deadline and stale.alive(), \
            f"{stale.name} did not step down and roll back: {stale.status()}\n{stale.log_text()[-3000:]}"
        time.sleep(0.05)
    log(f"  ok  {stale.name}: upload exit {refused.returncode}, nothing acknowledged; the stream refused its commit, "
        f"it rolled that commit back and follows as a standby")
    cluster.upload_until_empty("stale.log")
    head = cluster.finish(total)
    log(f"  ok  lapsed lease: {total} purchases booked once on every node; heads equal at entry {head[0]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tools", nargs=4)
    parser.add_argument("mode", choices=("chaos", "fencing", "lapsed"))
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--nats-kill-every", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=1200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="coconut-cluster-")
    cluster = Cluster(args.tools, work)
    try:
        {"chaos": chaos, "fencing": fencing, "lapsed": lapsed}[args.mode](cluster, args)
    except BaseException:
        for node in cluster.nodes:  # what each node said last, for the failure's reader
            if os.path.exists(node.log_file):
                with open(node.log_file) as f:
                    print(f"--- node {node.name} ({node.status()}):\n" + "".join(f.readlines()[-15:]))
        raise
    finally:
        cluster.close()
        if os.environ.get("COCONUT_KEEP_WORK"):
            print("work directory kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
