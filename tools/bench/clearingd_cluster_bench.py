#!/usr/bin/env python3
"""Replicated durable authorizations against the single node, side by side in one run (docs/BENCHMARKS.md).

Starts, on loopback, one coconut-hsmd (the bench's TAC master imported) and one seed data directory with the
registry `clearingd_bench --write-registry` writes (64 cards) and a clerk with the role `read` (for /metrics).
Then, per round:
  single   coconut-clearingd serve on a copy of the seed (plain TCP, --allow-without-sign-on);
  cluster  3 nats-server (tests/cluster/nats_cluster.py: TLS, the clearing user) and coconut-clearingd
           --cluster-node a (the primary, started first) plus --standbys more nodes on copies of the seed;
and against each, with the same load generator (`clearingd_bench --connect`): the group-commit run
(--uploads, 64 connections, 32 in flight each) and the fixed-rate run (--rate for --rate-seconds). From the
daemon's /metrics before and after each run: commits, requests per commit, ms per commit (apply + the
commit hook's publish + fsync). During the cluster's fixed-rate run the standbys' status files and the
stream's last sequence (nats-server /jsz) are sampled every --sample-ms: lag in stream positions and in ms
(how long the first message a standby lacks has been in the stream; with no standbys nothing is sampled).
Each fixed-rate run's answers go to latency-PID.txt in the work directory (clearingd_bench --latency-log),
and the report says how many took over 10 ms, how many of those were sent in 100-ms windows where ten or
more did (a burst: something held every answer at once) and in windows that hold an answer over 20 ms.
After it, a fresh node on a copy of the seed catches up the whole stream: journal messages/s and journal
entries/s. Last, the cost of writing 4 MiB of memory never touched before against writing it again.

  clearingd_cluster_bench.py --build build [--dir /var/tmp] [--rounds 1] [--standbys 2] [--uploads 64000]
                             [--rate 6000] [--rate-seconds 10] [--perf-seconds 0] [--serve-arg=--flag ...]

Every process is stopped by PID, every wait is bounded; the work directory is removed unless --keep.
"""
import argparse
import json
import mmap
import re
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "cluster"))
from nats_cluster import NatsCluster  # noqa: E402

TAC_MASTER = "404142434445464748494A4B4C4D4E4F"  # clearingd_bench.cpp: tac_master_hex
WAIT_S = 60
CONNECTIONS = 64


def log(text):
    print(text, flush=True)


def run(argv, timeout=300, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def first_touch_ms(size=4 << 20, runs=5):
    """Writing `size` bytes of anonymous memory, the medians in ms: never touched before; mapped by the kernel
    beforehand (MAP_POPULATE, as locked memory is) but not yet written by this process; and the same memory
    again. nats-server's stalls are its Raft log's write buffer growing into fresh memory, so this machine's
    first touch of a page is part of their length; where the second figure is far above the third, part of
    that cost is below the guest kernel and locking memory cannot avoid it (docs/BENCHMARKS.md "What a stall
    costs")."""
    data = b"\x01" * size
    fresh, populated, again = [], [], []

    def write(memory):
        memory.seek(0)
        started = time.perf_counter()
        memory.write(data)
        return (time.perf_counter() - started) * 1e3

    anonymous = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    for _ in range(runs):
        with mmap.mmap(-1, size, flags=anonymous) as memory:
            fresh.append(write(memory))
            again.append(write(memory))
        with mmap.mmap(-1, size, flags=anonymous | mmap.MAP_POPULATE) as memory:
            populated.append(write(memory))
    return statistics.median(fresh), statistics.median(populated), statistics.median(again)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pid {process.pid} exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} not accepting within {WAIT_S} s")


def stop(process, sig=signal.SIGTERM):
    if process and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT_S)


def http_get(url, token=None, timeout=5):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read().decode()


def metrics(port, token):
    """The writer's counters from /metrics: commits, requests, commit seconds."""
    values = {}
    for line in http_get(f"http://127.0.0.1:{port}/metrics", token).splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return {"commits": values.get("coconut_ledger_commits_total", 0), "requests": values.get("coconut_ledger_requests_total", 0),
            "commit_s": values.get("coconut_ledger_commit_duration_seconds_sum", 0),
            "commits_within_5ms": values['coconut_ledger_commit_duration_seconds_bucket{le="0.005"}'],
            "commits_within_10ms": values['coconut_ledger_commit_duration_seconds_bucket{le="0.01"}'],
            "journal": values.get("coconut_ledger_journal_sequence", 0)}


