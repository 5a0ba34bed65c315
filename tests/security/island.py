"""The island an attack runs against: coconut-hsmd + coconut-clearingd on free loopback ports, cards and PSAMs
personalized with coconut-vcard, genuine card transactions from coconut-terminal, a clerk token for the HTTP
API, and — in TLS mode — a server certificate and one client certificate per registered terminal.

Every wait is bounded; processes are stopped by their PID. The final verdict of every attack is
`Island.verify_no_money_moved`: the daemon stopped, `coconut-clearingd check` passes, every card's shadow
(ledger and registry mirror) equals the card image's balance, every payable and medical account is what the
genuine transactions made it.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import iso8583_client as iso

MASTER_KEYS = {  # the scheme's masters (as tests/integration/pcsc_harness.py) + the SSSE application's own
    "dpk": "0123456789ABCDEFFEDCBA9876543210",
    "dlk": "11223344556677888877665544332211",
    "dtk": "2B7E151628AED2A6ABF7158809CF4F3C",
    "iak": "00112233445566778899AABBCCDDEEFF",
    "damk": "FFEEDDCCBBAA99887766554433221100",
    "ssse_iak": "5A5A5A5A0F0F0F0FA5A5A5A5F0F0F0F0",
}
ISSUER_ID = "4600000000000001"
OPENING_FEN = 50000
MEDICAL_FEN = 20000
PIN = "123456"
CARDS = ["46010000000000000011", "46010000000000000022", "46010000000000000033"]
# terminal id (field 41), PSAM terminal id (DF06), participant; a PSAM image exists for the first two.
TERMINALS = [("BUS00001", "460100000001", 1001), ("SHOP0001", "460100000002", 2002),
             ("CLINIC01", "460100000003", 3003), ("CLINIC02", "460100000004", 3003)]
PARTICIPANTS = [{"id": 1001, "name": "Haikou Bus", "kind": "bus", "bank_account": "6222000011112222", "fee_rate_bp": 30},
                {"id": 2002, "name": "Coconut Shop", "kind": "shop", "bank_account": "6222000033334444"},
                {"id": 3003, "name": "Haikou Clinic", "kind": "clinic", "bank_account": "6222000055556666"}]
PURSE_AID = "A000000632010105"
SSSE_AID = "7378312E73682EC9E7BBE1B1A3D5CF"
WAIT_S = 20  # every wait for a process or a port is bounded by this


def log(text):
    print(text, flush=True)


def run(argv, check=True, timeout=120, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def psam_of(terminal_id):
    return next(p for t, p, _ in TERMINALS if t == terminal_id)


def participant_of(terminal_id):
    return next(pid for t, _, pid in TERMINALS if t == terminal_id)


def utc_field7():
    return time.strftime("%m%d%H%M%S", time.gmtime())


NOTHING = object()


class Verdict:
    """Collects what an attack expected and what it got; a phase fails at the end if anything differed, so the
    log of a failing run (e.g. against the build before the defences) shows every hole, not only the first."""

    def __init__(self):
        self.failures = []

    def expect(self, condition, what, got=NOTHING):
        if condition:
            log(f"  ok    {what}")
        else:
            detail = "" if got is NOTHING else f" — got {got}"
            log(f"  FAIL  {what}{detail}")
            self.failures.append(what + detail)
        return condition

    def done(self):
        if self.failures:
            raise AssertionError(f"{len(self.failures)} expectation(s) not met:\n  " + "\n  ".join(self.failures))


class Island:
    def __init__(self, tools, workdir, plain):
        self.hsmd, self.clearingd, self.terminal, self.vcard = tools[:4]
        self.hsm_cli = tools[4] if len(tools) > 4 else os.path.join(os.path.dirname(self.hsmd), "coconut-hsm")
        self.dir = workdir
        self.plain = plain
        self.store = os.path.join(workdir, "hsm")
        self.data = os.path.join(workdir, "clearing")
        self.key = os.path.join(workdir, "clearing.key")
        self.hsm_process = None
        self.daemon = None
        self.port = None
        self.http_port = None
        self.http_tls = False
        self.clerk_token = None
        self.identities = {}  # terminal id -> TlsIdentity (TLS mode)
        self.tls_files = None  # (ca, cert, key) of the ISO listener (TLS mode)
        self.serve_help = run([self.clearingd, "serve", "--help"], check=False).stdout
        self.has_ssse_key = False

    def supports(self, option):
        """Whether `coconut-clearingd serve` takes this option (the suite runs against builds with and without
        the defences)."""
        return option in self.serve_help

    # ---- setup ------------------------------------------------------------------------------------------------

    def import_key(self, label, usage, master):
        component_1 = os.urandom(16).hex().upper()
        component_2 = f"{int(component_1, 16) ^ int(master, 16):032X}"
        return run([self.hsmd, "key", "import", "--store", self.store, "--label", label, "--version", "1", "--usage", usage],
                   input_text=f"{component_1}\n{component_2}\n", check=False)

    def setup(self):
        run([self.hsmd, "init", "--store", self.store])
        for label, usage, master in (("mk-tac", "tac", "dtk"), ("mk-load", "load", "dlk"),
                                     ("mk-internal-auth", "internal-auth", "iak")):
            result = self.import_key(label, usage, MASTER_KEYS[master])
            assert result.returncode == 0, result.stderr
        # The SSSE application's own INTERNAL AUTHENTICATE master (PLAN: mk-ssse-auth, usage ssse-auth); a build
        # without it refuses the usage, and its cards have no such key.
        self.has_ssse_key = self.import_key("mk-ssse-auth", "ssse-auth", MASTER_KEYS["ssse_iak"]).returncode == 0
        run([self.hsmd, "client", "add", "--store", self.store, "--id", "clearing", "--permissions", "tac,load,auth",
             "--key-out", self.key])
        for index, asn in enumerate(CARDS):
            keys = dict(MASTER_KEYS)
            if not self.has_ssse_key:
                del keys["ssse_iak"]
            self.personalize(f"card{index}", {
                "kind": "card", "asn": asn, "issuer_id": ISSUER_ID, "balance_fen": OPENING_FEN, "max_balance_fen": 1000000,
                "pin": PIN, "seed": f"{index + 1:032X}", "start_date": "20260101", "expiry_date": "20351231",
                "master_keys": keys, "key_version": 1})
        for index, (_, psam_terminal, _) in enumerate(TERMINALS[:2]):
            self.personalize(f"psam{index}", {
                "kind": "psam", "terminal_id": psam_terminal, "purchase_key": MASTER_KEYS["dpk"], "key_level": "master",
                "issuer_id": ISSUER_ID, "key_index": 1, "key_version": 1, "terminal_serial": 1})
        registry = {
            "participants": PARTICIPANTS,
            "terminals": [{"terminal_id": t, "psam_terminal_id": p, "participant_id": pid} for t, p, pid in TERMINALS],
            "cards": [{"asn": asn, "issuer_id": ISSUER_ID, "purse_balance_fen": OPENING_FEN, "medical_balance_fen": MEDICAL_FEN}
                      for asn in CARDS],
        }
        path = os.path.join(self.dir, "registry.json")
        with open(path, "w") as f:
            json.dump(registry, f)
        out = json.loads(run([self.clearingd, "admin", "--data", self.data, "load", path]).stdout)
        assert out["cards"] == len(CARDS), out
        self.clerk_token = run([self.clearingd, "admin", "--data", self.data, "clerk-add", "--name", "security",
                                "--roles", "hotlist,registry,settlement,read"]).stdout.strip()
        assert self.clerk_token.startswith("clerk_"), self.clerk_token
        if not self.plain:
            self.create_ca()
        self.start_hsm()
        if not self.plain:
            self.provision_tls()

    def personalize(self, name, profile):
        path = os.path.join(self.dir, name + ".json")
        with open(path, "w") as f:
            json.dump(profile, f)
        run([self.vcard, "personalize", "--profile", path, "--out", os.path.join(self.dir, name + ".img")])

    def start_hsm(self):
        ready = os.path.join(self.dir, "hsm.port")
        self.hsm_process = subprocess.Popen([self.hsmd, "serve", "--store", self.store, "--listen", "127.0.0.1:0",
                                             "--ready-file", ready], stdout=subprocess.DEVNULL,
                                            stderr=open(os.path.join(self.dir, "hsmd.log"), "a"))
        self.hsm_port = wait_ready_file(ready, self.hsm_process, "coconut-hsmd")
        wait_port(self.hsm_port)
        log(f"  coconut-hsmd pid {self.hsm_process.pid} on port {self.hsm_port}")

    # ---- TLS ----------------------------------------------------------------------------------------------------

    def create_ca(self):
        """The island CA inside the HSM store (`coconut-hsmd ca init`: the key is generated and sealed there) and a
        client allowed to have it sign (permission ca); before the HSM serves."""
        self.tls_dir = os.path.join(self.dir, "tls")
        os.makedirs(self.tls_dir, exist_ok=True)
        self.ca_file = os.path.join(self.tls_dir, "island-ca.pem")
        run([self.hsmd, "ca", "init", "--store", self.store, "--out", self.ca_file])
        self.registrar_key = os.path.join(self.dir, "registrar.key")
        run([self.hsmd, "client", "add", "--store", self.store, "--id", "registrar", "--permissions", "ca",
             "--key-out", self.registrar_key])

    def issue(self, profile, name, extra=()):
        """An EC P-256 key made here (openssl, PKCS#8, 0600) and its certificate signed by the island CA in the HSM
        (`coconut-hsm sign-certificate`, the path `coconut terminal register` takes). (cert, key) paths."""
        key, csr, cert = (os.path.join(self.tls_dir, name + ext) for ext in (".key", ".csr", ".pem"))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={name}"])
        os.chmod(key, 0o600)
        run([self.hsm_cli, "--connect", f"127.0.0.1:{self.hsm_port}", "--client-key", self.registrar_key, "sign-certificate",
             "--profile", profile, "--name", name, "--csr", csr, "--out", cert, *extra])
        return cert, key

    def provision_tls(self):
        """The server's certificate (SAN IP:127.0.0.1) and one certificate per registered terminal, all from the
        island CA in coconut-hsmd."""
        cert, key = self.issue("server", "coconut-clearingd", ["--san", "IP:127.0.0.1"])
        self.tls_files = (self.ca_file, cert, key)
        for terminal_id, _, _ in TERMINALS:
            cert, key = self.issue("terminal", terminal_id)
            self.identities[terminal_id] = iso.TlsIdentity(self.ca_file, cert, key)

    def foreign_identity(self, terminal_id):
        """A certificate for `terminal_id` signed by a CA the island never heard of (the attacker's own)."""
        d = os.path.join(self.dir, "foreign")
        os.makedirs(d, exist_ok=True)
        ca_key, ca_cert = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
        if not os.path.exists(ca_cert):
            run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", ca_key, "-out", ca_cert, "-days", "30", "-subj", "/O=Coconut Card island CA/CN=Coconut Card CA"])
        key, csr, cert = (os.path.join(d, terminal_id + ext) for ext in (".key", ".csr", ".pem"))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/O=Coconut Card terminal/CN={terminal_id}"])
        extensions = os.path.join(d, "terminal.ext")
        with open(extensions, "w") as f:  # the island's terminal profile (clearing/tls): only the CA differs
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "30", "-extfile", extensions])
        return iso.TlsIdentity(self.tls_files[0], cert, key)

    def foreign_server(self):
        """(cert, key) of a server certificate for 127.0.0.1 from the attacker's own CA: a fake clearing."""
        d = os.path.join(self.dir, "foreign")
        self.foreign_identity("SHOP0001")  # makes the CA
        key, csr, cert = (os.path.join(d, "server" + ext) for ext in (".key", ".csr", ".pem"))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", csr, "-subj", "/O=Coconut Card server/CN=coconut-clearingd"])
        extensions = os.path.join(d, "server.ext")
        with open(extensions, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.pem"), "-CAkey", os.path.join(d, "ca.key"),
             "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", extensions])
        return cert, key

    def terminal_tls_options(self, terminal_id):
        """coconut-terminal's options to reach the clearing: --ca/--cert/--key, or --insecure in plain mode (on a
        build that has it)."""
        if self.plain:
            upload_help = run([self.terminal, "upload", "--help"], check=False).stdout
            return ["--insecure"] if "--insecure" in upload_help else []
        identity = self.identities[terminal_id]
        return ["--ca", identity.ca, "--cert", identity.cert, "--key", identity.key]

    def upload(self, queue, terminal_id, port=None, timeout_ms=5000):
        """`coconut-terminal upload` of a queue to the clearing (or to `port`); (exit code, JSON report or {})."""
        result = run([self.terminal, "--json", "--queue", os.path.join(self.dir, queue), "upload", "--clearing",
                      f"127.0.0.1:{port or self.port}", "--terminal-id", terminal_id, "--timeout-ms", str(timeout_ms),
                      *self.terminal_tls_options(terminal_id)], check=False, timeout=120)
        try:
            report = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = {}
        return result.returncode, report, result.stderr.strip()

    def identity(self, terminal_id):
        return None if self.plain else self.identities[terminal_id]

    # ---- the daemon ----------------------------------------------------------------------------------------------

    def start_daemon(self, extra=()):
        ready = os.path.join(self.dir, "clearingd.port")
        http_ready = os.path.join(self.dir, "http.port")
        for path in (ready, http_ready):
            if os.path.exists(path):
                os.remove(path)
        argv = [self.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", self.data,
                "--hsm", f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.key, "--ready-file", ready,
                "--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready, "--http-token-rate", "1000",
                "--writer-cpu", "off"]
        if self.plain:
            if self.supports("--insecure-terminals"):
                argv.append("--insecure-terminals")
        else:
            ca, cert, key = self.tls_files
            argv += ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]
        self.daemon = subprocess.Popen(argv + list(extra), stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(self.dir, "clearingd.log"), "a"))
        self.port = wait_ready_file(ready, self.daemon, "coconut-clearingd")
        self.http_port = wait_ready_file(http_ready, self.daemon, "coconut-clearingd (HTTP)")
        wait_port(self.port)
        wait_port(self.http_port)
        self.http_tls = self.detect_https()
        self.wait_healthy()
        log(f"  coconut-clearingd pid {self.daemon.pid}: ISO 8583 on {self.port} ({'plain' if self.plain else 'TLS'}), "
            f"HTTP{'S' if self.http_tls else ''} on {self.http_port}")

    def detect_https(self):
        """Whether the HTTP listener speaks TLS (it does when the daemon was given a server certificate)."""
        if self.plain:
            return False
        ctx = ssl.create_default_context(cafile=self.tls_files[0])
        try:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
        except (ssl.SSLError, OSError):
            return False

    def wait_healthy(self):
        deadline = time.time() + WAIT_S
        while True:
            try:
                status, _, _ = self.http("GET", "/healthz", token=False)
                if status == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"coconut-clearingd /healthz not 200 within {WAIT_S} s")
            time.sleep(0.05)

    def stop_daemon(self):
        code = None
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            code = self.daemon.wait(timeout=WAIT_S + 15)
        elif self.daemon:
            code = self.daemon.returncode
        self.daemon = None
        return code

    def close(self):
        for process in (self.daemon, self.hsm_process):
            if process and process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT_S)
        self.daemon = self.hsm_process = None

    def link(self, terminal_id=None, identity="own", sign_on=True, stan=1):
        """A terminal connection; identity "own" = the terminal's own certificate (TLS mode), or a TlsIdentity."""
        if identity == "own":
            identity = self.identity(terminal_id) if terminal_id else None
        link = iso.Link(self.port, identity)
        if sign_on:
            answer = link.call("0800", {7: utc_field7(), 11: f"{stan:06d}", 41: terminal_id, 70: "001"})
            assert answer is not None and answer.get(39) == "00", f"sign-on of {terminal_id}: {answer}"
        return link

    def http(self, method, path, body=None, token=True):
        """(status, parsed body or text, raw length) from the daemon's HTTP API, with the clerk's token."""
        if self.http_tls:
            ctx = ssl.create_default_context(cafile=self.tls_files[0])
            conn = http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=60, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        headers = {"Authorization": "Bearer " + self.clerk_token} if token else {}
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed, len(raw)

    def set_terminal_status(self, terminal_id, status):
        return self.http("PUT", f"/v1/clerk/terminals/{terminal_id}/status", {"status": status})

    # ---- cards and terminals --------------------------------------------------------------------------------------

    def card_image(self, card):
        return os.path.join(self.dir, f"card{card}.img")

    def purchases(self, card, psam, queue, amount, repeat=1):
        """`repeat` genuine purchases of `amount` fen on card `card` at the terminal holding PSAM `psam`; returns
        their queue records (coconut-terminal queue list --json), oldest first, only the new ones."""
        before = self.queue_records(queue)
        run([self.terminal, "--json", "--card", self.card_image(card), "--psam", os.path.join(self.dir, f"psam{psam}.img"),
             "--queue", os.path.join(self.dir, queue), "--hotlist", os.path.join(self.dir, "hotlist.bin"),
             "purchase", "--amount-fen", str(amount), "--repeat", str(repeat)], timeout=300)
        after = self.queue_records(queue)
        return after[len(before):]

    def queue_records(self, queue):
        path = os.path.join(self.dir, queue)
        if not os.path.exists(path):
            return []
        return json.loads(run([self.terminal, "--json", "--queue", path, "queue", "list"]).stdout)["transactions"]

    def card_balance(self, card):
        return json.loads(run([self.vcard, "info", self.card_image(card), "--json"]).stdout)["balance_fen"]

    def admin(self, what):
        return json.loads(run([self.clearingd, "admin", "--data", self.data, "list", what]).stdout)

    def risk_kinds(self):
        return [f["kind"] for f in self.admin("risk")]

    def shadow(self, card):
        entry = next(c for c in self.admin("cards") if c["asn"] == CARDS[card])
        return entry.get("ledger_shadow_balance_fen"), entry["shadow_balance_fen"]

    def payables(self):
        return {p["id"]: p.get("purse_payable_fen", 0) for p in self.admin("participants")}

    def data_bytes(self):
        """Bytes the LMDB environment occupies on disk (allocated blocks: the map may be sparse)."""
        total = 0
        for name in os.listdir(self.data):
            total += os.stat(os.path.join(self.data, name)).st_blocks * 512
        return total

    # ---- the verdict on money ------------------------------------------------------------------------------------

    def verify_no_money_moved(self, verdict, payables, medical=None):
        """Stops the daemon, then: `check` passes; every card's shadow equals the card image; payables (purse,
        {participant: fen}) and medical balances ({card index: fen}, default: untouched) are what genuine
        transactions made them."""
        code = self.stop_daemon()
        verdict.expect(code == 0, "coconut-clearingd stopped with exit 0 on SIGTERM", code)
        result = run([self.clearingd, "check", "--data", self.data, "--json"], check=False)
        try:
            report = json.loads(result.stdout)
        except ValueError:
            report = {"ok": False, "problems": [result.stdout + result.stderr]}
        verdict.expect(result.returncode == 0 and report.get("ok"), "coconut-clearingd check passes",
                       f"exit {result.returncode}, problems {report.get('problems')}")
        cards = {c["asn"]: c for c in self.admin("cards")}
        for index, asn in enumerate(CARDS):
            card = self.card_balance(index)
            entry = cards[asn]
            verdict.expect(entry.get("ledger_shadow_balance_fen") == card == entry["shadow_balance_fen"],
                           f"card {index}: shadow (ledger {entry.get('ledger_shadow_balance_fen')}, mirror "
                           f"{entry['shadow_balance_fen']}) equals the card's balance {card}")
        got = self.payables()
        for participant, fen in payables.items():
            verdict.expect(got.get(participant, 0) == fen, f"participant {participant}: payable {fen} fen (what genuine "
                           f"transactions earned)", got.get(participant, 0))
        expected_medical = {i: MEDICAL_FEN for i in range(len(CARDS))}
        expected_medical.update(medical or {})
        for index, fen in expected_medical.items():
            got_medical = cards[CARDS[index]].get("medical_balance_fen")
            verdict.expect(got_medical == fen, f"card {index}: medical account {fen} fen", got_medical)


