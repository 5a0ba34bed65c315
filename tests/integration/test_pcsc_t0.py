#!/usr/bin/python3
"""T=0 through pcscd: a card image personalized with "protocol": "T=0" answers case-4 commands with 61xx, and
GET RESPONSE (00 C0 00 00 xx) returns the data, through the real stack. Three clients: pyscard (a whole
purchase with the T=0 rules done by hand), scriptor (raw 61xx, then GET RESPONSE), opensc-tool (which
issues the GET RESPONSE itself and must show the same data).

usage: test_pcsc_t0.py PATH/TO/coconut-vcard
"""

import json
import os

from pcsc_harness import (CARD_READER, OPENING_BALANCE_FEN, PURSE_AID, PcscStack, card_profile, check_equal,
                          expected_ef15, log, main, parse_opensc, parse_scriptor, personalize, psam_profile, run)

HERE = os.path.dirname(os.path.abspath(__file__))
PURCHASE_FEN = 100
PURCHASE_WHEN = "20261126130000"
FCI = "6F31" + "8408" + PURSE_AID + "A525" + "9F080101" + "9F0C1E" + expected_ef15()


def test(vcard, workdir, _extra):
    card_image = personalize(vcard, workdir, "card_t0", card_profile(protocol="T=0"))
    psam_image = personalize(vcard, workdir, "psam", psam_profile())
    check_equal("info protocol", json.loads(run([vcard, "info", "--json", card_image]).stdout)["protocol"], "T=0")

    with PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        stack.wait_card(1)

        log("pyscard: purchase on the T=0 card, 61xx + GET RESPONSE by hand")
        result = json.loads(run(["/usr/bin/python3", os.path.join(HERE, "pyscard_client.py"), "t0",
                                 str(PURCHASE_FEN), PURCHASE_WHEN]).stdout)
        check_equal("negotiated protocol", result["protocol"], "T=0")
        check_equal("SELECT (case 4) status", result["select_sw"], f"61{len(FCI) // 2:02X}")
        check_equal("SELECT (case 4) data before GET RESPONSE", result["select_data"], "")
        check_equal("GET RESPONSE after SELECT", result["fci"], FCI)
        check_equal("GET BALANCE (case 2) answers at once", result["balance"], f"{OPENING_BALANCE_FEN:08X}")
        check_equal("INITIALIZE FOR PURCHASE (case 4 without Le) status", result["init_sw"], "610F")
        check_equal("GET RESPONSE after INITIALIZE: balance | ATC", result["init"][:12],
                    f"{OPENING_BALANCE_FEN:08X}0000")
        check_equal("DEBIT (case 4) status", result["debit_sw"], "6108")
        check_equal("balance after the T=0 purchase", result["balance_after"],
                    f"{OPENING_BALANCE_FEN - PURCHASE_FEN:08X}")

        log("scriptor: raw 61xx, then GET RESPONSE")
        script = os.path.join(workdir, "t0.scriptor")
        with open(script, "w", encoding="utf-8") as out:
            out.write(f"00A4040008{PURSE_AID}00\n00C00000{len(FCI) // 2:02X}\n")
        responses = parse_scriptor(run(["scriptor", "-r", CARD_READER, script]).stdout)
        check_equal("scriptor SELECT", responses[0], {"data": "", "sw": f"61{len(FCI) // 2:02X}"})
        check_equal("scriptor GET RESPONSE", responses[1], {"data": FCI, "sw": "9000"})

        log("opensc-tool: it sends GET RESPONSE itself")
        responses = parse_opensc(run(["opensc-tool", "-r", CARD_READER, "-s", f"00A4040008{PURSE_AID}00"]).stdout)
        check_equal("opensc-tool SELECT on the T=0 card", responses[-1], {"data": FCI, "sw": "9000"})

        check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
        check_equal("pcscd exit code on SIGTERM", stack.stop_pcscd(), 0)


if __name__ == "__main__":
    main(test)