def writer_delta(before, after):
    commits = after["commits"] - before["commits"]
    return {"commits": int(commits), "per_commit": (after["requests"] - before["requests"]) / commits if commits else 0,
            "commit_ms": 1000 * (after["commit_s"] - before["commit_s"]) / commits if commits else 0,
            "commits_over_5ms": int(commits - (after["commits_within_5ms"] - before["commits_within_5ms"])),
            "commits_over_10ms": int(commits - (after["commits_within_10ms"] - before["commits_within_10ms"])),
            "entries": int(after["journal"] - before["journal"])}


def parse_bench(output):
    """The rows of clearingd_bench --connect's table: answers, per second, p50 us, p99 us, not 00."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].isdigit():
            rows.append({"run": cells[0], "answers": int(cells[1]), "per_s": float(cells[2]), "p50_us": float(cells[3]),
                         "p99_us": float(cells[4]), "failed": int(cells[5])})
    return rows


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.clearingd = os.path.join(args.build, "clearing", "daemon", "coconut-clearingd")
        self.hsmd = os.path.join(args.build, "hsm-stub", "coconut-hsmd")
        self.bench = os.path.join(args.build, "tools", "bench", "clearingd_bench")
        for tool in (self.clearingd, self.hsmd, self.bench):
            if not os.access(tool, os.X_OK):
                raise RuntimeError(f"{tool} is not built (ninja -C {args.build} coconut-clearingd coconut-hsmd clearingd_bench)")
        self.processes = []
        self.nats_home = work  # main() may put the nats-servers' stores elsewhere (--nats-dir)
        self.seed = os.path.join(work, "seed")

    def start(self, argv, log_name):
        out = open(os.path.join(self.work, log_name), "a")
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def setup(self):
        store = os.path.join(self.work, "hsm")
        run([self.hsmd, "init", "--store", store])
        component_1 = os.urandom(16).hex().upper()
        component_2 = f"{int(component_1, 16) ^ int(TAC_MASTER, 16):032X}"
        run([self.hsmd, "key", "import", "--store", store, "--label", "mk-tac", "--version", "1", "--usage", "tac"],
            input_text=f"{component_1}\n{component_2}\n")
        self.hsm_key = os.path.join(self.work, "clearing.key")
        run([self.hsmd, "client", "add", "--store", store, "--id", "clearing", "--permissions", "tac,load,auth", "--key-out",
             self.hsm_key])
        self.hsm_port = free_port()
        hsm = self.start([self.hsmd, "serve", "--store", store, "--listen", f"127.0.0.1:{self.hsm_port}"], "hsmd.log")
        wait_port(self.hsm_port, hsm)
        registry = os.path.join(self.work, "registry.json")
        run([self.bench, "--write-registry", registry, "--connections", str(CONNECTIONS)])
        run([self.clearingd, "admin", "--data", self.seed, "load", registry])
        self.token = run([self.clearingd, "admin", "--data", self.seed, "clerk-add", "--name", "bench", "--roles", "read"]).strip()
        self.cluster_key = os.path.join(self.work, "cluster.key")
        run([self.clearingd, "cluster-key", "--out", self.cluster_key])

    def copy_seed(self, name):
        data = os.path.join(self.work, name)
        shutil.copytree(self.seed, data, ignore=shutil.ignore_patterns("clearingd.lock", "lock.mdb"))
        return data

    def serve_args(self, data, iso_port, http_port):
        return [self.clearingd, "serve", "--data", data, "--iso-listen", f"127.0.0.1:{iso_port}", "--http-listen",
                f"127.0.0.1:{http_port}", "--hsm", f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.hsm_key, "--insecure-terminals",
                "--allow-without-sign-on", "--connections-per-address", "1024", *self.args.serve_arg]

    def load(self, iso_port, http_port, process, uploads, rate, atc_base=0):
        """One clearingd_bench --connect run and what the writer did meanwhile."""
        before = metrics(http_port, self.token)
        perf = None
        if self.args.perf_seconds and uploads:
            # The whole machine (its 2 CPUs are shared by the daemon, the nats-servers, the HSM and the load generator).
            perf_file = os.path.join(self.work, f"perf-{process.pid}.data")
            perf = subprocess.Popen(["perf", "record", "-a", "-F", "499", "-o", perf_file, "--", "sleep", str(self.args.perf_seconds)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        argv = [self.bench, "--connect", f"127.0.0.1:{iso_port}", "--connections", str(CONNECTIONS), "--uploads", str(uploads),
                "--rate", str(rate), "--rate-seconds", str(self.args.rate_seconds), "--atc-base", str(atc_base)]
        latency_log = os.path.join(self.work, f"latency-{process.pid}.txt") if rate else None
        if latency_log:
            argv += ["--latency-log", latency_log]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if perf:
            perf.wait(timeout=WAIT_S + self.args.perf_seconds)
            log(f"  perf record -a during the run of pid {process.pid} ({perf_file}), CPU by command:")
            table = subprocess.run(["perf", "report", "-i", perf_file, "--stdio", "--sort", "comm", "--percent-limit", "2"],
                                   capture_output=True, text=True, timeout=120).stdout
            for line in table.splitlines():
                if line.strip() and not line.startswith("#"):
                    log("    " + line.strip())
        rows = parse_bench(result.stdout)
        if result.returncode != 0 or len(rows) != 1:
            raise RuntimeError(f"clearingd_bench: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
        tail = {"tail": tail_breakdown(latency_log)} if latency_log else {}
        return {**rows[0], **writer_delta(before, metrics(http_port, self.token)), **tail}

    def atc_after_saturated(self):
        # Right after the saturated run's last ATC (one card per connection): with a gap every later claimed
        # balance is a fen below the card's shadow, a risk flag on each purchase (clearingd_bench's atc_after).
        return self.args.uploads // CONNECTIONS

    def single(self, round_number):
        data = self.copy_seed(f"single-{round_number}")
        iso_port, http_port = free_port(), free_port()
        process = self.start(self.serve_args(data, iso_port, http_port), f"single-{round_number}.log")
        try:
            wait_port(iso_port, process)
            wait_port(http_port, process)
            saturated = self.load(iso_port, http_port, process, self.args.uploads, 0)
            fixed = self.load(iso_port, http_port, process, 0, self.args.rate, self.atc_after_saturated())
        finally:
            stop(process)
        return {"saturated": saturated, "fixed": fixed}

    def cluster(self, round_number):
        nats = start_nats(os.path.join(self.nats_home, f"nats-{round_number}"), self.args.nats_gomaxprocs, self.args.nats_gogc)
        self.nats = nats
        if self.args.nats_cpus:
            # Every thread of every nats-server (and those they start later) on these CPUs only.
            for process in nats.processes:
                run(["taskset", "-a", "-p", "-c", self.args.nats_cpus, str(process.pid)])
        nodes = []
        try:
            names = ["a"] + [chr(ord("b") + i) for i in range(self.args.standbys)]
            for name in names:
                nodes.append(self.node(round_number, name))
            self.start_node(nodes[0])
            wait_status(nodes[0], lambda s: s.get("role") == "primary")
            primary = nodes[0]
            wait_port(primary["iso"], primary["process"])
            wait_port(primary["http"], primary["process"])
            for node in nodes[1:]:
                self.start_node(node)
                wait_status(node, lambda s: s.get("role") == "standby")
            saturated = self.load(primary["iso"], primary["http"], primary["process"], self.args.uploads, 0)
            saturated["stream"] = self.stream_state()
            # The standbys catch up what they lag at the end of the saturated run before the fixed-rate run starts.
            caught_up = {n["name"]: self.wait_position(n, saturated["stream"]["last_seq"]) for n in nodes[1:]}
            sampler = Sampler(self, nodes[1:], self.args.sample_ms)
            sampler.start()
            try:
                fixed = self.load(primary["iso"], primary["http"], primary["process"], 0, self.args.rate, self.atc_after_saturated())
            finally:
                sampler.stop()
            fixed["lag"] = sampler.lag()
            fixed["stream"] = self.stream_state()
            catch_up = self.catch_up(round_number, fixed["stream"], saturated["stream"]["last_seq"])
        finally:
            for node in nodes:
                stop(node.get("process"))
            nats.close()
        publish = self.hook_times(nodes[0], saturated, fixed)
        return {"publish": publish, "saturated": saturated, "fixed": fixed, "standbys_after_saturated": caught_up, "catch_up": catch_up,
                "nodes": len(nodes)}

    def hook_times(self, primary, *runs):
        """The primary's log line on stepping down: commits published, bytes, ms sealing, ms waiting for the stream."""
        with open(os.path.join(self.work, primary["log"])) as f:
            lines = [line for line in f if "published" in line and "waiting for the stream" in line]
        match = re.search(r"published (\d+) commits \((\d+) bytes sealed\): ([\d.]+) ms sealing, ([\d.]+) ms waiting", lines[-1]) \
            if lines else None
        if not match:
            return None
        commits, size, seal_ms, wait_ms = int(match[1]), int(match[2]), float(match[3]), float(match[4])
        # Since the local commit overlaps the stream's acknowledgement the line also gives the round trips.
        trips = re.search(r"([\d.]+) ms the stream's round trips", lines[-1])
        round_trip_ms = float(trips[1]) / max(1, commits) if trips else None
        slow = re.search(r"the slowest ([\d.]+) ms; (\d+) over 5 ms, (\d+) over 10 ms, (\d+) over 20 ms", lines[-1])
        slow_trips = f"the slowest {slow[1]} ms; {slow[2]} over 5 ms, {slow[3]} over 10 ms, {slow[4]} over 20 ms" if slow else None
        metric_commits = sum(r["commits"] for r in runs)
        metric_ms = sum(r["commits"] * r["commit_ms"] for r in runs)
        return {"commits": commits, "bytes": size, "seal_ms": seal_ms / max(1, commits), "wait_ms": wait_ms / max(1, commits),
                "round_trip_ms": round_trip_ms, "slow_trips": slow_trips,
                "commit_ms": metric_ms / max(1, metric_commits), "share": (seal_ms + wait_ms) / metric_ms if metric_ms else 0}

    def node(self, round_number, name):
        return {"name": name, "data": self.copy_seed(f"node-{round_number}-{name}"), "iso": free_port(), "http": free_port(),
                "status": os.path.join(self.work, f"node-{round_number}-{name}.status"), "log": f"node-{round_number}-{name}.log"}

    def start_node(self, node):
        node["started"] = time.time()
        node["process"] = self.start([*self.serve_args(node["data"], node["iso"], node["http"]), "--cluster-node", node["name"],
                                      *self.nats.client_args(), "--cluster-key", self.cluster_key, "--cluster-status-file",
                                      node["status"]], node["log"])

    def stream_state(self):
        """The journal stream's state as the first nats-server reports it (/jsz)."""
        http = self.nats.ports[0][2]
        body = json.loads(http_get(f"http://127.0.0.1:{http}/jsz?accounts=true&streams=true"))
        for account in body.get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream["name"] == "COCONUT_JOURNAL":
                    return stream["state"]
        raise RuntimeError("no COCONUT_JOURNAL stream on the first nats-server")

    def wait_position(self, node, target):
        started = time.time()
        wait_status(node, lambda s: s.get("position", 0) >= target)
        return time.time() - started

    def catch_up(self, round_number, stream, saturated_last):
        """A fresh node on a copy of the seed applies the whole stream: messages/s and entries/s."""
        node = self.node(round_number, "catch-up")
        seed_entries = read_status_entries(self.clearingd, node["data"])
        self.start_node(node)
        try:
            # From its first status (a standby at position 0, its ledger open, connected to NATS) to the stream's end.
            first = wait_status(node, lambda s: s.get("role") == "standby", every_s=0.005)
            first_at, first_position, first_entries = time.time(), first["position"], first["journal_sequence"]
            # The saturated run's messages (large groups) come before the fixed-rate run's (small ones).
            middle = wait_status(node, lambda s: s.get("position", 0) >= saturated_last, wait_s=600, every_s=0.005)
            middle_at = time.time()
            last = wait_status(node, lambda s: s.get("position", 0) >= stream["last_seq"], wait_s=600, every_s=0.005)
            done_at = time.time()
        finally:
            stop(node.get("process"))
        seconds = done_at - first_at
        return {"middle": {"position": middle["position"], "entries": middle["journal_sequence"] - first_entries,
                           "seconds": middle_at - first_at},"messages": last["position"], "entries": last["journal_sequence"] - seed_entries,
                "seconds_from_start": done_at - node["started"], "seconds_applying": seconds,
                "messages_per_s": (last["position"] - first_position) / seconds if seconds > 0 else 0,
                "entries_per_s": (last["journal_sequence"] - first_entries) / seconds if seconds > 0 else 0,
                "stream_bytes": stream["bytes"]}


