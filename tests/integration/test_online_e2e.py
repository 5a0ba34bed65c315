"""The online flows end to end through the real stack: pcscd + vpcd + `coconut-vcard serve` (cards and PSAMs) +
`coconut-hsmd` + `coconut-clearingd`, driven by `coconut-terminal` as three terminals would be:

  TOPUP001 (a shop's top-up point)   load a card online (0200/0210, CREDIT FOR LOAD, 0220); a lost
                                     card's load is declined
  BUS00001 (a bus validator)         hotlist sync (the lost card), offline taps of two cards (the lost
                                     card refused), upload (0320)
  CLINIC01 (a clinic POS)            card A pays 50.00 CNY: 30.00 from the medical account (partial
                                     approval 10), 20.00 from the purse; card B's payment cannot be paid
                                     (purse too low for the remainder): its medical hold is reversed (0400)

Then every terminal uploads and reconciles (0500 balanced); with the daemon stopped each card's shadow
balance (`coconut-clearingd admin list cards`) equals the card's own balance (`coconut-terminal balance`
through pcscd), each medical account shows exactly the completed payment, and `coconut-clearingd check`
passes.

Usage: test_online_e2e.py VCARD TERMINAL HSMD CLEARINGD
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "clearing"))

import pcsc_harness as pcsc  # noqa: E402
from pcsc_harness import CARD_READER, PSAM_READER, ISSUER_ID, MASTER_KEYS, check_equal, log  # noqa: E402
from test_clearingd_it import run, wait_port, wait_ready_file  # noqa: E402
sys.path.insert(0, os.path.join(HERE, ".."))
import tls_island  # noqa: E402  (terminals reach the clearing over mutual TLS: the island CA in coconut-hsmd)

CARDS = {  # ASN → (opening purse, opening medical account), fen
    "A": ("46010000000000000101", 5000, 3000),
    "B": ("46010000000000000102", 2000, 1000),
    "C": ("46010000000000000103", 1000, 0),  # reported lost: on the hotlist
}
TERMINALS = {  # field 41 → (PSAM terminal id, participant)
    "TOPUP001": ("460100000011", 2002),
    "BUS00001": ("460100000012", 1001),
    "CLINIC01": ("460100000013", 3003),
}
PARTICIPANTS = [
    {"id": 1001, "name": "Haikou Bus", "kind": "bus", "bank_account": "6222000011112222", "fee_rate_bp": 30},
    {"id": 2002, "name": "Coconut Shop", "kind": "shop", "bank_account": "6222000033334444"},
    {"id": 3003, "name": "Meilan Clinic", "kind": "clinic", "bank_account": "6222000055556666"},
]
PIN = "123456"
FARES = {"lines": [{"line": 1, "flat_fare_fen": 200, "operator_id": 1001}]}


class Online:
    def __init__(self, tools, workdir, stack):
        self.vcard, self.terminal, self.hsmd, self.clearingd = tools
        self.dir = workdir
        self.stack = stack
        self.hsm = None
        self.daemon = None
        self.served = None

    # ---- issuer side: HSM keys, cards, PSAMs, registry ----
    def setup(self):
        store = os.path.join(self.dir, "hsm")
        run([self.hsmd, "init", "--store", store])
        for label, usage, key in [("mk-tac", "tac", "dtk"), ("mk-load", "load", "dlk"), ("mk-internal-auth", "internal-auth", "iak"),
                                  ("mk-ssse-auth", "ssse-auth", "ssse_iak")]:
            component_1 = os.urandom(16).hex().upper()
            component_2 = f"{int(component_1, 16) ^ int(MASTER_KEYS[key], 16):032X}"
            run([self.hsmd, "key", "import", "--store", store, "--label", label, "--version", "1", "--usage", usage],
                input_text=f"{component_1}\n{component_2}\n")
        self.hsm_key = os.path.join(self.dir, "clearing.key")
        run([self.hsmd, "client", "add", "--store", store, "--id", "clearing", "--permissions", "tac,load,auth",
             "--key-out", self.hsm_key])
        self.tls = tls_island.IslandTls(self.hsmd, store, self.dir)
        self.tls.init_ca()
        ready = os.path.join(self.dir, "hsm.port")
        self.hsm = subprocess.Popen([self.hsmd, "serve", "--store", store, "--listen", "127.0.0.1:0", "--ready-file", ready],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "hsmd.log"), "w"))
        self.hsm_port = wait_ready_file(ready, self.hsm, "coconut-hsmd")
        log(f"  coconut-hsmd pid {self.hsm.pid} on port {self.hsm_port}")
        self.tls.issue_server(self.hsm_port)
        for terminal in TERMINALS:
            self.tls.issue_terminal(self.hsm_port, terminal)

        for name, (asn, purse, _) in CARDS.items():
            profile = pcsc.card_profile(balance_fen=purse)
            profile.update({"asn": asn, "seed": os.urandom(16).hex().upper(), "medical_account": "4601" + asn[4:]})
            pcsc.personalize(self.vcard, self.dir, f"card{name}", profile)
        for terminal, (psam_id, _) in TERMINALS.items():
            profile = pcsc.psam_profile()
            profile["terminal_id"] = psam_id
            pcsc.personalize(self.vcard, self.dir, f"psam-{terminal}", profile)
        with open(os.path.join(self.dir, "fares.json"), "w") as f:
            json.dump(FARES, f)
        registry = {
            "participants": PARTICIPANTS,
            "terminals": [{"terminal_id": t, "psam_terminal_id": p, "participant_id": pid} for t, (p, pid) in TERMINALS.items()],
            "cards": [{"asn": asn, "issuer_id": ISSUER_ID, "purse_balance_fen": purse, "medical_balance_fen": medical}
                      for asn, purse, medical in CARDS.values()],
        }
        path = os.path.join(self.dir, "registry.json")
        with open(path, "w") as f:
            json.dump(registry, f)
        self.data = os.path.join(self.dir, "data")
        out = json.loads(run([self.clearingd, "admin", "--data", self.data, "load", path]).stdout)
        check_equal("cards registered", out["cards"], len(CARDS))
        run([self.clearingd, "admin", "--data", self.data, "card-status", CARDS["C"][0], "lost"])

    def start_daemon(self):
        ready = os.path.join(self.dir, "clearingd.port")
        self.daemon = subprocess.Popen([self.clearingd, "serve", "--iso-listen", "127.0.0.1:0", "--data", self.data,
                                        "--hsm", f"127.0.0.1:{self.hsm_port}", "--hsm-key", self.hsm_key, "--ready-file", ready,
                                        *self.tls.server_args()],
                                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "clearingd.log"), "a"))
        self.port = wait_ready_file(ready, self.daemon, "coconut-clearingd")
        wait_port(self.port)
        log(f"  coconut-clearingd pid {self.daemon.pid} on port {self.port}")

    def stop_daemon(self):
        code = pcsc.stop_process(self.daemon)
        self.daemon = None
        return code

    def close(self):
        for process in (self.daemon, self.hsm):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    # ---- the terminals ----
    def present(self, card, terminal):
        """The card and the terminal's PSAM in the vpcd readers (serve restarted with those images)."""
        if self.served == (card, terminal):
            return
        if self.stack.serve is not None:
            self.stack.stop_serve()
            # pcscd must have seen both cards leave, or the new serve's cards look present at once.
            pcsc.wait_until(lambda: not self.stack.card_present(0) and not self.stack.card_present(1),
                            pcsc.CARD_PRESENT_WAIT_S, "the previous cards to leave", 0.1)
        self.stack.start_serve(os.path.join(self.dir, f"card{card}.img"), os.path.join(self.dir, f"psam-{terminal}.img"))
        self.stack.wait_card(0)
        self.stack.wait_card(1)
        self.served = (card, terminal)

    def term(self, terminal, args, time_text=None, expect=0, input_text=None):
        argv = [self.terminal, "--json", "--reader", CARD_READER, "--psam-reader", PSAM_READER,
                "--queue", os.path.join(self.dir, f"{terminal}.queue"), "--hotlist", os.path.join(self.dir, f"{terminal}.hotlist"),
                "--fares", os.path.join(self.dir, "fares.json")]
        if time_text:
            argv += ["--time", time_text]
        result = run(argv + args, check=False, timeout=60, input_text=input_text)
        if result.returncode != expect:
            raise AssertionError(f"{' '.join(args)}: exit {result.returncode}, expected {expect}\n{result.stdout}\n{result.stderr}")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def online(self, terminal, args, expect=0, input_text=None):
        return self.term(terminal, args + ["--clearing", f"127.0.0.1:{self.port}", "--terminal-id", terminal,
                                           *self.tls.terminal_args(terminal)], expect=expect, input_text=input_text)

    def balance(self, card):
        self.present(card, "BUS00001")
        return self.term("BUS00001", ["balance"])["balance_fen"]


