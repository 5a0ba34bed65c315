#!/usr/bin/python3
"""coconut-terminal's command line in process (card and PSAM image files, no pcscd): every documented exit
code that can be provoked without a reader, the error JSON, and the refusals that must leave the card as
it was (a wrong MAC1, a PSAM that refuses 80 70, an expired card).

usage: test_terminal_cli.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import json
import os

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal


def expect_error(terminal, args, code, sw=None):
    error = terminal.json(args, expect=code)["error"]
    check_equal(f"{' '.join(args)}: error code", error["code"], code)
    check_equal(f"{' '.join(args)}: exit code in the JSON", error["exit_code"], it.EXIT[code])
    if sw is not None:
        check_equal(f"{' '.join(args)}: status word", error.get("sw"), sw)
    return error


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    card = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(tools.tac_check))
    psam = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    terminal = it.Terminal(tools, workdir, ["--card", card, "--psam", psam])

    log("usage and set-up errors")
    terminal.run(["purchase"], expect="usage")
    terminal.run(["purchase", "--amount-fen", "0"], expect="usage")
    expect_error(it.Terminal(tools, workdir, ["--card", card, "--reader", "X"]), ["balance"], "usage")
    expect_error(it.Terminal(tools, workdir, ["--card", psam]), ["balance"], "image_error")
    expect_error(it.Terminal(tools, workdir, ["--card", os.path.join(workdir, "missing.img")]), ["balance"], "image_error")
    expect_error(it.Terminal(tools, workdir, ["--card", card]), ["purchase", "--amount-fen", "1"], "usage")
    bad_queue = os.path.join(workdir, "bad-queue.log")
    with open(bad_queue, "w") as out:
        out.write("not a queue")
    expect_error(it.Terminal(tools, workdir, ["--card", card], queue="bad-queue.log"), ["balance"], "queue_error")
    bad_hotlist = os.path.join(workdir, "bad-hotlist.bin")
    with open(bad_hotlist, "w") as out:
        out.write("not a hotlist")
    expect_error(it.Terminal(tools, workdir, ["--card", card], hotlist="bad-hotlist.bin"), ["balance"], "hotlist_error")
    bad_fares = terminal.base[:]
    bad_fares[bad_fares.index("--fares") + 1] = os.path.join(workdir, "card.json")  # JSON, but not fares
    result = harness.run(bad_fares + ["--json", "tap", "--line", "1", "--station", "1"], check=False)
    check_equal("fares file that is not a fare table: exit", result.returncode, it.EXIT["fares_error"])
    expect_error(terminal, ["tap", "--line", "99", "--station", "1"], "unknown_line")
    expect_error(terminal, ["--time", "2026-13-01 00:00:00", "balance"], "usage")

    log("flow errors that leave the card untouched")
    before = it.card_info(vcard, card)
    expect_error(terminal, ["purchase", "--amount-fen", str(before["balance_fen"] + 1)], "insufficient_balance", "9401")
    expect_error(terminal, ["--time", "2036-01-01 12:00:00", "purchase", "--amount-fen", "1"], "expired_card")
    expect_error(terminal, ["--time", "2025-12-31 12:00:00", "purchase", "--amount-fen", "1"], "expired_card")

    wrong_key = harness.psam_profile()
    wrong_key["purchase_key"] = "00112233445566778899AABBCCDDEEFF"
    wrong_psam = harness.personalize(vcard, workdir, "psam-wrong-key", wrong_key)
    wrong = it.Terminal(tools, workdir, ["--card", card, "--psam", wrong_psam])
    expect_error(wrong, ["purchase", "--amount-fen", "10"], "card_error", "9302")  # MAC1 fails at DEBIT

    other_issuer = harness.psam_profile()
    other_issuer.update({"key_level": "issuer", "issuer_id": "4600000000000099"})
    refusing_psam = harness.personalize(vcard, workdir, "psam-other-issuer", other_issuer)
    refusing = it.Terminal(tools, workdir, ["--card", card, "--psam", refusing_psam])
    error = expect_error(refusing, ["purchase", "--amount-fen", "10"], "psam_error")
    check_equal("PSAM refusal carries its status word", "sw" in error, True)

    after = it.card_info(vcard, card)
    check_equal("balance and offline ATC after the refusals", (after["balance_fen"], after["offline_atc"]),
                (before["balance_fen"], before["offline_atc"]))
    queue = terminal.queue()
    check_equal("nothing queued, no intent left open", (queue["count"], queue["open_intents"]), (0, []))

    log("online commands that never reach a clearing: the card stays untouched")
    # Port 1 on loopback: connection refused. Plain TCP (--insecure): these are about an unreachable clearing.
    closed = ["--clearing", "127.0.0.1:1", "--terminal-id", "TOPUP001", "--insecure"]
    # The clearing is reached over mutual TLS unless --insecure is given; TLS files that cannot be used are tls_error.
    tls_less = ["--clearing", "127.0.0.1:1", "--terminal-id", "TOPUP001"]
    error = terminal.json(["sync-hotlist"] + tls_less, expect="usage")["error"]
    check_equal("no --ca/--cert/--key and no --insecure: named", "--insecure" in error["message"], True)
    terminal.run(["sync-hotlist", "--ca", "ca.pem"] + closed, expect="usage")
    missing = os.path.join(workdir, "missing.pem")
    error = terminal.json(["sync-hotlist", "--ca", missing, "--cert", missing, "--key", missing] + tls_less,
                          expect="tls_error")["error"]
    check_equal("unreadable TLS files: the file named", missing in error["message"], True)
    terminal.run(["load"], expect="usage")
    terminal.run(["load", "--amount-fen", "100"], expect="usage")
    terminal.run(["load", "--amount-fen", "0"] + closed, expect="usage")
    terminal.run(["load", "--amount-fen", "100", "--clearing", "nowhere", "--terminal-id", "TOPUP001"], expect="usage")
    terminal.run(["load", "--amount-fen", "100", "--clearing", "127.0.0.1:1", "--terminal-id", "SHORT"], expect="usage")
    # No PIN on the command line, and no prompt without someone at a terminal: both usage errors before anything.
    error = terminal.json(["clinic-pay", "--amount-fen", "100"] + closed, expect="usage")["error"]
    check_equal("clinic-pay run by a program without --pin-stdin", "--pin-stdin" in error["message"], True)
    error = terminal.json(["clinic-pay", "--amount-fen", "100", "--pin", "123456"] + closed, expect="usage")["error"]
    check_equal("clinic-pay --pin refused", "never given on the command line" in error["message"], True)
    error = terminal.json(["load", "--amount-fen", "100"] + closed, expect="clearing_unreachable")["error"]
    check_equal("load with the clearing down: error code", error["code"], "connect_failed")
    error = terminal.json(["clinic-pay", "--amount-fen", "100", "--pin-stdin"] + closed, expect="clearing_unreachable", input_text="123456\n")["error"]
    check_equal("clinic-pay with the clearing down: error code", error["code"], "connect_failed")
    terminal.json(["sync-hotlist"] + closed, expect="clearing_unreachable")
    # An old queue (format 1) is converted with its batch file at open: a damaged one refuses, and the old
    # queue stays as it was.
    old_queue = os.path.join(workdir, "old-queue.log")
    with open(old_queue, "wb") as out:
        out.write(b"COCOQUE1" + bytes(8 + 4096))
    bad_batch = os.path.join(workdir, "bad.batch")
    with open(bad_batch, "w") as out:
        out.write("coconut-terminal-batch 1\nbatch twelve\n")
    old_terminal = it.Terminal(tools, workdir, ["--card", card, "--psam", psam], queue="old-queue.log")
    error = old_terminal.json(["reconcile", "--batch-file", bad_batch] + closed, expect="batch_error")["error"]
    check_equal("damaged batch file: error code", error["code"], "batch_error")
    with open(old_queue, "rb") as old:
        check_equal("the old queue is left unconverted", old.read(8), b"COCOQUE1")
    # With a sound batch file the old queue converts at the first command: its records are all there.
    # (The log the format 1 queue code wrote: 2 live records, 1 open intent; terminal-sdk/QUEUE-FORMAT.md.)
    format1 = bytes.fromhex(
        "434F434F51554531000000000000000000000069010000000000000001100000000000000123450000000000000000060001000000640000"
        "2710000026AC0000000000000000002920261126130501010203010000000000010007000300000000000000000000000000000000000000"
        "00000000000000000000000000E26A2278B5E877140000006901000000000000000210000000000000012345000000000000000006000200"
        "0000FA00002710000026160000000000000000002A2026112613050201020302000000000001000700060000000000000000000000000000"
        "000000000000000000000000000000000000C004C44E2FDB1CD0000000690300000000000000031000000000000001234500000000000000"
        "000200030000138800002710000013880000000000000000002B202611261305030102030300000000000100070009000000000000000000"
        "0000000000010000006700000000000000000300000000C1EC12FA8D4E551600000069010000000000000004100000000000000123450000"
        "0000000000000200030000138800002710000013880000000000000000002B20261126130503010203030000000000010007000900000000"
        "000000000000000000030100000067000000000000000003000000000B0E1BD75E536FA70000001502000000000000000500000001000000"
        "0000000001F8334C27F6242268000000690300000000000000061000000000000001234500000000000000000600040000012C0000271000"
        "0025E40000000000000000002C20261126130504010203040000000000010007000C00000000000000000000000000000000000000000000"
        "00000000000000000000041938C1008DAB5A0000006903000000000000000710000000000000012345000000000000000006000500000190"
        "00002710000025800000000000000000002D20261126130505010203050000000000010007000F0000000000000000000000000000000000"
        "000000000000000000000000000000E0FFDBCCDA48015E0000001104000000000000000800000000000000077669EC055295D80F"
    )
    upgraded = os.path.join(workdir, "upgraded-queue.log")
    with open(upgraded, "wb") as out:
        out.write(format1 + bytes(4096))
    with open(upgraded + ".batch", "w") as out:
        out.write("coconut-terminal-batch 1\nbatch 7\nstan 250\ndebits 1 100\ncredits 0 0\n"
                  "credit_reversals 0 0\ndebit_reversals 0 0\n")
    upgraded_terminal = it.Terminal(tools, workdir, ["--card", card, "--psam", psam], queue="upgraded-queue.log")
    check_equal("an old queue converted at open: records and intents kept",
                upgraded_terminal.json(["queue", "count"]), {"count": 2, "open_intents": 1})
    with open(upgraded, "rb") as converted:
        check_equal("the converted queue is format 2", converted.read(8), b"COCOQUE2")
    check_equal("the old batch file is removed once converted", os.path.exists(upgraded + ".batch"), False)
    after_online = it.card_info(vcard, card)
    check_equal("balance and online ATC after the refused online commands",
                (after_online["balance_fen"], after_online["online_atc"]), (before["balance_fen"], before["online_atc"]))
    check_equal("nothing queued, no intent left open", (terminal.queue()["count"], terminal.queue()["open_intents"]), (0, []))

    log("hotlist file operations")
    show = terminal.json(["hotlist", "show", "--asn", harness.ASN])
    check_equal("empty hotlist", (show["version"], show["count"], show["blocked"]), (0, 0, False))
    terminal.json(["hotlist", "add", harness.ASN, "--reason", "cloned"])
    show = terminal.json(["hotlist", "show", "--asn", harness.ASN])
    check_equal("after add", (show["version"], show["count"], show["blocked"], show["reason"]), (1, 1, True, "cloned"))
    error = expect_error(terminal, ["purchase", "--amount-fen", "1"], "blocked_card")
    check_equal("block reason", error["block_reason"], "cloned")
    terminal.json(["hotlist", "remove", harness.ASN])
    check_equal("after remove", terminal.json(["hotlist", "show"])["version"], 2)
    terminal.run(["hotlist", "add", "1234"], expect="usage")
    terminal.run(["hotlist", "add", harness.ASN, "--reason", "bored"], expect="usage")

    log("a purchase, the queue and the record schema")
    record = terminal.json(["purchase", "--amount-fen", "250"])
    expected_fields = {"asn", "card_number", "issuer_id", "type", "type_name", "atc", "amount_fen", "balance_before_fen",
                       "balance_after_fen", "terminal_id", "terminal_serial", "date", "time", "date_time", "tac",
                       "mac2", "flags", "tap_kind", "line", "station", "vehicle", "entry_station", "intent_sequence", "link"}
    check_equal("record fields", set(record), expected_fields)
    check_equal("card number = rightmost 16 ASN digits", record["card_number"], harness.ASN[-16:])
    check_equal("queue count", terminal.json(["queue", "count"]), {"count": 1, "open_intents": 0})
    listed = terminal.queue()["transactions"][0]
    check_equal("queued record = printed record (plus its sequence)", {k: v for k, v in listed.items() if k != "sequence"},
                record)
    it.verify_tacs(tools, [record], "the purchase")
    lines = harness.run(terminal.base + ["--json", "purchase", "--amount-fen", "1", "--repeat", "3"]).stdout.splitlines()
    check_equal("--repeat 3 prints three JSON lines", [json.loads(line)["atc"] for line in lines], [1, 2, 3])


if __name__ == "__main__":
    harness.main(test)
