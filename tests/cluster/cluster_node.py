"""One coconut-clearingd node of a test cluster (tests/cluster/test_cluster_*.py): started with
`serve --cluster-node` on its own ISO 8583 and HTTP ports and status file, stopped by PID; its role and
position read from the status file; its threads printed (gdb) when it hangs."""
import json
import os
import shutil
import signal
import subprocess

from test_clearingd_it import free_port

WAIT_S = 60


class ClusterNode:
    def __init__(self, name, stack, nats, key, work, data=None, copy_from=None, https=False, extra_args=()):
        """`data`: its directory (default WORK/node-NAME); `copy_from`: a stopped node's directory to start
        from (a seed); `https`: serve HTTP over TLS with the island's server certificate."""
        self.name, self.stack, self.nats, self.key, self.https = name, stack, nats, key, https
        self.data = data or os.path.join(work, f"node-{name}")
        self.status_file = os.path.join(work, f"node-{name}.status")
        self.log_file = os.path.join(work, f"node-{name}.log")
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.process = None
        if copy_from:
            shutil.copytree(copy_from, self.data, ignore=shutil.ignore_patterns("clearingd.lock", "lock.mdb"))

    def http_tls_args(self):
        if not self.https:
            return []
        where = os.path.join(self.stack.tls.dir, "coconut-clearingd")  # the island CA's server certificate
        return ["--http-tls-cert", os.path.join(where, "cert.pem"), "--http-tls-key", os.path.join(where, "key.pem")]

    @property
    def url(self):
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def start(self):
        if os.path.exists(self.status_file):
            os.remove(self.status_file)  # a restarted node's role is what it says now, not before its death
        self.process = subprocess.Popen(
            [self.stack.clearingd, "serve", "--cluster-node", self.name, *self.nats.client_args(), "--cluster-key", self.key,
             "--cluster-status-file", self.status_file, "--lease-ttl-ms", "2000", "--iso-listen", f"127.0.0.1:{self.port}",
             "--http-listen", f"127.0.0.1:{self.http_port}", "--data", self.data, "--hsm", f"127.0.0.1:{self.stack.hsm_port}",
             "--hsm-key", self.stack.key, *self.stack.tls.server_args(), *self.http_tls_args(), *self.extra_args],
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

    def print_stacks(self):
        """Where the node's threads are (gdb), for a failure message."""
        if self.alive() and shutil.which("gdb"):
            stacks = subprocess.run(["gdb", "-p", str(self.process.pid), "-batch", "-ex", "thread apply all bt 12"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60).stdout
            print(f"node {self.name} threads:\n" + "\n".join(l for l in stacks.splitlines() if l.startswith(("#", "Thread"))))

    def stop(self):
        """SIGTERM, then its exit code; a node still running after WAIT_S fails the test (threads printed)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self.print_stacks()
                self.process.kill()
                self.process.wait(timeout=WAIT_S)
                raise AssertionError(f"node {self.name} did not stop within {WAIT_S} s of SIGTERM (see {self.log_file})")
        return self.process.returncode

    def log_text(self):
        with open(self.log_file) as f:
            return f.read()
