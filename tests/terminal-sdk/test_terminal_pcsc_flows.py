#!/usr/bin/python3
"""coconut-terminal through the real stack (pcscd + vpcd + coconut-vcard serve, T=1 card and PSAM):
a shop purchase, a flat-fare tap and its repeat inside the window, an entry/exit journey by the fare table,
an unfinished journey charged the maximum fare, a hotlist refusal that leaves balance and ATC unchanged,
the error exits of the CLI; every queued record's TAC is recomputed with the card's DTK, and the queue is
compared with the card's own log and balance.

usage: test_terminal_pcsc_flows.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import datetime
import json

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal
HAINAN = datetime.timezone(datetime.timedelta(hours=8))


def hainan_time(offset_minutes=0):
    now = datetime.datetime.now(HAINAN) + datetime.timedelta(minutes=offset_minutes)
    return now.strftime("%Y-%m-%d %H:%M:%S")


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    card_image = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(tools.tac_check))
    psam_image = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])
    opening = harness.OPENING_BALANCE_FEN
    records = []

    with harness.PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        stack.wait_card(1)

        log("readers, balance, holder")
        check_equal("readers", terminal.json(["readers"])["readers"], [harness.CARD_READER, harness.PSAM_READER])
        check_equal("balance", terminal.json(["balance"])["balance_fen"], opening)
        check_equal("cardholder name (GBK on the card)", terminal.json(["holder"])["name"], "王小椰")

        log("shop purchase")
        record = terminal.json(["purchase", "--amount-fen", "123"])
        check_equal("purchase amount / balance before / after",
                    (record["amount_fen"], record["balance_before_fen"], record["balance_after_fen"]),
                    (123, opening, opening - 123))
        check_equal("purchase type, ATC, terminal, serial", (record["type"], record["atc"], record["terminal_id"],
                                                             record["terminal_serial"]),
                    ("06", 0, harness.TERMINAL_ID, 1))
        check_equal("purchase flags", record["flags"], {"recovered": False, "unproven": False, "mac2_unverified": False})
        records.append(record)

        log("flat fare: charged once, the repeat inside the window is free")
        tap = terminal.json(["tap", "--line", "1", "--station", "3", "--vehicle", "4242"])
        check_equal("flat tap result / fare", (tap["result"], tap["fare_fen"]), ("charged_flat", 200))
        check_equal("flat record line/station/vehicle/kind", (tap["record"]["line"], tap["record"]["station"],
                                                               tap["record"]["vehicle"], tap["record"]["tap_kind"],
                                                               tap["record"]["type"]), (1, 3, 4242, "flat", "09"))
        records.append(tap["record"])
        atc_before = it.card_info(vcard, card_image)["offline_atc"]
        repeat = terminal.json(["tap", "--line", "1", "--station", "3"])
        check_equal("repeat tap result / fare / record", (repeat["result"], repeat["fare_fen"], repeat["record"]),
                    ("repeat_no_charge", 0, None))
        check_equal("repeat tap leaves the ATC", it.card_info(vcard, card_image)["offline_atc"], atc_before)

        log("entry/exit by the fare table")
        entry = terminal.json(["tap", "--line", "8", "--station", "2"])
        check_equal("entry result / fare / kind", (entry["result"], entry["fare_fen"], entry["record"]["tap_kind"]),
                    ("entered", 0, "entry"))
        records.append(entry["record"])
        exit_tap = terminal.json(["tap", "--line", "8", "--station", "5"])
        check_equal("exit result / fare (3 stops) / entry station",
                    (exit_tap["result"], exit_tap["fare_fen"], exit_tap["record"]["entry_station"],
                     exit_tap["record"]["tap_kind"]), ("exited", 300, 2, "exit"))
        records.append(exit_tap["record"])

        log("unfinished journey: an entry older than the journey limit is charged the maximum fare")
        entry = terminal.json(["--time", hainan_time(0), "tap", "--line", "8", "--station", "1"])
        check_equal("second entry", entry["result"], "entered")
        records.append(entry["record"])
        late = terminal.json(["--time", hainan_time(4 * 60), "tap", "--line", "1", "--station", "9"])
        check_equal("next tap 4 h later: flat 200 + unfinished maximum 300",
                    (late["result"], late["fare_fen"], late["record"]["tap_kind"]), ("charged_flat", 500, "unfinished"))
        records.append(late["record"])

        log("hotlist refusal: the card is not touched")
        before = it.card_info(vcard, card_image)
        blocked = terminal.json(["hotlist", "add", harness.ASN, "--reason", "stolen"])
        check_equal("hotlist version after add", blocked["version"], 1)
        refused = terminal.json(["purchase", "--amount-fen", "50"], expect="blocked_card")
        check_equal("refusal names the code and reason", (refused["error"]["code"], refused["error"]["block_reason"]),
                    ("blocked_card", "stolen"))
        terminal.json(["tap", "--line", "1", "--station", "3"], expect="blocked_card")
        after = it.card_info(vcard, card_image)
        check_equal("balance and ATCs after the refusals", (after["balance_fen"], after["offline_atc"], after["online_atc"]),
                    (before["balance_fen"], before["offline_atc"], before["online_atc"]))
        check_equal("card image not written by the refusals", after["generation"], before["generation"])
        terminal.json(["hotlist", "remove", harness.ASN])
        record = terminal.json(["purchase", "--amount-fen", "50"])
        check_equal("purchase after unblocking", record["balance_after_fen"], before["balance_fen"] - 50)
        records.append(record)

        log("error exits through the real stack")
        refused = terminal.json(["purchase", "--amount-fen", "999999"], expect="insufficient_balance")
        check_equal("insufficient balance carries 9401", refused["error"]["sw"], "9401")
        wrong = it.Terminal(tools, workdir, ["--reader", "No Such Reader", "--psam-reader", harness.PSAM_READER])
        wrong.json(["balance"], expect="reader_not_found")
        no_psam = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER])
        no_psam.json(["purchase", "--amount-fen", "1"], expect="usage")
        terminal.json(["tap", "--line", "77", "--station", "1"], expect="unknown_line")
        recovered = terminal.json(["recover"])
        check_equal("recover with nothing pending", (recovered["recorded"], recovered["abandoned"]), ([], []))

        log("the queue against the card")
        queue = terminal.queue()
        check_equal("queued records = the charged transactions", [t["atc"] for t in queue["transactions"]],
                    [r["atc"] for r in records])
        check_equal("no open intents", queue["open_intents"], [])
        it.verify_tacs(tools, queue["transactions"], "every queued record")
        check_equal("serve still running", stack.serve.poll(), None)
        check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
        # The card's log is read with the APDU shell, which needs the image to itself (serve stopped).
        it.check_queue_matches_card(vcard, card_image, queue, opening)


if __name__ == "__main__":
    harness.main(test)
