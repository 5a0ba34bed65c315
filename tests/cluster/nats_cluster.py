"""A real nats-server cluster on loopback for the python cluster tests, configured as the C++ fixture
(nats_cluster.cpp) and clearing/cluster/README.md describe: N nodes, TLS everywhere (a throwaway CA and
certificates from the openssl CLI), route credentials, the CLEARING account with the user "clearing"
(may publish the journal, the lease bucket and the JetStream API). Servers are stopped by PID."""
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsCluster:
    def __init__(self, directory, nodes=3, gomaxprocs=None, gogc=None):
        self.dir = directory
        # The Go runtime settings for servers sharing one machine, as coconut/cluster/nats_server_env.hpp
        # gives them (docs/CLUSTER.md, "Deployment"): each runtime sized to its share of the CPUs (at least
        # 1) keeps their garbage collectors and schedulers from preempting one another and the clearing; 0
        # leaves Go's default (every CPU). GOGC 1000 under a 512 MiB GOMEMLIMIT collects far less often than
        # Go's default on the servers' small heaps (docs/BENCHMARKS.md "What stalls the stream"); 0 leaves
        # Go's default (100, no limit).
        self.gomaxprocs = max(1, (os.cpu_count() or 1) // nodes) if gomaxprocs is None else gomaxprocs
        self.gogc = 1000 if gogc is None else gogc
        os.makedirs(directory, exist_ok=True)
        self.password = secrets.token_hex(16)
        self.route_password = secrets.token_hex(16)
        self.ports = [(_free_port(), _free_port(), _free_port()) for _ in range(nodes)]  # client, cluster, http
        self.processes = [None] * nodes
        self._certificates()
        with open(self.password_file, "w") as f:
            f.write(self.password + "\n")
        os.chmod(self.password_file, 0o600)
        for node in range(nodes):
            self._config(node)
            self.start(node)
        self.wait_ready()

    @property
    def password_file(self):
        return os.path.join(self.dir, "clearing.password")

    def _run(self, command):
        subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def _certificates(self):
        d = self.dir
        ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        self._run(f"openssl req -x509{ec} -keyout {d}/ca.key -out {d}/ca.pem -days 2 -subj /CN=test-nats-ca")
        with open(f"{d}/san.ext", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for name in ("server", "client"):
            self._run(f"openssl req -new{ec} -keyout {d}/{name}.key -out {d}/{name}.csr -subj /CN={name}")
            self._run(f"openssl x509 -req -in {d}/{name}.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial "
                      f"-days 2 -extfile {d}/san.ext -out {d}/{name}.pem")
            os.chmod(f"{d}/{name}.key", 0o600)

    def _config(self, node):
        d = self.dir
        client, cluster, http = self.ports[node]
        tls = (f'tls {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key", ca_file: "{d}/ca.pem", '
               f'verify: true, timeout: 2 }}\n')
        routes = "\n".join(f"    nats-route://route:{self.route_password}@127.0.0.1:{p[1]}" for p in self.ports)
        with open(os.path.join(d, f"n{node + 1}.conf"), "w") as f:
            f.write(f"server_name: n{node + 1}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n"
                    f"max_payload: 8388608\n"
                    f'jetstream {{ store_dir: "{d}/n{node + 1}", max_memory_store: 256MB, max_file_store: 2GB }}\n'
                    f"{tls}cluster {{\n  name: coconut\n  listen: 127.0.0.1:{cluster}\n"
                    f"  authorization {{ user: route, password: \"{self.route_password}\" }}\n  {tls}  routes: [\n{routes}\n  ]\n}}\n"
                    "accounts {\n  CLEARING {\n    jetstream: enabled\n    users: [\n"
                    f"      {{ user: clearing, password: \"{self.password}\", permissions: {{\n"
                    '          publish: { allow: ["coconut.journal", "$KV.COCONUT_LEASE.>", "$JS.API.>", "$JS.ACK.>"] }\n'
                    '          subscribe: { allow: ["_INBOX.>"] } } }\n    ]\n  }\n}\n')

    def start(self, node):
        if self.processes[node] and self.processes[node].poll() is None:
            return
        config = os.path.join(self.dir, f"n{node + 1}.conf")
        log = os.path.join(self.dir, f"n{node + 1}.log")
        env = dict(os.environ)
        if self.gomaxprocs:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        if self.gogc:
            env["GOGC"] = str(self.gogc)
            env["GOMEMLIMIT"] = "512MiB"
        self.processes[node] = subprocess.Popen(["nats-server", "-c", config, "-l", log], env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, node):
        process = self.processes[node]
        if process and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    def wait_ready(self, wait_s=30):
        """Every server's monitoring port answers and JetStream has a meta leader."""
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                ready = True
                for _, _, http in self.ports:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/jsz", timeout=2) as r:
                        body = r.read().decode()
                    ready = ready and '"leader"' in body
                if ready:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the NATS cluster in {self.dir} did not come up within {wait_s} s (see n*.log)")

    def urls(self):
        return ",".join(f"tls://127.0.0.1:{p[0]}" for p in self.ports)

    def client_args(self):
        """coconut-clearingd serve flags for this cluster's "clearing" user."""
        d = self.dir
        return ["--nats", self.urls(), "--nats-user", "clearing", "--nats-password-file", self.password_file,
                "--nats-ca", f"{d}/ca.pem", "--nats-cert", f"{d}/client.pem", "--nats-key", f"{d}/client.key"]

    def close(self):
        for node in range(len(self.processes)):
            self.kill(node)
