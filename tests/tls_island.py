"""TLS for the integration tests: the island CA inside coconut-hsmd and certificates signed by it, the way
`coconut terminal register` makes them (clearing/README.md "TLS for terminals").

  tls = IslandTls(hsmd, store, workdir)
  tls.init_ca()                          # before `coconut-hsmd serve` (a ceremony on the store)
  tls.issue_server(hsm_port)             # coconut-clearingd's certificate: IP:127.0.0.1, DNS:localhost
  tls.issue_terminal(hsm_port, "BUS00001")
  clearingd serve ... *tls.server_args()
  coconut-terminal ... upload ... *tls.terminal_args("BUS00001")
  ssl_socket = tls.wrap(socket, "BUS00001")

Keys are made here with the openssl command line (EC P-256, PKCS#8, mode 0600); only their requests go to
the HSM, which signs them with `coconut-hsm sign-certificate` as the client "enrolment" (permission ca).
coconut-hsm is found next to coconut-hsmd (both are built into hsm-stub/).
"""

import os
import ssl
import subprocess


def _run(argv, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, input=input_text)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


class IslandTls:
    def __init__(self, hsmd, store, workdir):
        self.hsmd = hsmd
        self.hsm_cli = os.path.join(os.path.dirname(os.path.abspath(hsmd)), "coconut-hsm")
        self.store = store
        self.dir = os.path.join(workdir, "tls")
        self.ca = os.path.join(self.dir, "ca.pem")
        self.enrolment_key = os.path.join(workdir, "enrolment.key")
        self._contexts = {}

    def init_ca(self):
        """The enrolment client and the CA key, both made inside the store (idempotent)."""
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.enrolment_key):
            _run([self.hsmd, "client", "add", "--store", self.store, "--id", "enrolment", "--permissions", "ca",
                  "--key-out", self.enrolment_key])
        _run([self.hsmd, "ca", "init", "--store", self.store, "--out", self.ca])

    def issue(self, hsm_port, name, profile="terminal", sans=(), days=365):
        """dir/<name>/key.pem (0600) and cert.pem signed by the island CA; returns that directory."""
        where = os.path.join(self.dir, name)
        os.makedirs(where, exist_ok=True)
        key, csr, cert = (os.path.join(where, f) for f in ("key.pem", "request.pem", "cert.pem"))
        _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
              "-out", csr, "-subj", f"/CN={name}"])
        os.chmod(key, 0o600)
        argv = [self.hsm_cli, "--connect", f"127.0.0.1:{hsm_port}", "--client-key", self.enrolment_key, "sign-certificate",
                "--profile", profile, "--name", name, "--csr", csr, "--validity-days", str(days), "--out", cert]
        for san in sans:
            argv += ["--san", san]
        _run(argv)
        self._contexts.pop(name, None)
        return where

    def issue_server(self, hsm_port):
        return self.issue(hsm_port, "coconut-clearingd", "server", ("IP:127.0.0.1", "DNS:localhost"))

    def issue_terminal(self, hsm_port, terminal_id):
        return self.issue(hsm_port, terminal_id)

    def server_args(self):
        where = os.path.join(self.dir, "coconut-clearingd")
        return ["--tls-cert", os.path.join(where, "cert.pem"), "--tls-key", os.path.join(where, "key.pem"), "--tls-ca", self.ca]

    def terminal_args(self, terminal_id):
        where = os.path.join(self.dir, terminal_id)
        return ["--ca", self.ca, "--cert", os.path.join(where, "cert.pem"), "--key", os.path.join(where, "key.pem")]

    def context(self, terminal_id):
        """A client context for raw ISO 8583 over TLS as `terminal_id` (one per terminal: it keeps the session)."""
        if terminal_id not in self._contexts:
            where = os.path.join(self.dir, terminal_id)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(self.ca)
            context.load_cert_chain(os.path.join(where, "cert.pem"), os.path.join(where, "key.pem"))
            self._contexts[terminal_id] = context
        return self._contexts[terminal_id]

    def wrap(self, sock, terminal_id):
        return self.context(terminal_id).wrap_socket(sock, server_hostname="127.0.0.1")
