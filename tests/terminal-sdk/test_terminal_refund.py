#!/usr/bin/python3
"""coconut-terminal clinic-pay then clinic-refund --receipt against the real stack on loopback (coconut-hsmd +
coconut-clearingd serving plain TCP, the card and the clinic's PSAM in process):

  bad inputs    no reference at all (usage 2); a receipt file missing, not JSON, without the card, with a hold
                but no amount (receipt_error 43, the member named); --purse-cash needs no card
  card credit   a visit paid by the medical account, the purse and cash; its receipt (--json) names the hold
                and the purchase; the refund puts the medical account and the card back (shadow = card),
                prints the cash to hand back; a second refund of the same receipt is refused 94 (declined 31)
                and changes nothing; another card in the reader is wrong_card (41)
  cash          a second visit refunded with --purse-cash: the card keeps its balance, the cash includes the
                purse part; a credit after it is refused 94; a text receipt of a payment ends with its refund
                reference
  options       the reference given with options: a bad PSAM terminal id or a purchase without its amount (usage
                2), the medical part alone (--skip-purse), then again with the purse part in cash (the medical
                part booked once); 0500 after all the refunds balances (reconcile exit 0); `check` passes.

usage: test_terminal_refund.py HSMD CLEARINGD TERMINAL VCARD
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clearing"))
import test_clearingd_it as it  # noqa: E402  (the stack: hsmd, clearingd, registry, cards; ISO 8583 codec)

EXIT = {"usage": 2, "declined": 31, "wrong_card": 41, "receipt_error": 43}
PIN = "123456"
CLINIC_PSAM = "460100000003"


def expect(what, got, wanted):
    assert got == wanted, f"{what}: {got!r}, expected {wanted!r}"
    it.log(f"  ok  {what}: {got!r}")


class Clinic:
    """The clinic's terminal CLINIC01: card N in process, the clinic's PSAM, its own queue."""

    def __init__(self, stack):
        self.stack = stack
        stack.personalize("psam-clinic", {"kind": "psam", "terminal_id": CLINIC_PSAM, "purchase_key": it.MASTER_KEYS["dpk"],
                                          "key_level": "master", "issuer_id": it.ISSUER_ID, "key_index": 1, "key_version": 1,
                                          "terminal_serial": 1})
        path = os.path.join(stack.dir, "clinic.json")
        with open(path, "w") as f:
            json.dump(it.CLINIC, f)
        it.run([stack.clearingd, "admin", "--data", stack.data, "load", path])

    def argv(self, card, command, *extra):
        return [self.stack.terminal, "--json", "--card", os.path.join(self.stack.dir, f"card{card}.img"),
                "--psam", os.path.join(self.stack.dir, "psam-clinic.img"), "--queue", os.path.join(self.stack.dir, "clinic.log"),
                "--hotlist", os.path.join(self.stack.dir, "hotlist.bin"), command, *extra, "--clearing",
                f"127.0.0.1:{self.stack.port}", "--terminal-id", "CLINIC01", "--insecure"]

    def pay(self, card, amount):
        result = it.run(self.argv(card, "clinic-pay", "--amount-fen", str(amount), "--pin-stdin"), input_text=PIN + "\n")
        return json.loads(result.stdout)

    def refund(self, card, *extra, check=True):
        return it.run(self.argv(card, "clinic-refund", *extra), check=check)


def medical(stack, index):
    return {c["asn"]: c for c in stack.admin("cards")}[it.CARDS[index]]["medical_balance_fen"]


def receipt_file(stack, name, document):
    path = os.path.join(stack.dir, name)
    with open(path, "w") as f:
        f.write(document if isinstance(document, str) else json.dumps(document))
    return path


def phase_bad_inputs(stack, clinic):
    it.log("bad inputs: no reference, receipt files missing, not JSON, incomplete")
    result = clinic.refund(0, check=False)
    expect("no reference: exit", result.returncode, EXIT["usage"])
    assert "--receipt FILE" in json.loads(result.stdout)["error"]["message"], result.stdout
    cases = [
        ("missing.json", None, "cannot read the receipt"),
        ("garbled.json", "{\"refund_reference\": {\"card\": ", "not JSON"),
        ("no-card.json", {"refund_reference": {"hold": None, "medical_fen": 0, "purchase": None, "purse_fen": 100, "cash_fen": 0}},
         "\"card\" is missing"),
        ("bad-card.json", {"card": "4601", "hold": None, "medical_fen": 0, "purchase": None, "purse_fen": 0, "cash_fen": 0},
         "not 20 decimal digits"),
        ("no-amount.json", {"card": it.CARDS[0], "hold": {"terminal_id": "CLINIC01", "batch": 1, "stan": 3}, "purchase": None,
                            "purse_fen": 0, "cash_fen": 0}, "\"medical_fen\" is missing"),
        ("zero.json", {"card": it.CARDS[0], "hold": {"terminal_id": "CLINIC01", "batch": 1, "stan": 3}, "medical_fen": 0,
                       "purchase": None, "purse_fen": 0, "cash_fen": 0}, "without the amount"),
    ]
    for name, document, wanted in cases:
        path = os.path.join(stack.dir, name) if document is None else receipt_file(stack, name, document)
        result = clinic.refund(0, "--receipt", path, check=False)
        expect(f"{name}: exit", result.returncode, EXIT["receipt_error"])
        message = json.loads(result.stdout)["error"]["message"]
        assert wanted in message and name in message, (name, message)
    help_text = it.run([stack.terminal, "clinic-refund", "--help"]).stdout
    assert "--receipt" in help_text and "43  receipt_error" in help_text, help_text
    it.log("  ok  --help lists the options and exit 43")


def phase_card_credit(stack, clinic):
    it.log("a visit paid by the medical account, the purse and cash; refunded to the card the same day")
    purse_before = stack.card_balance(1)
    medical_before = medical(stack, 1)
    bill = medical_before + purse_before + 700  # the medical account, the whole purse and 7 CNY in cash
    paid = clinic.pay(1, bill)
    reference = paid["refund_reference"]
    expect("card", reference["card"], it.CARDS[1])
    expect("medical part", reference["medical_fen"], medical_before)
    expect("purse part", reference["purse_fen"], purse_before)
    expect("cash part", reference["cash_fen"], 700)
    expect("hold terminal", reference["hold"]["terminal_id"], "CLINIC01")
    expect("purchase PSAM", reference["purchase"]["psam_terminal_id"], CLINIC_PSAM)
    expect("the purse part sent at once", paid["purse_uploaded"], True)
    expect("card after the payment", stack.card_balance(1), 0)
    receipt = receipt_file(stack, "visit1.json", paid)

    result = clinic.refund(2, "--receipt", receipt, check=False)
    expect("another card in the reader: exit", result.returncode, EXIT["wrong_card"])

    refunded = json.loads(clinic.refund(1, "--receipt", receipt).stdout)
    expect("result", refunded["result"], "refunded")
    expect("medical back", refunded["medical_fen"], medical_before)
    expect("purse back", refunded["purse_fen"], purse_before)
    expect("cash to hand back", refunded["cash_fen"], 700)
    expect("credit confirmed", refunded["credit"]["confirmed"], True)
    expect("the credit's record is a refund", refunded["credit"]["record"]["refund"], True)
    expect("card balance", stack.card_balance(1), purse_before)
    expect("medical account", medical(stack, 1), medical_before)
    stack.shadows_match_cards()

    it.log("the same receipt again: refused 94, nothing changes")
    result = clinic.refund(1, "--receipt", receipt, check=False)
    expect("second refund: exit", result.returncode, EXIT["declined"])
    expect("response code", json.loads(result.stdout)["error"]["response_code"], "94")
    expect("card balance unchanged", stack.card_balance(1), purse_before)
    expect("medical account unchanged", medical(stack, 1), medical_before)


def phase_cash(stack, clinic):
    it.log("a visit whose purse part is refunded in cash (--purse-cash), the text receipt")
    medical_before = medical(stack, 2)
    paid = clinic.pay(2, medical_before + 1500)
    purse_after_payment = stack.card_balance(2)
    receipt = receipt_file(stack, "visit2.json", paid["refund_reference"])
    text = it.run([a for a in clinic.argv(2, "clinic-refund", "--receipt", receipt, "--purse-cash") if a != "--json"]).stdout
    cash_line = [line for line in text.splitlines() if line.startswith("cash to hand back")]
    assert "purse (cash)" in text and len(cash_line) == 1 and cash_line[0].split()[-2:] == ["15.00", "CNY"], text
    it.log("  ok  the receipt says the purse part goes back in cash")
    expect("the card keeps its balance", stack.card_balance(2), purse_after_payment)
    expect("medical account back", medical(stack, 2), medical_before)
    stack.shadows_match_cards()
    result = clinic.refund(2, "--receipt", receipt, check=False)
    expect("a credit after the cash refund: response code", json.loads(result.stdout)["error"]["response_code"], "94")

    it.log("the text receipt of a payment ends with its refund reference")
    argv = [a for a in clinic.argv(0, "clinic-pay", "--amount-fen", "900", "--pin-stdin") if a != "--json"]
    text = it.run(argv, input_text=PIN + "\n").stdout
    assert "refund reference" in text and "medical hold    terminal CLINIC01 batch 000001" in text, text
    it.log("  ok  the receipt names the hold for the refund")


def phase_options(stack, clinic):
    it.log("the reference given with options: the medical part alone (--skip-purse), then the rest in cash")
    medical_before = medical(stack, 0)
    paid = clinic.pay(0, medical_before + 400)
    reference = paid["refund_reference"]
    options = ["--asn", reference["card"], "--hold-terminal-id", reference["hold"]["terminal_id"], "--hold-batch",
               str(reference["hold"]["batch"]), "--hold-stan", str(reference["hold"]["stan"]), "--medical-fen",
               str(reference["medical_fen"]), "--purchase-terminal-id", reference["purchase"]["psam_terminal_id"],
               "--purchase-serial", str(reference["purchase"]["terminal_serial"]), "--purse-fen", "400"]
    result = clinic.refund(0, *options[:-1], "--purchase-terminal-id", "4601000000AB", check=False)
    expect("a PSAM terminal id that is not 12 digits: exit", result.returncode, EXIT["usage"])
    result = clinic.refund(0, *options[:-2], check=False)
    expect("a purchase without its amount: exit", result.returncode, EXIT["usage"])
    medical_only = json.loads(clinic.refund(0, *options, "--skip-purse").stdout)
    expect("medical part back", medical_only["medical_fen"], medical_before)
    expect("purse part left", medical_only["purse_fen"], 0)
    expect("medical account", medical(stack, 0), medical_before)
    rest = json.loads(clinic.refund(0, *options, "--purse-cash").stdout)
    expect("the medical part again: answered 00, booked once", (rest["medical_code"], medical(stack, 0)), ("00", medical_before))
    expect("the purse part in cash", rest["cash_fen"], 400)
    stack.shadows_match_cards()


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:5]]
    workdir = tempfile.mkdtemp(prefix="coconut-terminal-refund-")
    stack = it.Stack(tools, workdir)
    with it.kept_if_failed(stack, workdir):
        stack.setup()
        clinic = Clinic(stack)
        stack.start_daemon(["--insecure-terminals"])
        phase_bad_inputs(stack, clinic)
        phase_card_credit(stack, clinic)
        phase_cash(stack, clinic)
        phase_options(stack, clinic)
        it.log("end of shift: the refunds (a medical part refunded twice included) counted on both sides, 0500 balanced")
        reconciled = json.loads(it.run(clinic.argv(0, "reconcile")).stdout)
        expect("balanced", reconciled["balanced"], True)
        stack.check()


if __name__ == "__main__":
    main()