def wait_ready_file(path, process, what):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} before it was ready")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{what} not ready within {WAIT_S} s")


def wait_port(port):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"port {port} not accepting within {WAIT_S} s")


# ---- a card driven APDU by APDU -------------------------------------------------------------------------------

class CardShell:
    """`coconut-vcard shell IMAGE` as a co-process: one APDU per line (card-os-apdu/vcard/README.md)."""

    def __init__(self, vcard, image):
        self.process = subprocess.Popen([vcard, "shell", image], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def apdu(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline().strip()
        assert line and not line.startswith("ERROR"), (command, line)
        return line[:-4].strip(), line[-4:]

    def select(self, aid):
        _, sw = self.apdu("00A40400" + f"{len(aid) // 2:02X}" + aid + "00")
        assert sw == "9000", (aid, sw)

    def select_purse(self):
        self.select(PURSE_AID)

    def select_ssse(self):
        self.select(SSSE_AID)

    def verify_pin(self, pin=PIN):
        _, sw = self.apdu(f"00200000{len(pin) // 2:02X}{pin}")
        return sw

    def initialize_for_load(self, amount, terminal):
        data, sw = self.apdu(f"805000020B01{amount:08X}{terminal}10")
        assert sw == "9000", sw
        return {"old_balance": int(data[0:8], 16), "atc": int(data[8:12], 16), "key_version": data[12:14],
                "random": data[16:24], "mac1": data[24:32]}

    def credit_for_load(self, date, time_text, mac2):
        data, sw = self.apdu(f"805200000B{date}{time_text}{mac2}04")
        return data if sw == "9000" else None

    def internal_authenticate(self, challenge_hex):
        """(cryptogram or None, SW)."""
        data, sw = self.apdu(f"0088000108{challenge_hex}")
        return (data if sw == "9000" else None), sw

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=WAIT_S)
