#!/usr/bin/python3
"""coconut-vcard serve survives pcscd: started before pcscd it waits (retrying the connection); when pcscd
stops and starts again it reconnects and the card answers again; SIGTERM and SIGINT end it with exit 0 both
while connected and while waiting for pcscd.

usage: test_pcsc_reconnect.py PATH/TO/coconut-vcard
"""

import json
import os
import signal
import time

from pcsc_harness import (OPENING_BALANCE_FEN, PcscStack, card_profile, check_equal, log, main, personalize,
                          psam_profile, run)

HERE = os.path.dirname(os.path.abspath(__file__))


def balance_through_pcsc():
    result = json.loads(run(["/usr/bin/python3", os.path.join(HERE, "pyscard_client.py"), "balance"]).stdout)
    return result["balance"]


def test(vcard, workdir, _extra):
    card_image = personalize(vcard, workdir, "card", card_profile())
    psam_image = personalize(vcard, workdir, "psam", psam_profile())
    expected_balance = f"{OPENING_BALANCE_FEN:08X}"

    with PcscStack(vcard, workdir) as stack:
        log("serve before pcscd: it must wait and retry")
        # Only our own pcscd may be stopped: make sure none runs (start_pcscd waits for a foreign one).
        stack.start_pcscd()
        stack.stop_pcscd()
        stack.start_serve(card_image, psam_image)
        time.sleep(0.5)
        check_equal("serve still running without pcscd", stack.serve.poll(), None)
        stack.start_pcscd()
        stack.wait_card(0)
        stack.wait_card(1)
        check_equal("GET BALANCE through pcscd", balance_through_pcsc(), expected_balance)

        for restart in (1, 2):
            log(f"pcscd restart {restart}: serve must reconnect")
            check_equal("pcscd exit code on SIGTERM", stack.stop_pcscd(), 0)
            time.sleep(0.3)
            check_equal("serve still running while pcscd is down", stack.serve.poll(), None)
            stack.start_pcscd()
            started = time.monotonic()
            stack.wait_card(0)
            stack.wait_card(1)
            log(f"  card back {time.monotonic() - started:.2f} s after pcscd started")
            check_equal("GET BALANCE after the restart", balance_through_pcsc(), expected_balance)
        serve_log = stack.serve_log_text()
        check_equal("serve logged the reconnections", serve_log.count("reconnecting") >= 4, True)

        log("SIGTERM while connected")
        check_equal("serve exit code on SIGTERM", stack.stop_serve(signal.SIGTERM), 0)
        log("SIGINT while connected")
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        check_equal("serve exit code on SIGINT", stack.stop_serve(signal.SIGINT), 0)
        check_equal("pcscd exit code on SIGTERM", stack.stop_pcscd(), 0)

        log("SIGTERM while waiting for pcscd (no pcscd running)")
        stack.start_serve(card_image)
        time.sleep(0.3)
        check_equal("serve exit code on SIGTERM without pcscd", stack.stop_serve(signal.SIGTERM), 0)


if __name__ == "__main__":
    main(test)