def scenario(tools, workdir):
    stack = pcsc.PcscStack(tools[0], workdir)
    online = Online(tools, workdir, stack)
    try:
        with stack:
            online.setup()
            online.start_daemon()
            stack.start_pcscd()

            log("top-up: card A loads 30.00 CNY online")
            online.present("A", "TOPUP001")
            loaded = online.online("TOPUP001", ["load", "--amount-fen", "3000"])
            check_equal("load confirmed by the 0230", (loaded["confirmed"], loaded["confirmation_code"]), (True, "00"))
            check_equal("card A after the load", online.balance("A"), 8000)
            online.present("C", "TOPUP001")
            refused = online.online("TOPUP001", ["load", "--amount-fen", "3000"], expect=31)
            check_equal("lost card C: load declined", (refused["error"]["code"], refused["error"]["response_code"]), ("declined", "41"))

            log("bus: hotlist sync, taps offline, upload")
            synced = online.online("BUS00001", ["sync-hotlist"])
            check_equal("hotlist download (card C lost)", (synced["to_version"], synced["added"], synced["count"]), (1, 1, 1))
            online.present("C", "BUS00001")
            blocked = online.term("BUS00001", ["tap", "--line", "1", "--station", "3"], "2026-11-26 08:10:00", expect=15)
            check_equal("card C refused at the bus offline", blocked["error"]["code"], "blocked_card")
            online.present("A", "BUS00001")
            for minute in ("08:00", "09:00"):
                tap = online.term("BUS00001", ["tap", "--line", "1", "--station", "3"], f"2026-11-26 {minute}:00")
                check_equal(f"card A tap at {minute}", tap["result"], "charged_flat")
            online.present("B", "BUS00001")
            online.term("BUS00001", ["tap", "--line", "1", "--station", "5"], "2026-11-26 08:30:00")
            uploaded = online.online("BUS00001", ["upload"])
            check_equal("bus upload", (uploaded["sent"], uploaded["approved"], uploaded["remaining"]), (3, 3, 0))

            log("clinic: card A pays 50.00 (medical 30.00 partial approval, purse 20.00); the PIN piped, the purse part sent at once")
            online.present("A", "CLINIC01")
            inquiry = online.online("CLINIC01", ["medical-balance", "--pin-stdin"], input_text=PIN + "\n")
            check_equal("card A's medical account before billing (0100 313000)", inquiry["medical_available_fen"], 3000)
            wrong = online.online("CLINIC01", ["medical-balance", "--pin-stdin"], expect=33, input_text="000000\n")
            check_equal("a wrong PIN: no inquiry", wrong["error"]["code"], "wrong_pin")
            paid = online.online("CLINIC01", ["clinic-pay", "--amount-fen", "5000", "--pin-stdin"], input_text=PIN + "\n")
            check_equal("card A clinic payment", (paid["authorization_code"], paid["medical_fen"], paid["purse_fen"], paid["cash_fen"],
                                                  paid["completion_code"], paid["purse_uploaded"]), ("10", 3000, 2000, 0, "00", True))
            online.present("B", "CLINIC01")
            log("clinic: a PIN on the command line is refused before anything happens (ps and history would show it)")
            on_command_line = online.online("CLINIC01", ["clinic-pay", "--amount-fen", "5000", "--pin", PIN], expect=2)
            check_equal("--pin refused", (on_command_line["error"]["code"], "--pin-stdin" in on_command_line["error"]["message"]),
                        ("usage", True))
            log("clinic: the holder cancels at the PIN prompt (an empty line): nothing held")
            cancelled = online.online("CLINIC01", ["clinic-pay", "--amount-fen", "5000", "--pin-stdin"], expect=39, input_text="\n")
            check_equal("empty PIN", cancelled["error"]["code"], "pin_cancelled")
            log("clinic: card B with --no-cash cannot pay 50.00 (purse 18.00 < remainder 40.00): the hold is reversed")
            refused = online.online("CLINIC01", ["clinic-pay", "--amount-fen", "5000", "--pin-stdin", "--no-cash"], expect=14, input_text=PIN + "\n")
            check_equal("card B refusal", (refused["error"]["code"], refused["error"].get("reversed")), ("insufficient_balance", True))
            log("clinic: card B pays 50.00 — medical 10.00, purse 18.00 (all it holds), 22.00 in cash")
            split = online.online("CLINIC01", ["clinic-pay", "--amount-fen", "5000", "--pin-stdin"], input_text=PIN + "\n")
            check_equal("card B split payment", (split["authorization_code"], split["medical_fen"], split["purse_fen"], split["cash_fen"],
                                                 split["purse_uploaded"]), ("10", 1000, 1800, 2200, True))
            uploaded = online.online("CLINIC01", ["upload"])
            check_equal("clinic upload: the purse parts went at once, nothing left", (uploaded["sent"], uploaded["remaining"]), (0, 0))

            log("end of shift: every terminal reconciles")
            for terminal in TERMINALS:
                out = online.online(terminal, ["reconcile"])
                check_equal(f"{terminal} batch {out['batch_number']} balanced", out["balanced"], True)
                check_equal(f"{terminal}: nothing left to send, no open intent", online.term(terminal, ["queue", "count"]),
                            {"count": 0, "open_intents": 0})

            log("afterwards: shadows = cards, medical accounts, check")
            balances = {card: online.balance(card) for card in CARDS}
            check_equal("card A's own balance", balances["A"], 5000 + 3000 - 400 - 2000)
            check_equal("card B's own balance", balances["B"], 2000 - 200 - 1800)
            check_equal("card C's own balance (never touched)", balances["C"], 1000)
            stack.stop_serve()
            online.stop_daemon()
            listed = {c["asn"]: c for c in json.loads(run([online.clearingd, "admin", "--data", online.data, "list", "cards"]).stdout)}
            for card, (asn, _, _) in CARDS.items():
                entry = listed[asn]
                check_equal(f"card {card}: registry shadow, ledger shadow, card",
                            (entry["shadow_balance_fen"], entry["ledger_shadow_balance_fen"]), (balances[card], balances[card]))
            check_equal("medical accounts: A paid 30.00 of its 30.00, B its 10.00 (the --no-cash hold released first)",
                        (listed[CARDS["A"][0]]["medical_balance_fen"], listed[CARDS["B"][0]]["medical_balance_fen"]), (0, 0))
            result = run([online.clearingd, "check", "--data", online.data, "--json"], check=False)
            report = json.loads(result.stdout)
            check_equal("coconut-clearingd check", (result.returncode, report["ok"]), (0, True))
    finally:
        online.close()


def main():
    if len(sys.argv) != 5:
        sys.exit(f"usage: {sys.argv[0]} VCARD TERMINAL HSMD CLEARINGD")
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-online-e2e-")
    try:
        scenario(tools, workdir)
    except Exception as error:  # noqa: BLE001 — report, keep the directory for the post-mortem
        log(f"FAILED: {error}\n(work directory kept: {workdir})")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    log("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
