#!/usr/bin/env python3
"""A clearing cluster on loopback (docs/DESIGN.md §10, clearing/README.md "Cluster"): 3 nats-server (TLS,
the clearing user), coconut-hsmd, 3 coconut-clearingd nodes seeded from one data directory; terminals
upload through coconut-terminal with the three nodes' endpoints while the primary is SIGKILLed again and
again. At the end: every acknowledged record booked, none twice, every node's journal head equal,
`check` passing on every node, cards = shadows; failover times (p50, max) printed.

  test_cluster_failover.py HSMD CLEARINGD TERMINAL VCARD [--kills N] [--transactions N]
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "clearing"))
sys.path.insert(0, os.path.join(HERE, ".."))
from nats_cluster import NatsCluster  # noqa: E402
from test_clearingd_it import CARDS, Stack, free_port, log, run, wait_port  # noqa: E402

WAIT_S = 60
AMOUNT = 3
NODES = ("a", "b", "c")


class ClusterNode:
    def __init__(self, name, stack, nats, key, work):
        self.name = name
        self.stack = stack
        self.nats = nats
        self.key = key
        self.data = os.path.join(work, f"node-{name}")
        self.status_file = os.path.join(work, f"node-{name}.status")
        self.log_file = os.path.join(work, f"node-{name}.log")
        self.port = free_port()
        self.process = None
        shutil.copytree(stack.data, self.data, ignore=shutil.ignore_patterns("clearingd.lock", "lock.mdb"))

    def start(self):
        self.process = subprocess.Popen(
            [self.stack.clearingd, "serve", "--cluster-node", self.name, *self.nats.client_args(), "--cluster-key", self.key,
             "--cluster-status-file", self.status_file, "--lease-ttl-ms", "2000", "--iso-listen", f"127.0.0.1:{self.port}",
             "--data", self.data, "--hsm", f"127.0.0.1:{self.stack.hsm_port}", "--hsm-key", self.stack.key,
             *self.stack.tls.server_args()],
            stdout=open(self.log_file, "a"), stderr=subprocess.STDOUT)

    def status(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT_S)

    def stop(self):
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=WAIT_S)
        return self.process.returncode


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tools", nargs=4)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--transactions", type=int, default=1200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="coconut-cluster-")
    stack = Stack(args.tools, work)
    nats = None
    nodes = []
    try:
        stack.setup()
        payable_before = payable(stack.data, stack)
        nats = NatsCluster(os.path.join(work, "nats"))
        key = os.path.join(work, "cluster.key")
        run([stack.clearingd, "cluster-key", "--out", key])
        nodes = [ClusterNode(name, stack, nats, key, work) for name in NODES]
        for node in nodes:
            node.start()
        primary = wait_primary(nodes)
        log(f"  primary {primary.name}; standbys follow")

        per_card = args.transactions // len(CARDS)
        for card in range(len(CARDS)):
            stack.purchases(card, 0, "cluster.log", AMOUNT, per_card)
        total = per_card * len(CARDS)
        log(f"  {total} purchases queued")

        failovers = []
        kills = 0
        rounds = 0
        remaining = total
        while remaining > 0:
            rounds += 1
            assert rounds <= 60, "the queue did not empty in 60 upload rounds"
            upload = uploader(stack, nodes, "cluster.log")
            if kills < args.kills:
                time.sleep(random.uniform(0.05, 0.4))
                victim = primary_of(nodes)
                if victim:
                    victim.kill()
                    killed_at = time.time()
                    kills += 1
                    successor = wait_primary([n for n in nodes if n is not victim])
                    failovers.append(time.time() - killed_at)
                    log(f"  kill {kills}: {victim.name} SIGKILLed; {successor.name} primary after {failovers[-1]:.2f} s")
                    victim.start()  # back as a standby
            out, err = upload.communicate(timeout=300)
            remaining = stack.queue_list("cluster.log")["count"]
            log(f"  round {rounds}: upload exit {upload.returncode}, {total - remaining} of {total} acknowledged")
        assert kills >= min(args.kills, 1), "no kill landed"

        # Every node applies the whole stream; then all stop and are checked one by one.
        primary = wait_primary(nodes)
        target = primary.status()["position"]
        deadline = time.time() + WAIT_S
        while any(n.status().get("position", 0) < target for n in nodes):
            assert time.time() < deadline, [(n.name, n.status()) for n in nodes]
            time.sleep(0.1)
        for node in nodes:
            assert node.stop() == 0, f"node {node.name} did not stop cleanly (see {node.log_file})"
        heads = {}
        for node in nodes:
            result = run([stack.clearingd, "check", "--data", node.data, "--json"], check=False)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["ok"], f"check on {node.name}: {result.stdout}"
            heads[node.name] = (report["journal_head"]["sequence"], report["journal_head"]["hash"], report["replicated_position"])
            booked = (payable(node.data, stack) - payable_before) // AMOUNT
            assert booked == total, f"node {node.name}: {booked} booked of {total} acknowledged (lost or booked twice)"
        assert len(set(heads.values())) == 1, f"the nodes' journal heads differ: {heads}"
        stack.data = nodes[0].data
        stack.shadows_match_cards()
        if failovers:
            log(f"  failover after SIGKILL of the primary: p50 {statistics.median(failovers):.2f} s, max {max(failovers):.2f} s "
                f"({len(failovers)} kills)")
        log(f"  ok  {total} purchases, each booked exactly once on all 3 nodes; journal heads equal at entry "
            f"{heads['a'][0]} (stream position {heads['a'][2]}); check ok on every node")
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
