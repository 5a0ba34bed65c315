#!/usr/bin/python3
"""coconut-vcard without pcscd: personalize / info refusals, and the APDU shell's format, comments, bad lines
and persistence across invocations.

usage: test_vcard_cli.py PATH/TO/coconut-vcard
"""

import json
import os
import signal
import subprocess
import time

from pcsc_harness import (OPENING_BALANCE_FEN, PURSE_AID, card_profile, check_equal, expected_ef15, log, main,
                          personalize, run)

SELECT_PURSE = f"00A4040008{PURSE_AID}00"
FCI = "6F31" + "8408" + PURSE_AID + "A525" + "9F080101" + "9F0C1E" + expected_ef15()


def refused(argv, what, needle):
    """The command must fail with a non-zero exit code and a message containing `needle`."""
    result = run(argv, check=False)
    if result.returncode == 0:
        raise AssertionError(f"{what}: exit code 0, expected a refusal\n{result.stdout}")
    message = result.stderr + result.stdout
    if needle.lower() not in message.lower():
        raise AssertionError(f"{what}: message {message!r} does not mention {needle!r}")
    log(f"  ok  {what}: exit {result.returncode}: {message.strip().splitlines()[0]}")


def info(vcard, image):
    return json.loads(run([vcard, "info", "--json", image]).stdout)


def shell_run(vcard, image, text, expect_code=0):
    result = run([vcard, "shell", image], check=False, input_text=text)
    check_equal(f"shell exit code", result.returncode, expect_code)
    return result.stdout.splitlines(), result.stderr


def write(path, text):
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def test_personalize_and_info(vcard, workdir):
    log("personalize and info refuse bad input")
    image = personalize(vcard, workdir, "card", card_profile())
    profile = os.path.join(workdir, "card.json")
    refused([vcard, "personalize", "--profile", profile, "--out", image], "existing image without --force", "--force")
    run([vcard, "personalize", "--profile", profile, "--out", image, "--force"])
    refused([vcard, "personalize", "--profile", os.path.join(workdir, "missing.json"), "--out",
             os.path.join(workdir, "x.img")], "missing profile", "missing.json")
    refused([vcard, "personalize", "--profile", write(os.path.join(workdir, "bad.json"), "{ not json"), "--out",
             os.path.join(workdir, "x.img")], "profile that is not JSON", "not valid JSON")
    no_asn = card_profile()
    del no_asn["asn"]
    refused([vcard, "personalize", "--profile", write(os.path.join(workdir, "no-asn.json"), json.dumps(no_asn)),
             "--out", os.path.join(workdir, "x.img")], "profile without asn", "asn")
    bad_key = card_profile()
    bad_key["master_keys"] = dict(bad_key["master_keys"], dpk="0123")
    refused([vcard, "personalize", "--profile", write(os.path.join(workdir, "bad-key.json"), json.dumps(bad_key)),
             "--out", os.path.join(workdir, "x.img")], "profile with a short key", "dpk")
    check_equal("no image left behind by refused profiles", os.path.exists(os.path.join(workdir, "x.img")), False)
    refused([vcard], "no subcommand", "subcommand")
    refused([vcard, "serve", image, "--host", "no-such-host.invalid"], "serve with a host that does not resolve",
            "--host")
    refused([vcard, "serve", image, "--port", "70000"], "serve with a port out of range", "port")

    state = info(vcard, image)
    check_equal("info kind", state["kind"], "card")
    check_equal("info asn", state["asn"], "46010000000012345678")
    check_equal("info balance", state["balance_fen"], OPENING_BALANCE_FEN)
    check_equal("info ATCs", (state["online_atc"], state["offline_atc"]), (0, 0))
    text = run([vcard, "info", image]).stdout
    check_equal("info text form has 'balance_fen: 5000'", f"balance_fen: {OPENING_BALANCE_FEN}" in text, True)

    refused([vcard, "info", os.path.join(workdir, "missing.img")], "info on a missing image", "missing.img")
    truncated = os.path.join(workdir, "truncated.img")
    with open(image, "rb") as source, open(truncated, "wb") as out:
        out.write(source.read()[:1000])
    refused([vcard, "info", truncated], "info on a truncated image", "truncated")
    refused([vcard, "shell", truncated], "shell on a truncated image", "truncated")
    refused([vcard, "serve", truncated], "serve on a truncated image", "truncated")
    garbage = write(os.path.join(workdir, "garbage.img"), "hello, not a card\n")
    refused([vcard, "info", garbage], "info on a file that is not an image", "garbage.img")