def start_nats(directory, gomaxprocs=None, gogc=None, attempts=3):
    """A NatsCluster, tried again in a fresh directory if it does not come up (a port taken meanwhile by another
    process); the servers of a failed attempt are stopped by PID (found by their configuration's directory)."""
    for attempt in range(1, attempts + 1):
        where = f"{directory}-{attempt}"
        try:
            return NatsCluster(where, gomaxprocs=gomaxprocs, gogc=gogc)
        except RuntimeError as error:
            log(f"  NATS cluster attempt {attempt}: {error}")
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv and argv[0].endswith(b"nats-server") and any(a.startswith(where.encode() + b"/") for a in argv):
                    os.kill(int(pid), signal.SIGKILL)
    raise RuntimeError(f"no NATS cluster after {attempts} attempts")


def read_status(node):
    try:
        with open(node["status"]) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def wait_status(node, condition, wait_s=WAIT_S, every_s=0.02):
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if node["process"].poll() is not None:
            raise RuntimeError(f"node {node['name']} exited with {node['process'].returncode} (see its log)")
        status = read_status(node)
        if status and condition(status):
            return status
        time.sleep(every_s)
    raise RuntimeError(f"node {node['name']}: condition not met within {wait_s} s; status {read_status(node)}")


def read_status_entries(clearingd, data):
    report = json.loads(subprocess.run([clearingd, "check", "--data", data, "--json"], capture_output=True, text=True,
                                       timeout=WAIT_S).stdout)
    return report["journal_head"]["sequence"]


