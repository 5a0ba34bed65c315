#!/usr/bin/python3
"""coconut-terminal with a T=0 card and a T=0 PSAM through pcscd + vpcd: case-4 commands go out without Le
and the data comes back by GET RESPONSE (61xx, docs/CARD-SPEC.md §8). A purchase, a flat tap and an entry/exit
journey end to end; the APDU trace shows the GET RESPONSEs; every TAC verifies with the card's DTK; the queue
matches the card's log and balance.

usage: test_terminal_pcsc_t0.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import re

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    card_image = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(tools.tac_check, protocol="T=0"))
    psam_image = harness.personalize(vcard, workdir, "psam", harness.psam_profile(protocol="T=0"))
    check_equal("card image protocol", it.card_info(vcard, card_image)["protocol"], "T=0")
    terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])
    opening = harness.OPENING_BALANCE_FEN

    with harness.PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        stack.wait_card(1)

        log("purchase on T=0, with the APDU trace")
        result = terminal.run(["--trace", "purchase", "--amount-fen", "321"])
        record = it.json.loads(result.stdout)
        check_equal("T=0 purchase balance after", record["balance_after_fen"], opening - 321)
        trace = result.stderr
        # INITIALIZE FOR PURCHASE without Le, answered 61 0F, then 00 C0 00 00 0F.
        check_equal("INITIALIZE FOR PURCHASE sent as case 3 (no Le)",
                    re.search(r"apdu > 805001020B01[0-9A-F]{20}\n", trace) is not None, True)
        check_equal("card answered 61xx", re.search(r"apdu < 61[0-9A-F]{2} ", trace) is not None, True)
        check_equal("GET RESPONSE followed", "apdu > 00C00000" in trace, True)

        log("transit on T=0")
        flat = terminal.json(["tap", "--line", "1", "--station", "4"])
        check_equal("flat tap", (flat["result"], flat["fare_fen"]), ("charged_flat", 200))
        entry = terminal.json(["tap", "--line", "8", "--station", "1"])
        exit_tap = terminal.json(["tap", "--line", "8", "--station", "2"])
        check_equal("entry / exit one stop", (entry["result"], exit_tap["result"], exit_tap["fare_fen"]),
                    ("entered", "exited", 150))
        check_equal("balance through T=0", terminal.json(["balance"])["balance_fen"], opening - 321 - 200 - 150)
        check_equal("cardholder through T=0", terminal.json(["holder"])["name"], "王小椰")

        queue = terminal.queue()
        check_equal("queued ATCs", [t["atc"] for t in queue["transactions"]], [0, 1, 2, 3])
        it.verify_tacs(tools, queue["transactions"], "the T=0 records")
        check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
        it.check_queue_matches_card(vcard, card_image, queue, opening)


if __name__ == "__main__":
    harness.main(test)
