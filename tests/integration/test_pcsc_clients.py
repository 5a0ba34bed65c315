#!/usr/bin/python3
"""Real PC/SC: the card and the PSAM served by `coconut-vcard serve` through pcscd + vpcd, driven by three
independent clients (a pyscard script, opensc-tool -s, scriptor) that must all read the same exact bytes:
SELECT the purse, GET BALANCE, READ BINARY EF15, READ RECORD EF18 (after a purchase, so the log has a record).

usage: test_pcsc_clients.py PATH/TO/coconut-vcard
"""

import json
import os

from pcsc_harness import (CARD_READER, OPENING_BALANCE_FEN, PURSE_AID, TERMINAL_ID, PcscStack, card_profile,
                          check_equal, expected_ef15, log, main, parse_opensc, parse_scriptor, personalize,
                          psam_profile, run, shell)

HERE = os.path.dirname(os.path.abspath(__file__))
PURCHASE_FEN = 200
PURCHASE_WHEN = "20261126120000"  # date(4) time(3) the terminal sends, BCD

READ_APDUS = [f"00A4040008{PURSE_AID}00", "805C000204", "00B095001E", "00B201C417"]


def test(vcard, workdir, _extra):
    card_image = personalize(vcard, workdir, "card", card_profile())
    psam_image = personalize(vcard, workdir, "psam", psam_profile())
    balance_after = OPENING_BALANCE_FEN - PURCHASE_FEN
    # EF18 record 1: ATC 0001 | overdraft 000000 | amount | type 06 | terminal id | date | time.
    ef18_expected = f"0001000000{PURCHASE_FEN:08X}06{TERMINAL_ID}{PURCHASE_WHEN}"
    ef15_expected = expected_ef15()

    with PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        stack.wait_card(1)

        log("client 1: pyscard purchase (card INIT -> PSAM 80 70 -> DEBIT -> PSAM 80 72)")
        result = run(["/usr/bin/python3", os.path.join(HERE, "pyscard_client.py"), "purchase", str(PURCHASE_FEN),
                      PURCHASE_WHEN])
        purchase = json.loads(result.stdout)
        check_equal("pyscard purchase: balance before", purchase["balance_before"], f"{OPENING_BALANCE_FEN:08X}")
        check_equal("pyscard purchase: PSAM terminal serial", purchase["terminal_serial"], "00000001")

        log("client 1: pyscard reads")
        read = json.loads(run(["/usr/bin/python3", os.path.join(HERE, "pyscard_client.py"), "read"]).stdout)
        check_equal("pyscard GET BALANCE", read["balance"], f"{balance_after:08X}")
        check_equal("pyscard READ BINARY EF15", read["ef15"], ef15_expected)
        check_equal("pyscard READ RECORD EF18 #1", read["ef18_1"], ef18_expected)
        # FCI (docs/CARD-SPEC.md §1): 6F L 84 L AID A5 L { 9F08 01 version, 9F0C 1E EF15 }.
        fci = "6F31" + "8408" + PURSE_AID + "A525" + "9F080101" + "9F0C1E" + ef15_expected
        check_equal("pyscard SELECT purse FCI", read["transcript"][0]["response"], fci)

        log("client 2: opensc-tool -s")
        args = ["opensc-tool", "-r", CARD_READER]
        for apdu in READ_APDUS:
            args += ["-s", apdu]
        responses = parse_opensc(run(args).stdout)
        # opensc-tool probes the card with its own APDUs first; ours are the last four answers.
        responses = responses[-4:]
        check_equal("opensc-tool status words", [r["sw"] for r in responses], ["9000"] * 4)
        check_equal("opensc-tool SELECT purse FCI", responses[0]["data"], fci)
        check_equal("opensc-tool GET BALANCE", responses[1]["data"], f"{balance_after:08X}")
        check_equal("opensc-tool READ BINARY EF15", responses[2]["data"], ef15_expected)
        check_equal("opensc-tool READ RECORD EF18 #1", responses[3]["data"], ef18_expected)

        log("client 3: scriptor")
        script = os.path.join(workdir, "read.scriptor")
        with open(script, "w", encoding="utf-8") as out:
            out.write("# select the purse, balance, EF15, EF18 record 1\n" + "\n".join(READ_APDUS) + "\n")
        responses = parse_scriptor(run(["scriptor", "-r", CARD_READER, script]).stdout)
        check_equal("scriptor status words", [r["sw"] for r in responses], ["9000"] * 4)
        check_equal("scriptor SELECT purse FCI", responses[0]["data"], fci)
        check_equal("scriptor GET BALANCE", responses[1]["data"], f"{balance_after:08X}")
        check_equal("scriptor READ BINARY EF15", responses[2]["data"], ef15_expected)
        check_equal("scriptor READ RECORD EF18 #1", responses[3]["data"], ef18_expected)

        check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
        check_equal("pcscd exit code on SIGTERM", stack.stop_pcscd(), 0)

    log("the image holds the purchase after serve stopped (coconut-vcard shell)")
    lines = shell(vcard, card_image, READ_APDUS)
    check_equal("shell after serve", lines, [fci + " 9000", f"{balance_after:08X} 9000", ef15_expected + " 9000",
                                             ef18_expected + " 9000"])


if __name__ == "__main__":
    main(test)
