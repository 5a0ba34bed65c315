"""coconut-clearingd backup / restore of a single node (docs/OPERATIONS.md "Backup and restore"), on loopback:
coconut-hsmd + coconut-clearingd (tests/clearing/test_clearingd_it.py's stack), purchases by coconut-terminal.

  1. purchases booked; `backup --data D --to B --hsm-store S` while the daemon serves (the balances, the
     journal head and the card images' balances recorded at that moment: nothing is booked meanwhile);
     an audit log whose last line is half written is copied up to its last complete line;
  2. more purchases booked after the backup; a second backup (--compact) while a terminal uploads;
  3. the daemon stopped; `restore --from B --data R --hsm-store H` into a fresh directory: `check` passes,
     every card's shadow balance (registry and ledger) equals the card image's balance at backup time, the
     journal head is the backup's, the participants' payables are those at backup time (not the later
     ones); the restored HSM store holds keys.sealed and the audit log but no master.key, and with the
     original master.key (as its custodians would bring it) `coconut-hsmd audit verify` passes and the
     daemon serves the restored data directory: /healthz 200;
  4. the compacted backup restores too, and its check passes;
  5. bad inputs: a missing source and a directory that is not a backup (exit 5), a backup into a non-empty
     directory (5), an HSM store that is none and a restore asking for the HSM store of a backup without one (5), a restore into a non-empty directory without --force (5) and one a daemon serves with
     --force (3), a data.mdb changed by one byte and a missing token key (exit 4, "damaged", nothing
     created), --force onto a stopped directory replaces it.

  test_clearingd_backup.py HSMD CLEARINGD TERMINAL VCARD
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_clearingd_it import CARDS, Stack, log, run, wait_ready_file  # noqa: E402

EXIT_LOCKED, EXIT_STORAGE, EXIT_BAD_INPUT = 3, 4, 5
AMOUNT = 7


def book(stack, per_card):
    """per_card purchases on every card (terminal BUS00001's PSAM), uploaded."""
    for card in range(len(CARDS)):
        stack.purchases(card, 0, "bus.queue", AMOUNT, per_card)
    stack.upload("bus.queue", 0)
    assert stack.queue_list("bus.queue")["count"] == 0


def balances(stack, data):
    cards = json.loads(run([stack.clearingd, "admin", "--data", data, "list", "cards"]).stdout)
    participants = json.loads(run([stack.clearingd, "admin", "--data", data, "list", "participants"]).stdout)
    return ({c["asn"]: (c["shadow_balance_fen"], c["ledger_shadow_balance_fen"]) for c in cards},
            {p["id"]: p.get("purse_payable_fen", 0) for p in participants})


def check(stack, data):
    result = run([stack.clearingd, "check", "--data", data, "--json"], check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], f"check of {data} failed: {result.stdout}{result.stderr}"
    return report


def expect_failure(argv, code, words):
    result = run(argv, check=False)
    assert result.returncode == code, (argv, result.returncode, result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr, (argv, word, result.stderr)
    return result


def serve_restored(stack, work, data):
    """The restored directory served: /healthz 200."""
    http_ready = os.path.join(work, "restored.http")
    saved = stack.data
    stack.data = data
    try:
        stack.start_daemon(extra=["--http-listen", "127.0.0.1:0", "--http-ready-file", http_ready])
        port = wait_ready_file(http_ready, stack.daemon, "coconut-clearingd (restored)")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        log("  ok  the restored directory serves: /healthz 200")
    finally:
        stack.data = saved


def bad_inputs(stack, work, backup, restored_data):
    cd = stack.clearingd
    expect_failure([cd, "restore", "--from", os.path.join(work, "nowhere"), "--data", os.path.join(work, "r1")], EXIT_BAD_INPUT,
                   ["does not exist"])
    expect_failure([cd, "restore", "--from", stack.dir, "--data", os.path.join(work, "r1")], EXIT_BAD_INPUT, ["not a coconut-clearingd backup"])
    expect_failure([cd, "backup", "--data", os.path.join(work, "nowhere"), "--to", os.path.join(work, "b1")], EXIT_BAD_INPUT, ["holds no ledger"])
    expect_failure([cd, "backup", "--data", stack.data, "--to", backup], EXIT_BAD_INPUT, ["is not empty"])
    expect_failure([cd, "restore", "--from", backup, "--data", restored_data], EXIT_BAD_INPUT, ["is not empty", "--force"])
    expect_failure([cd, "backup", "--data", stack.data, "--to", os.path.join(work, "b1"), "--hsm-store", os.path.join(work, "nowhere")],
                   EXIT_BAD_INPUT, ["holds no HSM store"])
    expect_failure([cd, "restore", "--from", os.path.join(work, "backup-compact"), "--data", os.path.join(work, "r1"), "--hsm-store",
                    os.path.join(work, "h1")], EXIT_BAD_INPUT, ["holds no HSM store", "without --hsm-store"])
    assert not os.path.exists(os.path.join(work, "r1")) and not os.path.exists(os.path.join(work, "b1"))
    damaged = os.path.join(work, "damaged")
    shutil.copytree(backup, damaged)
    with open(os.path.join(damaged, "data.mdb"), "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0x01]))
    target = os.path.join(work, "from-damaged")
    expect_failure([cd, "restore", "--from", damaged, "--data", target], EXIT_STORAGE, ["damaged", "data.mdb", "SHA-256"])
    os.remove(os.path.join(damaged, "data.mdb"))
    shutil.copy(os.path.join(backup, "data.mdb"), damaged)
    os.remove(os.path.join(damaged, "http-token.key"))
    expect_failure([cd, "restore", "--from", damaged, "--data", target], EXIT_STORAGE, ["damaged", "http-token.key", "missing"])
    assert not os.path.exists(target) and not [n for n in os.listdir(work) if n.startswith(".from-damaged")]
    log("  ok  bad inputs: missing source / not a backup / no ledger / non-empty targets (5), damaged copies (4), nothing left")


def main():
    tools = sys.argv[1:5]
    work = tempfile.mkdtemp(prefix="coconut-backup-")
    stack = Stack(tools, work)
    try:
        stack.setup()
        stack.start_daemon()
        book(stack, 3)
        at_backup = balances(stack, stack.data)  # read-only while it serves; nothing books meanwhile
        images = {asn: stack.card_balance(i) for i, asn in enumerate(CARDS)}
        backup = os.path.join(work, "backup")
        out = run([stack.clearingd, "backup", "--data", stack.data, "--to", backup, "--hsm-store", stack.store]).stdout
        log(f"  {out.strip()}")
        manifest = json.load(open(os.path.join(backup, "backup.json")))
        assert set(manifest["files"]) == {"data.mdb", "http-token.key", "hsm/keys.sealed", "hsm/audit.log"}, manifest["files"]
        assert not os.path.exists(os.path.join(backup, "hsm", "master.key"))
        assert oct(os.stat(backup).st_mode & 0o777) == "0o700"
        log("  ok  backup while serving: data.mdb, http-token.key, the HSM store without master.key; 0700")
        torn = os.path.join(work, "hsm-torn")  # an audit line being appended while the backup reads the log
        shutil.copytree(stack.store, torn)
        whole = open(os.path.join(torn, "audit.log"), "rb").read()
        with open(os.path.join(torn, "audit.log"), "ab") as f:
            f.write(b'{"seq":999,"event":"half a li')
        run([stack.clearingd, "backup", "--data", stack.data, "--to", os.path.join(work, "backup-torn"), "--hsm-store", torn])
        assert open(os.path.join(work, "backup-torn", "hsm", "audit.log"), "rb").read() == whole
        log("  ok  an audit line half written is left out of the backup (the log up to its last complete line)")

        book(stack, 2)  # after the backup
        for card in range(len(CARDS)):  # uploaded while the second backup is taken
            stack.purchases(card, 0, "bus.queue", AMOUNT, 2)
        argv = [stack.terminal, "--json", "--queue", os.path.join(stack.dir, "bus.queue"), "upload", "--clearing",
                f"127.0.0.1:{stack.port}", "--terminal-id", "BUS00001", "--timeout-ms", "10000", *stack.tls.terminal_args("BUS00001")]
        uploading = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        compacted = os.path.join(work, "backup-compact")
        run([stack.clearingd, "backup", "--data", stack.data, "--to", compacted, "--compact"])
        assert uploading.wait(timeout=300) == 0, uploading.stderr.read()
        assert balances(stack, stack.data) != at_backup
        assert stack.stop_daemon() == 0
        live_sequence = check(stack, stack.data)["journal_head"]["sequence"]

        restored = os.path.join(work, "restored")
        hsm = os.path.join(work, "restored-hsm")
        out = run([stack.clearingd, "restore", "--from", backup, "--data", restored, "--hsm-store", hsm]).stdout
        log(f"  {out.strip()}")
        report = check(stack, restored)
        assert report["journal_head"]["sequence"] == manifest["journal_sequence"] < live_sequence, (report, manifest, live_sequence)
        restored_balances = balances(stack, restored)
        assert restored_balances == at_backup, (restored_balances, at_backup)
        for asn, (shadow, ledger_shadow) in restored_balances[0].items():
            assert shadow == ledger_shadow == images[asn], (asn, shadow, ledger_shadow, images[asn])
        log("  ok  restore: check passes; journal head, card shadows (= card images then) and payables are those at backup time")

        assert sorted(os.listdir(hsm)) == ["audit.log", "keys.sealed"], os.listdir(hsm)
        shutil.copy(os.path.join(stack.store, "master.key"), hsm)
        os.chmod(os.path.join(hsm, "master.key"), 0o600)
        run([stack.hsmd, "audit", "verify", "--store", hsm])
        run([stack.hsmd, "key", "list", "--store", hsm])
        log("  ok  the restored HSM store (with the custodians' master.key) opens and its audit chain verifies")

        compact_restored = os.path.join(work, "restored-compact")
        run([stack.clearingd, "restore", "--from", compacted, "--data", compact_restored])
        check(stack, compact_restored)
        log("  ok  the compacted backup taken during uploads restores and passes check")

        serve_restored(stack, work, restored)
        bad_inputs(stack, work, backup, restored)
        stack.data, saved = restored, stack.data
        expect_failure([stack.clearingd, "restore", "--from", backup, "--data", restored, "--force"], EXIT_LOCKED, ["in use"])
        stack.stop_daemon()
        stack.data = saved
        run([stack.clearingd, "admin", "--data", restored, "card-status", CARDS[0], "blocked"])  # the directory moves on

        def status(data):
            return {c["asn"]: c["status"] for c in json.loads(run([stack.clearingd, "admin", "--data", data, "list", "cards"]).stdout)}

        assert status(restored)[CARDS[0]] == "blocked"
        run([stack.clearingd, "restore", "--from", backup, "--data", restored, "--force"])
        assert status(restored)[CARDS[0]] == "active" and balances(stack, restored) == at_backup
        assert check(stack, restored)["journal_head"]["sequence"] == manifest["journal_sequence"]
        log("  ok  --force: refused while a daemon serves the directory (3), replaces it once stopped")
        log("backup: all checks passed")
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