def test_shell_format(vcard, workdir):
    log("shell: output format, comments, blank lines, bad lines")
    image = personalize(vcard, workdir, "shell", card_profile())
    lines, stderr = shell_run(vcard, image, "\n".join([
        "# a whole-line comment",
        "",
        "   ",
        SELECT_PURSE + "   # select the purse (trailing comment)",
        "80 5c 00 02 04",          # lower case and spaces
        "80:5C:00:02:04",          # colons
        "00 B0 95 00 1E",
        "80 10 00 00",             # unknown INS: status word alone
        "00 B0 95 00 1",           # odd number of digits
        "hello",                   # not hex
        "80 5C 00 02 04",          # the shell carries on after bad lines
    ]) + "\n", expect_code=1)
    check_equal("shell output lines", lines, [
        FCI + " 9000",
        f"{OPENING_BALANCE_FEN:08X} 9000",
        f"{OPENING_BALANCE_FEN:08X} 9000",
        expected_ef15() + " 9000",
        "6D00",
        "ERROR line 9: not hex (odd number of digits or a character other than 0-9 A-F)",
        "ERROR line 10: not hex (odd number of digits or a character other than 0-9 A-F)",
        f"{OPENING_BALANCE_FEN:08X} 9000",
    ])
    check_equal("stderr counts the bad lines", "2 line(s)" in stderr, True)

    lines, _ = shell_run(vcard, image, "")
    check_equal("empty input: no output", lines, [])
    lines, _ = shell_run(vcard, image, SELECT_PURSE + "\n80 5C 00 02 04")  # no final newline
    check_equal("last line without newline", lines[1:], [f"{OPENING_BALANCE_FEN:08X} 9000"])
    lines, _ = shell_run(vcard, image, "805C00\n")
    check_equal("a 3-byte APDU is valid hex: the card answers 6700", lines, ["6700"])

    result = run([vcard, "shell", "--echo", image], input_text=SELECT_PURSE + "\n805C000204 # balance\n")
    check_equal("--echo transcript", result.stdout.splitlines()[2:],
                ["> 805C000204", f"{OPENING_BALANCE_FEN:08X} 9000"])

    log("shell on a T=0 image: 61xx, then GET RESPONSE")
    t0_image = personalize(vcard, workdir, "shell_t0", card_profile(protocol="T=0"))
    lines, _ = shell_run(vcard, t0_image, f"{SELECT_PURSE}\n00C00000{len(FCI) // 2:02X}\n")
    check_equal("T=0 SELECT then GET RESPONSE", lines, [f"61{len(FCI) // 2:02X}", FCI + " 9000"])


def test_shell_persistence(vcard, workdir):
    log("shell: state persists across invocations, volatile state does not")
    image = personalize(vcard, workdir, "persist", card_profile())
    wrong_pin = "0020000003111111"
    lines, _ = shell_run(vcard, image, f"{SELECT_PURSE}\n{wrong_pin}\n")
    check_equal("first wrong PIN", lines[1], "63C2")
    lines, _ = shell_run(vcard, image, f"{SELECT_PURSE}\n{wrong_pin}\n")
    check_equal("second wrong PIN, next invocation", lines[1], "63C1")
    check_equal("info: PIN tries left", info(vcard, image)["pin_tries_left"], 1)
    lines, _ = shell_run(vcard, image, f"{SELECT_PURSE}\n0020000003123456\n")
    check_equal("right PIN resets the counter", lines[1], "9000")
    check_equal("info: PIN tries left after the right PIN", info(vcard, image)["pin_tries_left"], 3)

    # An INITIALIZE FOR LOAD that is never completed changes nothing, even across invocations.
    lines, _ = shell_run(vcard, image, f"{SELECT_PURSE}\n805000020B0100002710460100000099 10\n")
    check_equal("INITIALIZE FOR LOAD answers", lines[1][-4:], "9000")
    state = info(vcard, image)
    check_equal("abandoned INIT: online ATC and balance", (state["online_atc"], state["balance_fen"]),
                (0, OPENING_BALANCE_FEN))
    lines, _ = shell_run(vcard, image, "805200000B2026112612000000000000 04\n")
    check_equal("CREDIT in a new invocation (no pending INIT) is refused with a bare SW",
                len(lines[0]) == 4 and lines[0] != "9000", True)

    # Selection is volatile: a new invocation starts at the MF, so GET BALANCE without SELECT is refused.
    lines, _ = shell_run(vcard, image, "805C000204\n")
    check_equal("GET BALANCE without SELECT in a new invocation is refused with a bare SW",
                len(lines[0]) == 4 and lines[0] != "9000", True)