class Sampler:
    """Samples the stream's last sequence and each standby's applied position every `every_ms`."""

    def __init__(self, bench, standbys, every_ms):
        self.bench, self.standbys, self.every = bench, standbys, every_ms / 1000
        self.primary = []  # (time, last_seq)
        self.samples = {n["name"]: [] for n in standbys}  # name -> [(time, position)]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        # Without standbys there is no lag to measure, and polling /jsz every few ms would only load the
        # nats-server being measured.
        if self.standbys:
            self.thread.start()

    def stop(self):
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=WAIT_S)

    def loop(self):
        while not self.stopping.is_set():
            try:
                self.primary.append((time.time(), self.bench.stream_state()["last_seq"]))
            except (OSError, RuntimeError, ValueError):
                pass
            for node in self.standbys:
                self.samples[node["name"]].append((time.time(), read_status(node).get("position", 0)))
            time.sleep(self.every)

    def lag(self):
        """Per standby: positions behind the stream's last sequence, and ms since the first message it lacks was stored."""
        out = {}
        for name, samples in self.samples.items():
            positions, ms = [], []
            for t, position in samples:
                known = [seq for when, seq in self.primary if when <= t]
                if not known:
                    continue
                positions.append(max(0, known[-1] - position))
                stored = next((when for when, seq in self.primary if seq > position), None)
                ms.append(1000 * (t - stored) if stored is not None and stored <= t else 0.0)
            if positions:
                out[name] = {"samples": len(positions), "positions_p50": statistics.median(positions),
                             "positions_p99": percentile(positions, 99), "positions_max": max(positions),
                             "ms_p50": statistics.median(ms), "ms_p99": percentile(ms, 99), "ms_max": max(ms)}
        return out


