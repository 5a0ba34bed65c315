#!/usr/bin/python3
"""Card insertion and removal seen through SCardGetStatusChange (PcscReader::wait_for_card and event_count,
via `coconut-terminal wait`) while `coconut-vcard serve` is stopped and started: each removal and each
insertion wakes a waiting terminal and advances the reader's event counter; a flow with no card exits
no_card; the card works again after it comes back.

usage: test_terminal_pcsc_events.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import json
import signal
import subprocess

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal
CYCLES = 3
# pcscd polls presence every ~400 ms (docs/PCSC.md §6: events after 0.05-0.34 s); 10 s is far beyond that.
EVENT_TIMEOUT_MS = 10000


def start_wait(terminal, absent):
    """Starts `coconut-terminal wait` and returns once it is waiting (its 'waiting for' line on stderr)."""
    args = terminal.base + ["--json", "wait", "--timeout-ms", str(EVENT_TIMEOUT_MS)] + (["--absent"] if absent else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if not line.startswith("waiting for"):
        process.kill()
        raise AssertionError(f"wait did not start: {line}{process.stderr.read()}")
    return process


def finish_wait(process, what):
    try:
        out, err = process.communicate(timeout=EVENT_TIMEOUT_MS / 1000 + 5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"{what}: wait did not return")
    if process.returncode != 0:
        raise AssertionError(f"{what}: wait exited {process.returncode}\n{out}{err}")
    result = json.loads(out)
    check_equal(f"{what}: reached", result["reached"], True)
    if result["events_after"] <= result["events_before"]:
        raise AssertionError(f"{what}: event counter did not advance: {result}")
    log(f"  ok  {what}: after {result['elapsed_ms']} ms, events {result['events_before']} -> {result['events_after']}")
    return result


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    card_image = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(tools.tac_check))
    psam_image = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])

    with harness.PcscStack(vcard, workdir) as stack:
        stack.start_pcscd()
        stack.start_serve(card_image, psam_image)
        stack.wait_card(0)
        stack.wait_card(1)

        present = terminal.json(["wait", "--timeout-ms", "1000"])
        check_equal("card present at once, no event while waiting", (present["reached"],
                                                                    present["events_after"] - present["events_before"]),
                    (True, 0))
        terminal.run(["wait", "--absent", "--timeout-ms", "300"], expect="timeout")
        log("  ok  waiting for removal while the card stays: exit 27 (timeout)")

        for cycle in range(1, CYCLES + 1):
            stop_signal = signal.SIGKILL if cycle == CYCLES else signal.SIGTERM
            log(f"cycle {cycle}: remove (serve stopped with {signal.Signals(stop_signal).name}), then insert")
            waiter = start_wait(terminal, absent=True)
            stack.stop_serve(stop_signal)
            removed = finish_wait(waiter, "removal observed")
            terminal.json(["balance"], expect="no_card")
            terminal.json(["purchase", "--amount-fen", "1"], expect="no_card")
            log("  ok  balance and purchase without a card: exit 11 (no_card)")

            waiter = start_wait(terminal, absent=False)
            stack.start_serve(card_image, psam_image)
            inserted = finish_wait(waiter, "insertion observed")
            if inserted["events_after"] <= removed["events_after"]:
                raise AssertionError(f"event counter went back: {removed} then {inserted}")
            stack.wait_card(1)
            record = terminal.json(["purchase", "--amount-fen", "10"])
            check_equal("purchase after the card came back", record["atc"], cycle - 1)

        queue = terminal.queue()
        it.verify_tacs(tools, queue["transactions"], "the purchases between removals")
        stack.stop_serve()
        it.check_queue_matches_card(vcard, card_image, queue, harness.OPENING_BALANCE_FEN)


if __name__ == "__main__":
    harness.main(test)
