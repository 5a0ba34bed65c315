"""Shared pieces of the coconut-terminal integration tests: explicit-key profiles, running the CLI, reading the
card's own state, and the independent TAC check (sdk_tac_check, coconut::card_crypto).

The PC/SC stack itself (pcscd + coconut-vcard serve) comes from tests/integration/pcsc_harness.py, imported
from there, not copied.

Every test script is called as: test_X.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import pcsc_harness as harness  # noqa: E402  (the shared PC/SC harness)
from pcsc_harness import ASN, ISSUER_ID, MASTER_KEYS, log  # noqa: E402,F401

# The card's TAC key in clear, so the test can recompute every TAC (docs/CARD-SPEC.md §4 real-card vector's DTK).
CARD_DTK = "CAA6025290114BFCC3C9043F70F7A07A"

FARES = {
    "repeat_tap_window_s": 60,
    "journey_limit_min": 180,
    "lines": [
        {"line": 1, "flat_fare_fen": 200, "operator_id": 1001},
        {"line": 8, "fare_by_stops_fen": [100, 150, 200, 300], "operator_id": 1002},
    ],
}

EXIT = {"ok": 0, "usage": 2, "card_removed": 10, "no_card": 11, "card_error": 12, "psam_error": 13,
        "insufficient_balance": 14, "blocked_card": 15, "expired_card": 16, "unknown_line": 17, "queue_full": 18,
        "storage_error": 19, "no_service": 20, "reader_not_found": 21, "reader_error": 22, "image_error": 23,
        "queue_error": 24, "hotlist_error": 25, "fares_error": 26, "timeout": 27, "clearing_unreachable": 28,
        "clearing_refused": 29, "upload_incomplete": 30, "declined": 31, "no_answer": 32, "wrong_pin": 33,
        "out_of_balance": 34, "batch_error": 35, "tls_error": 36}


class Tools:
    def __init__(self, argv):
        if len(argv) < 2:
            raise SystemExit("usage: test_X.py COCONUT_VCARD COCONUT_TERMINAL SDK_TAC_CHECK")
        self.terminal = os.path.abspath(argv[0])
        self.tac_check = os.path.abspath(argv[1])


def explicit_card_profile(tac_check, protocol="T=1", balance_fen=harness.OPENING_BALANCE_FEN):
    """The harness's card with explicit keys: DPK diversified from the master (so the harness's master-level
    PSAM can compute MAC1), and a DTK the test knows in clear."""
    profile = harness.card_profile(protocol=protocol, balance_fen=balance_fen)
    dpk = harness.run([tac_check, "card-key", MASTER_KEYS["dpk"], ISSUER_ID, ASN]).stdout.strip()
    del profile["master_keys"]
    profile["keys"] = {"dpk": dpk, "dlk": MASTER_KEYS["dlk"], "dtk": CARD_DTK, "iak": MASTER_KEYS["iak"],
                       "damk": MASTER_KEYS["damk"], "ssse_iak": MASTER_KEYS["ssse_iak"]}
    return profile


class Terminal:
    """coconut-terminal with fixed readers (PC/SC names or image files), queue, hotlist and fares."""

    def __init__(self, tools, workdir, readers, queue="queue.log", hotlist="hotlist.bin"):
        self.tools = tools
        self.base = [tools.terminal] + readers + ["--queue", os.path.join(workdir, queue),
                                                  "--hotlist", os.path.join(workdir, hotlist)]
        fares_path = os.path.join(workdir, "fares.json")
        with open(fares_path, "w", encoding="utf-8") as out:
            json.dump(FARES, out)
        self.base += ["--fares", fares_path]

    def run(self, args, expect="ok", timeout=60, input_text=None):
        result = subprocess.run(self.base + ["--json"] + args, capture_output=True, text=True, timeout=timeout,
                                input=input_text if input_text is not None else "")
        if result.returncode != EXIT[expect]:
            raise AssertionError(f"coconut-terminal {' '.join(args)}: exit {result.returncode}, expected {EXIT[expect]} "
                                 f"({expect})\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def json(self, args, expect="ok", timeout=60, input_text=None):
        return json.loads(self.run(args, expect, timeout, input_text).stdout)

    def queue(self):
        return self.json(["queue", "list"])


def card_info(vcard, image):
    """The card's own state, read from its image (coconut-vcard info; no keys)."""
    return json.loads(harness.run([vcard, "info", image, "--json"]).stdout)


def card_log(vcard, image):
    """The card's EF18 purchase/load log through the APDU shell: list of dicts, newest first."""
    lines = ["00A4040008A00000063201010500"] + [f"00B2{n:02X}C417" for n in range(1, 11)]
    out = harness.shell(vcard, image, lines)
    records = []
    for line in out[1:]:
        if not line.endswith("9000"):
            break
        data = line.split()[0]
        records.append({"atc": int(data[0:4], 16), "amount_fen": int(data[10:18], 16), "type": data[18:20],
                        "terminal_id": data[20:32], "date": data[32:40], "time": data[40:46]})
    return records


def verify_tacs(tools, records, what):
    """Recomputes the TAC of every record with the card's DTK (sdk_tac_check, coconut::card_crypto)."""
    result = subprocess.run([tools.tac_check, "verify", CARD_DTK], input=json.dumps(records), capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"TAC check of {what} failed:\n{result.stdout}{result.stderr}")
    log(f"  ok  TACs of {what} verify with the card's DTK: {result.stdout.strip().splitlines()[-1]}")


def check_queue_matches_card(vcard, image, queue, opening_balance_fen):
    """Every debit the card performed is in the queue exactly once, and money is conserved:
    ATCs 0 .. offline_atc-1 each once; every EF18 record matched by one queued record; opening balance =
    card balance + sum of queued amounts."""
    info = card_info(vcard, image)
    purchases = [t for t in queue["transactions"] if t["type"] in ("06", "09")]
    atcs = sorted(t["atc"] for t in purchases)
    if atcs != list(range(info["offline_atc"])):
        raise AssertionError(f"queued purchase ATCs {atcs} are not 0 .. {info['offline_atc'] - 1} (the card's offline "
                             "ATC - 1), each once")
    log(f"  ok  queued purchase ATCs are 0 .. {info['offline_atc'] - 1} (card offline ATC - 1), each once")
    for entry in card_log(vcard, image):
        if entry["type"] not in ("06", "09"):
            continue
        matches = [t for t in purchases if t["atc"] + 1 == entry["atc"] and t["amount_fen"] == entry["amount_fen"]
                   and t["type"] == entry["type"] and t["terminal_id"] == entry["terminal_id"]
                   and t["date"] == entry["date"] and t["time"] == entry["time"]]
        if len(matches) != 1:
            raise AssertionError(f"card log record {entry} matches {len(matches)} queued records")
    spent = sum(t["amount_fen"] for t in purchases)
    harness.check_equal("opening balance = card balance + queued charges", info["balance_fen"] + spent,
                        opening_balance_fen)
    return info