def test_one_writer_per_image(vcard, workdir):
    log("one writer per image: shell, serve and personalize --force refuse an image in use")
    image = personalize(vcard, workdir, "locked", card_profile())
    profile = os.path.join(workdir, "locked.json")
    # A port where no vpcd listens: serve keeps retrying and never touches anybody's pcscd.
    serve = subprocess.Popen([vcard, "serve", image, "--port", "45963"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        check_equal("serve is running (waiting for vpcd)", serve.poll(), None)
        refused([vcard, "shell", image], "shell on an image being served", "in use")
        refused([vcard, "serve", image, "--port", "45965"], "a second serve of the same image", "in use")
        refused([vcard, "personalize", "--profile", profile, "--out", image, "--force"],
                "personalize --force over an image being served", "in use")
        check_equal("info still reads an image being served", info(vcard, image)["balance_fen"], OPENING_BALANCE_FEN)
    finally:
        serve.send_signal(signal.SIGTERM)
        check_equal("serve exit code on SIGTERM", serve.wait(timeout=5), 0)
    lines, _ = shell_run(vcard, image, SELECT_PURSE + "\n")
    check_equal("shell works once serve has gone", lines[0][-4:], "9000")
    refused([vcard, "serve", image, "--psam", image, "--port", "45963"], "one image in both slots", "in use")


def test_shell_tear(vcard, workdir):
    log("shell --tear-after: the power goes at the N-th durable write; the slots decide what survives")
    image = personalize(vcard, workdir, "tear", card_profile())
    wrong_pin = "0020000003111111"  # one durable write each (the try counter)
    generation = info(vcard, image)["generation"]

    result = run([vcard, "shell", image, "--tear-after", "1"], check=False,
                 input_text=f"{SELECT_PURSE}\n{wrong_pin}\n{SELECT_PURSE}\n")
    check_equal("torn at write 1 (half by default): exit code", result.returncode, 3)
    check_equal("torn at write 1: only the SELECT before it answered", len(result.stdout.splitlines()), 1)
    check_equal("the cut is reported", "power cut at durable write 1" in result.stderr and "torn" in result.stderr,
                True)
    state = info(vcard, image)
    check_equal("torn write: PIN tries and generation as before the VERIFY",
                (state["pin_tries_left"], state["generation"]), (3, generation))

    result = run([vcard, "shell", image, "--tear-after", "1", "--tear-bytes", "0"], check=False,
                 input_text=f"{SELECT_PURSE}\n{wrong_pin}\n")
    check_equal("--tear-bytes 0: exit code", result.returncode, 3)
    check_equal("--tear-bytes 0: nothing written", info(vcard, image)["generation"], generation)

    result = run([vcard, "shell", image, "--tear-after", "2", "--tear-bytes", "all"], check=False,
                 input_text=f"{SELECT_PURSE}\n{wrong_pin}\n{wrong_pin}\n{wrong_pin}\n")
    check_equal("complete at write 2: exit code", result.returncode, 3)
    check_equal("complete at write 2: the first VERIFY answered, the second not", result.stdout.splitlines()[1:],
                ["63C2"])
    state = info(vcard, image)
    check_equal("complete write: both VERIFYs counted, the third never ran",
                (state["pin_tries_left"], state["generation"]), (1, generation + 2))

    refused([vcard, "shell", image, "--tear-bytes", "all"], "--tear-bytes without --tear-after", "--tear-after")
    refused([vcard, "shell", image, "--tear-after", "1", "--tear-bytes", "most"], "--tear-bytes neither a count nor "
            "half/all", "--tear-bytes")
    refused([vcard, "shell", image, "--tear-after", "0"], "--tear-after 0", "--tear-after")
    refused([vcard, "serve", image, "--volatile", "--tear-after", "1"], "--tear-after with --volatile", "--volatile")


def test(vcard, workdir, _extra):
    test_personalize_and_info(vcard, workdir)
    test_one_writer_per_image(vcard, workdir)
    test_shell_format(vcard, workdir)
    test_shell_persistence(vcard, workdir)
    test_shell_tear(vcard, workdir)


if __name__ == "__main__":
    main(test)
