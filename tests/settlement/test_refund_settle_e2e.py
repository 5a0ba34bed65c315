#!/usr/bin/python3
"""A same-day refund end to end through the real processes, then what the cardholder and settlement see
(ISO8583.md §4.10, clearing/README.md "HTTP API", settlement/README.md "Same-day refunds"):

  coconut-hsmd + coconut-clearingd (ISO 8583 on plain TCP, the HTTP API on loopback); coconut-terminal at
  CLINIC01 (card and PSAM in process): clinic-pay takes the medical account, the whole purse and 7.00 CNY in
  cash; clinic-refund --receipt gives the medical part back (0200 200030) and the purse part by a credit
  (0200 / 0220 200000); a purchase at the shop, not refunded.

  history     GET /v1/cards/{n}/history: the visit is one row, state refunded, its refund {medical_fen,
              purse_fen, purse_to card}, amount 0; no row of its own for a refund; the posted parts of all rows
              add up to GET /v1/cards/{n}'s balances.
  settlement  the daemon stopped, coconut-settle run --direct for the day (cut-off just passed): the clinic's
              purse and medical refunds in summary.json, its nets 0, nothing paid to it; the shop paid its purchase; the balance 0; the pain.001 valid (the CLI
              validates it before writing); coconut-clearingd check passes after the postings.

usage: test_refund_settle_e2e.py HSMD CLEARINGD TERMINAL VCARD SETTLE
"""

import datetime
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clearing"))
sys.path.insert(0, os.path.join(HERE, "..", "terminal-sdk"))
import test_clearingd_it as it  # noqa: E402  (the stack: hsmd, clearingd, registry, cards)
from test_terminal_refund import Clinic, medical  # noqa: E402  (CLINIC01 with its PSAM, clinic-pay / clinic-refund)

HAINAN = datetime.timezone(datetime.timedelta(hours=8))
CLINIC_ID, SHOP_ID = 3003, 2002
SETTLE_CONFIG = {"initiator_name": "Coconut Card Clearing",
                 "purse_float": {"name": "Hainan Coconut Bank purse float", "account": "FLOAT0001", "agent_bic": "HNCBCNBJXXX"},
                 "medical_fund": {"name": "Hainan Social Insurance medical fund", "account": "FUND0001", "agent_bic": "HNSICNBJ"}}


def expect(what, got, wanted):
    assert got == wanted, f"{what}: {got!r}, expected {wanted!r}"
    it.log(f"  ok  {what}: {got!r}")


