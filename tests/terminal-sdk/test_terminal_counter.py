#!/usr/bin/python3
"""coconut-terminal's counter commands against a real coconut-hsmd on loopback (a store with the maintenance
master, a `counter` client with the permission maintenance and a `clearing` client without it):

  in-process  the card and PSAM as image files: the bad inputs and their exit codes (usage 2, hsm_error 37 for
              a missing key file, an HSM not listening, a client without the permission, a non-maintenance
              master), block-card temporary, unblock-card, block-card temporary then permanent (unblock-card
              refused: 9303), return-card (whole balance, TAC recomputed with
              the card's DTK, the card blocked for good), return-card run again (nothing taken twice), a
              blocked card refused by purchase and balance (card_error, 6283).
  pcsc        the same return-card and its rerun through pcscd + vpcd + coconut-vcard serve.

usage: test_terminal_counter.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK COCONUT_HSMD in-process|pcsc
"""

import json
import os
import socket
import subprocess
import time

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal
it.EXIT["hsm_error"] = 37
HSM_START_WAIT_S = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hsm:
    """coconut-hsmd over a fresh store: mk-maintenance = the harness's DAMK master, mk-tac, two clients."""

    def __init__(self, hsmd, workdir):
        self.hsmd = hsmd
        self.store = os.path.join(workdir, "hsm")
        self.process = None
        harness.run([hsmd, "init", "--store", self.store])
        damk = int(harness.MASTER_KEYS["damk"], 16)
        first = 0x0F1E2D3C4B5A69788796A5B4C3D2E1F0
        components = f"{first:032X}\n{first ^ damk:032X}\n"
        harness.run([hsmd, "key", "import", "--store", self.store, "--label", "mk-maintenance", "--version", "1",
                     "--usage", "maintenance"], input_text=components)
        harness.run([hsmd, "key", "import", "--store", self.store, "--label", "mk-tac", "--version", "1", "--usage", "tac"],
                    input_text="00112233445566778899AABBCCDDEEFF\nFFEEDDCCBBAA99887766554433221100\n")
        self.counter_key = os.path.join(workdir, "counter.key")
        self.clearing_key = os.path.join(workdir, "clearing.key")
        harness.run([hsmd, "client", "add", "--store", self.store, "--id", "counter", "--permissions", "maintenance",
                     "--key-out", self.counter_key])
        harness.run([hsmd, "client", "add", "--store", self.store, "--id", "clearing", "--permissions", "tac",
                     "--key-out", self.clearing_key])

    def __enter__(self):
        ready = os.path.join(os.path.dirname(self.store), "hsm.ready")
        self.process = subprocess.Popen([self.hsmd, "serve", "--store", self.store, "--listen", "127.0.0.1:0",
                                         "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + HSM_START_WAIT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if os.path.exists(ready) and open(ready).read().strip():
                self.endpoint = f"127.0.0.1:{int(open(ready).read())}"
                log(f"  coconut-hsmd serving on {self.endpoint} (pid {self.process.pid})")
                return self
            time.sleep(0.02)
        harness.stop_process(self.process)
        raise AssertionError("coconut-hsmd did not start")

    def __exit__(self, *exc):
        harness.stop_process(self.process)
        return False

    def audit(self):
        return open(os.path.join(self.store, "audit.log"), encoding="utf-8").read()


def counter_card_profile(tools, balance_fen):
    """The harness's card with explicit keys (so the test knows the DTK) and the DAMK derived from the HSM's
    maintenance master exactly as issuance derives it."""
    profile = it.explicit_card_profile(tools.tac_check, balance_fen=balance_fen)
    profile["keys"]["damk"] = harness.run([tools.tac_check, "card-key", harness.MASTER_KEYS["damk"], harness.ISSUER_ID,
                                           harness.ASN]).stdout.strip()
    return profile


def hsm_args(hsm, key=None, master=None):
    args = ["--hsm", hsm.endpoint, "--hsm-key", key or hsm.counter_key]
    return args + (["--maintenance-key", master] if master else [])


def card_info(vcard, image):
    return it.card_info(vcard, image)


def bad_inputs(vcard, workdir, tools, hsm):
    image = harness.personalize(vcard, workdir, "bad", counter_card_profile(tools, 1000))
    terminal = it.Terminal(tools, workdir, ["--card", image], queue="bad-queue.log")
    log("bad inputs")
    terminal.run(["block-card"], expect="usage")                                    # --hsm and --hsm-key required
    out = terminal.run(["block-card", "--hsm", "127.0.0.1:1,,127.0.0.1:2", "--hsm-key", hsm.counter_key], expect="usage")
    assert "--hsm" in out.stderr and "empty" in out.stderr, out.stderr
    out = terminal.run(["block-card"] + hsm_args(hsm, master="Not A Label!"), expect="usage")
    assert "--maintenance-key" in out.stderr, out.stderr
    out = terminal.run(["block-card"] + hsm_args(hsm, key=os.path.join(workdir, "missing.key")), expect="hsm_error")
    assert "--hsm-key" in out.stderr, out.stderr
    out = terminal.run(["block-card", "--hsm", f"127.0.0.1:{free_port()}", "--hsm-key", hsm.counter_key], expect="hsm_error")
    assert "nothing was done to the card" in out.stderr, out.stderr
    out = terminal.run(["block-card"] + hsm_args(hsm, key=hsm.clearing_key), expect="hsm_error")
    error = json.loads(out.stdout)["error"]
    check_equal("client without the permission", (error["code"], "not_permitted" in error["message"]), ("hsm_error", True))
    out = terminal.run(["block-card"] + hsm_args(hsm, master="mk-tac"), expect="hsm_error")
    assert "wrong_key_usage" in out.stdout, out.stdout
    terminal.run(["return-card"] + hsm_args(hsm), expect="usage")                  # return-card needs the PSAM
    check_equal("card untouched by the refusals", (card_info(vcard, image)["application_block"],
                                                   card_info(vcard, image)["balance_fen"]), (0, 1000))
    terminal.run(["block-card", "--permanent", "--hsm", hsm.endpoint], expect="usage")  # --hsm-key missing


def in_process(vcard, workdir, tools, hsm):
    bad_inputs(vcard, workdir, tools, hsm)

    log("block-card: temporary, then permanent; a blocked card refuses purchases with 6283")
    psam = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    blocked = harness.personalize(vcard, workdir, "blocked", counter_card_profile(tools, 700))
    terminal = it.Terminal(tools, workdir, ["--card", blocked, "--psam", psam], queue="blocked-queue.log")
    outcome = terminal.json(["block-card"] + hsm_args(hsm))
    check_equal("block-card", (outcome["asn"], outcome["blocked"], outcome["was_blocked"]), (harness.ASN, "temporary", False))
    check_equal("card blocked (temporary)", card_info(vcard, blocked)["application_block"], 1)
    error = json.loads(terminal.run(["purchase", "--amount-fen", "100"], expect="card_error").stdout)["error"]
    check_equal("purchase on a blocked card", error["sw"], "6283")
    terminal.run(["balance"], expect="card_error")
    outcome = terminal.json(["unblock-card"] + hsm_args(hsm))
    check_equal("unblock-card", (outcome["unblocked"], outcome["was_blocked"]), (True, True))
    check_equal("balance after the unblock", terminal.json(["balance"])["balance_fen"], 700)
    terminal.json(["block-card"] + hsm_args(hsm))
    outcome = terminal.json(["block-card", "--permanent"] + hsm_args(hsm))
    check_equal("block-card --permanent", (outcome["blocked"], outcome["was_blocked"]), ("permanent", True))
    check_equal("card blocked (permanent), balance kept", (card_info(vcard, blocked)["application_block"],
                                                           card_info(vcard, blocked)["balance_fen"]), (2, 700))
    error = json.loads(terminal.run(["unblock-card"] + hsm_args(hsm), expect="card_error").stdout)["error"]
    check_equal("unblock-card on a permanent block", error["sw"], "9303")

    log("return-card: the whole balance by a TAC-proven purchase, then the permanent block")
    card = harness.personalize(vcard, workdir, "returned", counter_card_profile(tools, 4321))
    terminal = it.Terminal(tools, workdir, ["--card", card, "--psam", psam], queue="return-queue.log")
    outcome = terminal.json(["return-card"] + hsm_args(hsm))
    check_equal("return: balance claimed, debit amount", (outcome["balance_fen"], outcome["debit"]["amount_fen"]), (4321, 4321))
    check_equal("return: debit type, balance after", (outcome["debit"]["type"], outcome["debit"]["balance_after_fen"]), ("06", 0))
    info = card_info(vcard, card)
    check_equal("card after the return", (info["balance_fen"], info["application_block"]), (0, 2))
    queued = terminal.queue()["transactions"]
    check_equal("queued once", [t["amount_fen"] for t in queued], [4321])
    it.verify_tacs(tools, queued, "the return's debit")
    again = terminal.json(["return-card"] + hsm_args(hsm))
    check_equal("return again: already blocked, nothing taken", (again["was_blocked"], again["debit"]), (True, None))
    check_equal("still queued once", len(terminal.queue()["transactions"]), 1)
    audit = hsm.audit()
    assert '"client":"counter","command":"maintenance-mac"' in audit, audit[-2000:]
    assert "APPLICATION BLOCK (permanent) of ASN " + harness.ASN in audit, audit[-2000:]


def pcsc(vcard, workdir, tools, hsm):
    card = harness.personalize(vcard, workdir, "card", counter_card_profile(tools, 2500))
    psam = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])
    with harness.PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card, psam)
        stack.wait_card(0)
        stack.wait_card(1)
        log("return-card through pcscd + vpcd")
        outcome = terminal.json(["return-card"] + hsm_args(hsm))
        check_equal("return: debit", (outcome["balance_fen"], outcome["debit"]["amount_fen"], outcome["debit"]["type"]),
                    (2500, 2500, "06"))
        error = json.loads(terminal.run(["balance"], expect="card_error").stdout)["error"]
        check_equal("balance of the returned card", error["sw"], "6283")
        again = terminal.json(["return-card"] + hsm_args(hsm))
        check_equal("return again", (again["was_blocked"], again["debit"]), (True, None))
        queued = terminal.queue()["transactions"]
        check_equal("queued once", [t["amount_fen"] for t in queued], [2500])
        it.verify_tacs(tools, queued, "the return's debit (PC/SC)")
    info = card_info(vcard, card)
    check_equal("card image after the return", (info["balance_fen"], info["application_block"]), (0, 2))


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    hsmd, mode = os.path.abspath(extra[2]), extra[3]
    with Hsm(hsmd, workdir) as hsm:
        if mode == "in-process":
            in_process(vcard, workdir, tools, hsm)
        elif mode == "pcsc":
            pcsc(vcard, workdir, tools, hsm)
        else:
            raise AssertionError(f"unknown mode {mode}")


if __name__ == "__main__":
    harness.main(test)
