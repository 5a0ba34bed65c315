#!/usr/bin/python3
"""kill -9 of coconut-terminal in a loop of purchases — card and PSAM images run in process, or (mode
"pcsc") served by `coconut-vcard serve` through pcscd + vpcd — after every kill, `coconut-terminal recover`
runs with the card, and then
  - every debit the card performed is in the queue exactly once (queued ATCs = 0 .. the card's offline
    ATC - 1, each once; every record of the card's own EF18 log matched by exactly one queued record),
  - money is conserved (opening balance = card balance + queued charges),
  - no intent is left open,
  - every record the killed process had printed (its flow had returned) is in the queue.
The loop goes on until kills have landed both before the card's DEBIT commit (intent abandoned) and after
it (debit recovered), at least KILLS_MIN times and at most KILLS_MAX. Every TAC verifies with the DTK.

In pcsc mode the card's EF18 log is compared once, at the end (the APDU shell needs the image to itself);
after each kill the card's ATC and balance are read with `coconut-vcard info`.

usage: test_terminal_kill9.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK [in-process|pcsc] [SEED]
"""

import json
import os
import random
import signal
import subprocess
import time

import terminal_it as it
from terminal_it import harness, log

check_equal = harness.check_equal
KILLS_MIN = {"in-process": 30, "pcsc": 15}
KILLS_MAX = 150
OPENING_BALANCE_FEN = 100000
PURCHASES_PER_PROCESS = 5000  # never reached: the process is killed first


def test(vcard, workdir, extra):
    tools = it.Tools(extra)
    mode = extra[2] if len(extra) > 2 else "in-process"
    if mode not in KILLS_MIN:
        raise AssertionError(f"mode {mode!r}: expected in-process or pcsc")
    seed = int(extra[3]) if len(extra) > 3 else int(time.time())
    log(f"mode {mode}, seed {seed} (pass both as the 4th and 5th arguments to replay the kill times)")
    card_image = harness.personalize(vcard, workdir, "card", it.explicit_card_profile(
        tools.tac_check, balance_fen=OPENING_BALANCE_FEN))
    psam_image = harness.personalize(vcard, workdir, "psam", harness.psam_profile())
    if mode == "pcsc":
        with harness.PcscStack(vcard, workdir) as stack:
            stack.start_pcscd()
            stack.start_serve(card_image, psam_image)
            stack.wait_card(0)
            stack.wait_card(1)
            terminal = it.Terminal(tools, workdir, ["--reader", harness.CARD_READER, "--psam-reader", harness.PSAM_READER])
            kill_loop(vcard, tools, terminal, card_image, random.Random(seed), KILLS_MIN[mode], check_log=False)
            check_equal("serve survived every client kill", stack.serve.poll(), None)
            check_equal("serve exit code on SIGTERM", stack.stop_serve(), 0)
    else:
        terminal = it.Terminal(tools, workdir, ["--card", card_image, "--psam", psam_image])
        kill_loop(vcard, tools, terminal, card_image, random.Random(seed), KILLS_MIN[mode], check_log=True)
    queue = terminal.queue()
    info = it.check_queue_matches_card(vcard, card_image, queue, OPENING_BALANCE_FEN)
    log(f"  card: offline ATC {info['offline_atc']}, balance {info['balance_fen']} fen; queue: "
        f"{len(queue['transactions'])} records")
    it.verify_tacs(tools, queue["transactions"], "all queued records")


def kill_loop(vcard, tools, terminal, card_image, rng, kills_min, check_log):
    # How long a process takes to start and to run one purchase here (fdatasync-bound).
    started = time.monotonic()
    terminal.run(["purchase", "--amount-fen", "1", "--repeat", "20"])
    per_process_s = time.monotonic() - started
    log(f"20 purchases in one process: {per_process_s * 1000:.0f} ms")
    kill_window_s = per_process_s * 1.5

    totals = {"kills": 0, "recovered": 0, "abandoned": 0, "printed": 0}
    while totals["kills"] < KILLS_MAX:
        if totals["kills"] >= kills_min and totals["recovered"] and totals["abandoned"]:
            break
        amount = rng.randint(1, 9)
        process = subprocess.Popen(terminal.base + ["--json", "purchase", "--amount-fen", str(amount), "--repeat",
                                                    str(PURCHASES_PER_PROCESS)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0, kill_window_s))
        process.send_signal(signal.SIGKILL)
        out, err = process.communicate(timeout=30)
        if process.returncode != -signal.SIGKILL:
            raise AssertionError(f"purchase loop ended by itself ({process.returncode}) before the kill:\n{err}")
        totals["kills"] += 1
        printed = [json.loads(line) for line in out.splitlines() if line.endswith("}")]
        totals["printed"] += len(printed)

        recovered = terminal.json(["recover"])
        totals["recovered"] += len(recovered["recorded"])
        totals["abandoned"] += len(recovered["abandoned"])
        if any(not r["flags"]["recovered"] for r in recovered["recorded"]):
            raise AssertionError(f"recover returned a record without the recovered flag: {recovered}")
        check_equal_quiet("open intents after recover", recovered["open_intents"], 0)

        queue = terminal.queue()
        queued = {(t["atc"], t["tac"]) for t in queue["transactions"]}
        for record in printed:
            if (record["atc"], record["tac"]) not in queued:
                raise AssertionError(f"kill {totals['kills']}: printed record ATC {record['atc']} is not in the queue")
        check_card_quiet(vcard, card_image, queue, check_log)
        if recovered["recorded"] or recovered["abandoned"]:
            log(f"  kill {totals['kills']}: {len(printed)} purchases returned; recover recorded "
                f"{len(recovered['recorded'])}, abandoned {len(recovered['abandoned'])}")

    log(f"{totals['kills']} kills, {totals['printed']} purchases returned before a kill, "
        f"{totals['recovered']} debits completed by recover, {totals['abandoned']} intents abandoned")
    if not (totals["recovered"] and totals["abandoned"]):
        raise AssertionError(f"after {KILLS_MAX} kills, no kill landed on one side of the DEBIT commit: {totals}")
    recovered_records = [t for t in terminal.queue()["transactions"] if t["flags"]["recovered"]]
    check_equal("recovered records in the queue", len(recovered_records), totals["recovered"])


def check_equal_quiet(what, got, expected):
    if got != expected:
        raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")


def check_card_quiet(vcard, image, queue, check_log):
    """it.check_queue_matches_card without the per-check log lines (it runs after every kill)."""
    info = it.card_info(vcard, image)
    atcs = sorted(t["atc"] for t in queue["transactions"])
    check_equal_quiet("queued ATCs vs the card's offline ATC", atcs, list(range(info["offline_atc"])))
    spent = sum(t["amount_fen"] for t in queue["transactions"])
    check_equal_quiet("opening balance = card balance + queued charges", info["balance_fen"] + spent,
                      OPENING_BALANCE_FEN)
    for entry in (it.card_log(vcard, image) if check_log else []):
        matches = [t for t in queue["transactions"] if t["atc"] + 1 == entry["atc"]
                   and t["amount_fen"] == entry["amount_fen"] and t["date"] == entry["date"]
                   and t["time"] == entry["time"] and t["terminal_id"] == entry["terminal_id"]]
        check_equal_quiet(f"queued records matching card log ATC {entry['atc']}", len(matches), 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    harness.main(test)