TAIL_MS = 10  # the p99 target at the fixed rate
STALL_MS = 20
BURST = 10  # answers over TAIL_MS in one window: a burst
WINDOW_US = 100_000


def tail_breakdown(latency_log):
    """Where the fixed-rate run's answers over TAIL_MS came from, by 100-ms windows of send time: windows where
    BURST or more took that long (a burst: something held every answer sent in it, as a stall of the stream
    does) against the rest, and windows that hold an answer over STALL_MS."""
    windows = {}
    with open(latency_log) as f:
        for line in f:
            sent_us, latency_us = map(int, line.split())
            windows.setdefault(sent_us // WINDOW_US, []).append(latency_us)
    total = sum(len(w) for w in windows.values())
    slow = [(sum(latency > TAIL_MS * 1000 for latency in w), max(w)) for w in windows.values()]  # per window
    over = sum(n for n, _ in slow)
    stalled = [n for n, slowest in slow if slowest > STALL_MS * 1000]
    over_in_stalls = sum(stalled)
    bursts = [n for n, _ in slow if n >= BURST]
    return {"answers": total, "over": over, "over_in_stalls": over_in_stalls, "stall_windows": len(stalled),
            "over_in_bursts": sum(bursts), "burst_windows": len(bursts), "windows": len(windows)}


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


def report(rounds, args):
    log("\n| round | what | authorizations/s | p50 ms | p99 ms | not 00 | per commit | commit ms |")
    log("|---|---|---|---|---|---|---|---|")
    for number, (single, cluster, load) in enumerate(rounds, 1):
        for label, result in (("single node", single), (f"cluster ({cluster['nodes']} nodes)", cluster)):
            for kind in ("saturated", "fixed"):
                r = result[kind]
                what = f"{label}, {'64 connections × 32 in flight' if kind == 'saturated' else f'{args.rate}/s offered'}"
                log(f"| {number} | {what} | {r['per_s']:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['failed']} | "
                    f"{r['per_commit']:.1f} | {r['commit_ms']:.2f} |")
        s, c = single["saturated"], cluster["saturated"]
        log(f"  round {number} (load {load}): replicated/single {c['per_s'] / s['per_s']:.2f}; p99 at {args.rate}/s "
            f"{cluster['fixed']['p99_us'] / 1000:.2f} ms replicated against {single['fixed']['p99_us'] / 1000:.2f} ms single; "
            f"stream after the saturated run: {c['stream']['messages']} messages, {c['stream']['bytes'] / max(1, c['stream']['messages']) / 1024:.1f} KiB each")
        for label, result in (("single node", single), ("cluster", cluster)):
            t = result["fixed"].get("tail")
            if t and t["answers"]:
                log(f"  {label} at {args.rate}/s: {t['over']:,} answers over {TAIL_MS} ms ({100 * t['over'] / t['answers']:.2f} %; "
                    f"the p99 target allows 1 %): {t['over_in_bursts']:,} sent in the {t['burst_windows']} of {t['windows']} "
                    f"100-ms windows where {BURST} or more did, {t['over'] - t['over_in_bursts']:,} in the others; "
                    f"{t['over_in_stalls']:,} in the {t['stall_windows']} windows that hold an answer over {STALL_MS} ms; "
                    f"{result['fixed']['commits_over_5ms']} of its {result['fixed']['commits']:,} commits (apply + hook + fsync) "
                    f"took over 5 ms, {result['fixed']['commits_over_10ms']} over 10 ms")
        for name, seconds in cluster["standbys_after_saturated"].items():
            log(f"  standby {name} reached the primary {seconds:.2f} s after the saturated run ended")
        for name, lag in cluster["fixed"]["lag"].items():
            log(f"  standby {name} lag at {args.rate}/s ({lag['samples']} samples every {args.sample_ms} ms): positions p50 "
                f"{lag['positions_p50']:.0f}, p99 {lag['positions_p99']}, max {lag['positions_max']}; ms p50 {lag['ms_p50']:.0f}, "
                f"p99 {lag['ms_p99']:.0f}, max {lag['ms_max']:.0f}")
        u = cluster["catch_up"]
        log(f"  catch-up of a fresh node: {u['messages']} journal messages ({u['stream_bytes'] / 1e6:.1f} MB), {u['entries']} entries "
            f"in {u['seconds_applying']:.2f} s applying ({u['seconds_from_start']:.2f} s from its start): "
            f"{u['messages_per_s']:,.0f} messages/s, {u['entries_per_s']:,.0f} entries/s")
        m = u["middle"]
        rest = u["seconds_applying"] - m["seconds"]
        log(f"    the first {m['position']} messages (the saturated run's {cluster['saturated']['stream']['last_seq']} large ones and "
            f"what came in the same batch): {m['entries']} entries in {m['seconds']:.2f} s, {m['position'] / m['seconds']:,.0f} "
            f"messages/s, {m['entries'] / m['seconds']:,.0f} entries/s; the rest (the fixed-rate run's): "
            f"{u['messages'] - m['position']} messages, {u['entries'] - m['entries']} entries in {rest:.2f} s, "
            f"{(u['messages'] - m['position']) / rest:,.0f} messages/s, {(u['entries'] - m['entries']) / rest:,.0f} entries/s")
        if cluster.get("publish"):
            p = cluster["publish"]
            log(f"  the primary's commit hook over both runs: {p['commits']} commits, {p['bytes'] / max(1, p['commits']) / 1024:.1f} KiB "
                f"sealed each; per commit {p['seal_ms']:.2f} ms sealing + {p['wait_ms']:.2f} ms waiting for the stream, "
                f"of {p['commit_ms']:.2f} ms per commit (apply + hook + fsync, /metrics): {p['share']:.0%} in the hook"
                + (f"; the stream's round trip {p['round_trip_ms']:.2f} ms per commit, overlapping the local commit"
                   if p.get("round_trip_ms") is not None else "")
                + (f" ({p['slow_trips']})" if p.get("slow_trips") else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--dir", default="/var/tmp", help="where the data directories go (a real disk: commits are synced)")
    parser.add_argument("--nats-dir", default="", help="where the nats-servers' stores go (default: --dir); e.g. /dev/shm to "
                        "tell their writes apart from the nodes' fsyncs on one disk")
    parser.add_argument("--rounds", type=int, default=1, help="single node then cluster, this many times")
    parser.add_argument("--standbys", type=int, default=2, help="cluster nodes besides the primary")
    parser.add_argument("--uploads", type=int, default=64000)
    parser.add_argument("--rate", type=int, default=6000)
    parser.add_argument("--rate-seconds", type=float, default=10)
    parser.add_argument("--sample-ms", type=int, default=20)
    parser.add_argument("--perf-seconds", type=int, default=0, help="perf record -g the daemon for this long in each saturated run")
    parser.add_argument("--serve-arg", action="append", default=[], help="an extra coconut-clearingd serve flag (repeatable)")
    parser.add_argument("--nats-cpus", default="", help="taskset the nats-servers to these CPUs (e.g. 0: away from the "
                        "ledger writer's CPU, which coconut-clearingd --writer-cpu auto keeps for the writer)")
    parser.add_argument("--nats-gomaxprocs", type=int, default=None, help="GOMAXPROCS of each nats-server (default: "
                        "the machine's CPUs / 3, at least 1; 0: Go's default, every CPU)")
    parser.add_argument("--nats-gogc", type=int, default=None, help="GOGC of each nats-server, with GOMEMLIMIT 512MiB "
                        "(default: 1000; 0: Go's default, 100 without a limit)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, perf data)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="coconut-cluster-bench-", dir=args.dir)
    bench = Bench(args, work)
    bench.nats_home = tempfile.mkdtemp(prefix="coconut-cluster-bench-nats-", dir=args.nats_dir) if args.nats_dir else work
    rounds = []
    try:
        bench.setup()
        log(f"clearingd_cluster_bench: {os.cpu_count()} CPUs, work {work}, serve flags {args.serve_arg or 'default'}, "
            f"{args.standbys} standbys, nats-server stores in {bench.nats_home}, nats-server CPUs {args.nats_cpus or 'any'}, GOMAXPROCS "
            f"{'Go default' if args.nats_gomaxprocs == 0 else args.nats_gomaxprocs or 'CPUs / 3'}, GOGC "
            f"{'Go default' if args.nats_gogc == 0 else f'{args.nats_gogc or 1000} (GOMEMLIMIT 512MiB)'}")
        for number in range(1, args.rounds + 1):
            load = loadavg()
            single = bench.single(number)
            log(f"  round {number}: single node {single['saturated']['per_s']:,.0f}/s")
            cluster = bench.cluster(number)
            log(f"  round {number}: cluster {cluster['saturated']['per_s']:,.0f}/s")
            rounds.append((single, cluster, f"{load} → {loadavg()}"))
        report(rounds, args)
        fresh, populated, warm = first_touch_ms()
        log(f"this machine: writing 4 MiB of fresh memory {fresh:.2f} ms, of memory the kernel mapped beforehand "
            f"(MAP_POPULATE) {populated:.2f} ms, the same memory again {warm:.2f} ms")
    finally:
        for process in bench.processes:
            stop(process, signal.SIGKILL)
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(bench.nats_home, ignore_errors=True)


if __name__ == "__main__":
    main()