class HttpStack(it.Stack):
    """The integration stack with the HTTP API on loopback and the cards' tokens issued."""

    def issue_tokens(self):
        self.tokens = os.path.join(self.dir, "tokens")
        it.run([self.clearingd, "admin", "--data", self.data, "issue-tokens", "--out", self.tokens])

    def start_daemon(self, extra=()):
        http_ready = os.path.join(self.dir, "http.port")
        if os.path.exists(http_ready):
            os.remove(http_ready)
        super().start_daemon([*extra, "--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready])
        self.http_port = it.wait_ready_file(http_ready, self.daemon, "coconut-clearingd (HTTP)")

    def get(self, path, card_index):
        number = it.CARDS[card_index][4:]
        with open(os.path.join(self.tokens, number + ".token")) as f:
            token = f.read().strip()
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request("GET", path.format(number=number), headers={"Authorization": "Bearer " + token})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 200, (path, response.status, body)
        return json.loads(body)


def shop_purchase(stack, card_index, amount):
    """A purchase at SHOP0001 (its PSAM psam1), uploaded over TCP."""
    it.run(stack.term(card_index, 1, "shop.log") + ["purchase", "--amount-fen", str(amount)])
    it.run([stack.terminal, "--json", "--queue", os.path.join(stack.dir, "shop.log"), "upload", "--clearing",
            f"127.0.0.1:{stack.port}", "--terminal-id", "SHOP0001", "--insecure"])


def phase_history(stack, purse_fen, medical_fen):
    it.log("history: the refunded visit is one row, marked refunded; the posted parts add up to the balances")
    rows = []
    cursor = ""
    for _ in range(20):  # bounded: a few rows only
        page = stack.get("/v1/cards/{number}/history?limit=3" + (f"&cursor={cursor}" if cursor else ""), 1)
        rows += page["rows"]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    visits = [r for r in rows if r["kind"] == "clinic_visit"]
    expect("visit rows", len(visits), 1)
    visit = visits[0]
    expect("visit state", visit["state"], "refunded")
    expect("visit refund", visit["refund"], {"medical_fen": medical_fen, "purse_fen": purse_fen, "purse_to": "card"})
    expect("visit amount", visit["amount_fen"], 0)
    expect("rows of refunds alone", [r["kind"] for r in rows if r["kind"] == "refund"], [])
    card = stack.get("/v1/cards/{number}", 1)
    for account in ("purse", "medical"):
        posted = sum(p["amount_fen"] for r in rows for p in r["parts"] if p["account"] == account and p["state"] == "posted")
        expect(f"posted {account} parts = balance", posted, card[account]["balance_fen"])


def settle_today(stack):
    """coconut-settle run --direct for today's business date, its cut-off a moment ago (the daemon stopped)."""
    now = datetime.datetime.now(HAINAN)
    if (now + datetime.timedelta(seconds=3)).date() != now.date():  # never a cut-off across midnight
        time.sleep(4)
        now = datetime.datetime.now(HAINAN)
    cutoff = now + datetime.timedelta(seconds=1)
    time.sleep(3)  # the cut-off and a settling margin of 1 s have passed
    config = os.path.join(stack.dir, "settle.json")
    with open(config, "w") as f:
        json.dump(SETTLE_CONFIG, f)
    out = os.path.join(stack.dir, "settlement")
    result = subprocess.run([stack.settle, "run", "--date", cutoff.strftime("%Y-%m-%d"), "--cutoff", cutoff.strftime("%H:%M:%S"),
                             "--settling-margin", "1", "--data", stack.data, "--config", config, "--direct", "--out", out],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    cycle = cutoff.strftime("%Y%m%d")
    with open(os.path.join(out, cycle, "summary.json")) as f:
        return json.load(f), os.path.join(out, cycle)


def phase_settlement(stack, purse_fen, medical_fen, shop_fen):
    it.log("settlement: the refunds net the clinic's payments; the shop is paid; the cycle sums to zero")
    stack.stop_daemon()
    summary, cycle_dir = settle_today(stack)
    expect("balance", summary["balance_fen"], 0)
    by_id = {p["id"]: p for p in summary["participants"]}
    clinic = by_id[CLINIC_ID]
    expect("clinic purse", {k: clinic["purse"][k] for k in ("base_fen", "refunds_fen", "fee_fen", "net_fen")},
           {"base_fen": purse_fen, "refunds_fen": purse_fen, "fee_fen": 0, "net_fen": 0})
    expect("clinic medical", {k: clinic["medical"][k] for k in ("base_fen", "refunds_fen", "fee_fen", "net_fen")},
           {"base_fen": medical_fen, "refunds_fen": medical_fen, "fee_fen": 0, "net_fen": 0})
    expect("clinic refund kinds", (clinic["kinds"]["refund_purse"]["count"], clinic["kinds"]["refund_medical"]["count"]), (1, 1))
    expect("shop net", by_id[SHOP_ID]["purse"]["net_fen"], shop_fen)
    expect("payments", [(p["participant_id"], p["amount_fen"]) for p in summary["payments"]], [(SHOP_ID, shop_fen)])
    expect("funding: the float pays the shop only", summary["funding"]["purse_float_fen"], -shop_fen)
    expect("funding: the fund pays nothing", summary["funding"]["medical_fund_fen"], 0)
    with open(os.path.join(cycle_dir, "summary.txt")) as f:
        text = f.read()
    assert "refunds" in text.splitlines()[4], text  # the table's header has the refunds column
    it.log("  ok  summary.txt has the refunds column")
    stack.check()
    it.log("  ok  coconut-clearingd check passes after the postings")


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-refund-settle-")
    stack = HttpStack(tools, workdir)
    stack.settle = os.path.abspath(sys.argv[5])
    with it.kept_if_failed(stack, workdir):
        stack.setup()
        clinic = Clinic(stack)
        stack.issue_tokens()
        stack.start_daemon(["--insecure-terminals"])
        it.log("CLINIC01: a visit paid by the medical account, the purse and cash, then refunded to the card")
        purse_fen = stack.card_balance(1)
        medical_fen = medical(stack, 1)
        paid = clinic.pay(1, medical_fen + purse_fen + 700)
        receipt = os.path.join(stack.dir, "visit.json")
        with open(receipt, "w") as f:
            json.dump(paid, f)
        refunded = json.loads(clinic.refund(1, "--receipt", receipt).stdout)
        expect("refunded", (refunded["result"], refunded["medical_fen"], refunded["purse_fen"]), ("refunded", medical_fen, purse_fen))
        it.log("SHOP0001: a purchase of card 0, not refunded")
        shop_purchase(stack, 0, 1234)
        phase_history(stack, purse_fen, medical_fen)
        phase_settlement(stack, purse_fen, medical_fen, 1234)


if __name__ == "__main__":
    main()
