#!/usr/bin/python3
"""Power-cut injection through the real stack: `coconut-vcard serve --tear-after N` cuts the card's power
at its N-th durable write while `coconut-terminal purchase` runs through pcscd + vpcd. For every durable
write a purchase makes, with the write torn (--tear-bytes half: the image keeps the state before it) and
complete (--tear-bytes all: the command is in the image, its response lost):
  - the terminal reports card_removed (exit 10), whichever write it was;
  - serve exits 3 and pcscd sees the card removed;
  - the image holds exactly the state before the command, or (the DEBIT written whole) after it;
  - re-inserted (serve started again on the same image), `coconut-terminal recover` resolves the debit
    intent: the queue holds every debit the card performed exactly once (queued ATCs = 0 .. the card's
    offline ATC - 1, each once; every record of the card's own EF18 log matched once), money is conserved
    (opening balance = card balance + queued charges), no intent stays open;
  - the next purchase on the re-inserted card succeeds.
At the end every queued TAC verifies with the card's DTK (sdk_tac_check).

usage: test_vcard_tear.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "terminal-sdk"))

import pcsc_harness as harness  # noqa: E402
from pcsc_harness import check_equal, log  # noqa: E402
import terminal_it as it  # noqa: E402  (the terminal's CLI, the card's own state, the TAC check)

OPENING_BALANCE_FEN = 10000
SERVE_EXIT_POWER_CUT = 3
AMOUNT_FEN = 100


def serve(stack, card_image, psam_image, extra_args=()):
    stack.start_serve(card_image, psam_image, extra_args)
    stack.wait_card(0)
    stack.wait_card(1)


def durable_writes_of_one_purchase(stack, terminal, card_image, psam_image):
    """One purchase on a freshly started serve with -v: the card's durable writes it logs, in order."""
    serve(stack, card_image, psam_image, ["-v"])
    start = len(stack.serve_log_text())
    terminal.json(["purchase", "--amount-fen", str(AMOUNT_FEN)])
    check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
    wait_removed(stack)
    logged = stack.serve_log_text()[start:]
    return len(re.findall(rf"serve\[{re.escape(card_image)}\]: durable write \d+", logged))


def wait_removed(stack):
    harness.wait_until(lambda: not stack.card_present(0) and not stack.card_present(1), harness.CARD_PRESENT_WAIT_S,
                       "pcscd to see both cards removed", 0.1)


def tear_once(vcard, stack, terminal, card_image, psam_image, write_number, tear_bytes, debit_write):
    what = f"power cut at write {write_number} ({tear_bytes})"
    before = it.card_info(vcard, card_image)
    queued_before = len(terminal.queue()["transactions"])
    serve(stack, card_image, psam_image, ["--tear-after", str(write_number), "--tear-bytes", tear_bytes])
    refused = terminal.json(["purchase", "--amount-fen", str(AMOUNT_FEN)], expect="card_removed")
    check_equal(f"{what}: the terminal reports", refused["error"]["code"], "card_removed")
    try:
        code = stack.serve.wait(timeout=harness.PROCESS_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what}: serve still runs after the cut:\n{stack.serve_log_text()}") from None
    stack.serve = None
    check_equal(f"{what}: serve exit code", code, SERVE_EXIT_POWER_CUT)
    wait_removed(stack)

    after = it.card_info(vcard, card_image)
    debited = write_number == debit_write and tear_bytes == "all"
    expected = (before["balance_fen"] - AMOUNT_FEN, before["offline_atc"] + 1) if debited else \
        (before["balance_fen"], before["offline_atc"])
    check_equal(f"{what}: image balance and offline ATC ({'after' if debited else 'before'} the DEBIT)",
                (after["balance_fen"], after["offline_atc"]), expected)

    log(f"{what}: re-inserted, recover")
    serve(stack, card_image, psam_image)
    recovered = terminal.json(["recover"])
    check_equal(f"{what}: recover recorded / abandoned / open intents",
                (len(recovered["recorded"]), len(recovered["abandoned"]), recovered["open_intents"]),
                (1 if debited else 0, 1 if write_number == debit_write and not debited else 0, 0))
    if debited:
        check_equal(f"{what}: the recovered record is flagged recovered", recovered["recorded"][0]["flags"]["recovered"],
                    True)
    queue = terminal.queue()
    check_equal(f"{what}: records queued", len(queue["transactions"]), queued_before + (1 if debited else 0))
    stack.stop_serve()
    wait_removed(stack)
    it.check_queue_matches_card(vcard, card_image, queue, OPENING_BALANCE_FEN)

    serve(stack, card_image, psam_image)
    paid = terminal.json(["purchase", "--amount-fen", str(AMOUNT_FEN)])
    check_equal(f"{what}: the next purchase on the re-inserted card, balance after", paid["balance_after_fen"],
                after["balance_fen"] - AMOUNT_FEN)
    check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
    wait_removed(stack)


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    card_image = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(
        tools.tac_check, balance_fen=OPENING_BALANCE_FEN))
    psam_image = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    with harness.PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])
        writes = durable_writes_of_one_purchase(stack, terminal, card_image, psam_image)
        log(f"a purchase on a freshly inserted card makes {writes} durable write(s); the last is its DEBIT")
        if writes < 1:
            raise AssertionError("serve -v logged no durable write of the card during a purchase")
        for write_number in range(1, writes + 1):
            for tear_bytes in ("half", "all"):
                tear_once(vcard, stack, terminal, card_image, psam_image, write_number, tear_bytes, writes)
    queue = terminal.queue()
    it.check_queue_matches_card(vcard, card_image, queue, OPENING_BALANCE_FEN)
    it.verify_tacs(tools, queue["transactions"], "all queued records")


if __name__ == "__main__":
    harness.main(test)
