#!/usr/bin/env python3
"""What every binary's command line shares (docs/CLI.md): --version, the exit codes at the end of --help, a
usage error exits 2, a daemon's port in use exits 6, renamed options still work with a warning, the
daemons' config files (--config, `config check`), the hint to start pcscd.

usage: test_cli_conventions.py BUILD_DIR   (the binaries under it, as CMake places them)
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

WAIT_S = 20


def binaries(build):
    return {
        "coconut-clearingd": os.path.join(build, "clearing/daemon/coconut-clearingd"),
        "coconut-hsmd": os.path.join(build, "hsm-stub/coconut-hsmd"),
        "coconut-hsm": os.path.join(build, "hsm-stub/coconut-hsm"),
        "coconut-settle": os.path.join(build, "settlement/coconut-settle"),
        "coconut-terminal": os.path.join(build, "terminal-sdk/coconut-terminal"),
        "coconut": os.path.join(build, "tools/coconut/coconut"),
        "coconut-vcard": os.path.join(build, "card-os-apdu/coconut-vcard"),
        "coconut-card-demo": os.path.join(build, "tools/card-demo/coconut-card-demo"),
    }


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, **kwargs)


def check_every_binary(bins):
    for name, path in bins.items():
        version = run([path, "--version"])
        assert version.returncode == 0 and version.stdout.startswith(name + " 0."), (name, version)
        usage = run([path, "--no-such-option"])
        assert usage.returncode == 2 and "Run with --help" in usage.stderr, (name, usage.returncode, usage.stderr)
        helped = run([path, "--help"])
        assert helped.returncode == 0 and "Exit codes:" in helped.stdout and "  2  " in helped.stdout, (name, helped.stdout[-400:])
        print(f"  ok  {name}: --version '{version.stdout.strip()}', a usage error exits 2, --help lists the exit codes")
    # A subcommand's help carries the table too, and a missing argument of one is a usage error.
    sub = run([bins["coconut-vcard"], "info", "--help"])
    assert "Exit codes:" in sub.stdout, sub.stdout
    missing = run([bins["coconut-vcard"], "info"])
    assert missing.returncode == 2, (missing.returncode, missing.stderr)  # was CLI11's 106
    print("  ok  coconut-vcard info without IMAGE exits 2; a subcommand's --help lists the exit codes")


def hsm_store(bins, work):
    store = os.path.join(work, "store")
    key = os.path.join(work, "clearing.key")
    assert run([bins["coconut-hsmd"], "init", "--store", store]).returncode == 0
    added = run([bins["coconut-hsmd"], "client", "add", "--store", store, "--id", "clearing", "--permissions", "tac,load,auth",
                 "--key-out", key])
    assert added.returncode == 0, added.stderr
    return store, key


def wait_ready(path, process, log_path):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return int(open(path).read().strip())
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {open(log_path).read()}")
        time.sleep(0.05)
    raise AssertionError("no ready file: " + open(log_path).read())


def check_port_in_use(bins, store, key, work):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        hsmd = run([bins["coconut-hsmd"], "serve", "--store", store, "--listen", f"127.0.0.1:{port}"])
        assert hsmd.returncode == 6 and "cannot listen" in hsmd.stderr, (hsmd.returncode, hsmd.stderr)
        data = os.path.join(work, "data")
        clearingd = run([bins["coconut-clearingd"], "serve", "--data", data, "--hsm", "127.0.0.1:1", "--hsm-key", key,
                         "--insecure-terminals", "--iso-listen", f"127.0.0.1:{port}"])
        assert clearingd.returncode == 6, (clearingd.returncode, clearingd.stderr)
        http = run([bins["coconut-clearingd"], "serve", "--data", data, "--hsm", "127.0.0.1:1", "--hsm-key", key,
                    "--insecure-terminals", "--iso-listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{port}"])
        assert http.returncode == 6, (http.returncode, http.stderr)
    finally:
        holder.close()
    print("  ok  a port in use: coconut-hsmd and coconut-clearingd (ISO 8583 and HTTP) exit 6")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def check_config_files(bins, store, key, work):
    hsmd, clearingd = bins["coconut-hsmd"], bins["coconut-clearingd"]
    for daemon in (hsmd, clearingd):
        assert "--config FILE" in run([daemon, "serve", "--help"]).stdout, daemon
    good = write(os.path.join(work, "hsmd.toml"), f'store = "{store}"\nlisten = "127.0.0.1:0"\nconnections-max = 7\n'
                                                  'log-format = "json"\n')
    checked = run([hsmd, "config", "check", good])
    assert checked.returncode == 0 and 'connections-max=7' in checked.stdout.replace(" ", "") \
        and "idle-timeout-ms" in checked.stdout, checked
    for text, named in (("listen = \"127.0.0.1:0\"\nlisten-adress = \"x\"\n", "listen-adress"),
                        ("connections-max = 0\n", "connections-max"),
                        ("threads = \"many\"\n", "threads"),
                        ("[serve]\nlisten = \"127.0.0.1:0\"\n", "sections"),
                        ("listen = \"nowhere\"\n", "listen")):
        bad = write(os.path.join(work, "bad.toml"), f'store = "{store}"\n' + text)
        refused = run([hsmd, "config", "check", bad])
        assert refused.returncode == 2 and named in refused.stderr, (text, refused.returncode, refused.stderr)
        served = run([hsmd, "serve", "--config", bad])
        assert served.returncode == 2 and named in served.stderr, (text, served.returncode, served.stderr)
    print("  ok  coconut-hsmd config check: a good file prints its settings; unknown key, bad values, a section exit 2")

    # The file's values are used, the command line's win over them, an old name warns.
    ready = os.path.join(work, "hsmd.port")
    log_path = os.path.join(work, "hsmd.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([hsmd, "serve", "--config", good, "--ready-file", ready, "--log-format", "text",
                                    "--max-connections-per-client", "3"], stdout=log, stderr=log)
    try:
        wait_ready(ready, process, log_path)
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)
    text = open(log_path).read()
    assert "at most 7 connections" in text and "3 per client" in text, text
    assert "--max-connections-per-client is a deprecated name, use --connections-per-client" in text, text
    assert '"level"' not in text, text  # --log-format text overrode the file's json
    print("  ok  coconut-hsmd serve --config: its values used, the command line overrides, an old option name warns")

    data = os.path.join(work, "data")
    good = write(os.path.join(work, "clearingd.toml"),
                 f'data = "{data}"\nhsm-key = "{key}"\ninsecure-terminals = true\niso-listen = "127.0.0.1:0"\n'
                 'read-idle-timeout-s = 60\nconnections-max = 100\n')
    checked = run([clearingd, "config", "check", good])
    assert checked.returncode == 0 and "idle-timeout-s=60" in checked.stdout.replace(" ", ""), checked
    assert "deprecated name, use --idle-timeout-s" in checked.stderr, checked.stderr
    for text, named in (("conections-max = 5\n", "conections-max"),
                        ("tls-cert = \"a.pem\"\n", "exclude each other"),
                        ("writer-cpu = \"sometimes\"\n", "writer-cpu"),
                        ("map-size = \"12XB\"\n", "map-size"),
                        ("http-listen = \"127.0.0.1:99999\"\n", "http-listen")):
        bad = write(os.path.join(work, "bad.toml"), open(good).read() + text)
        refused = run([clearingd, "config", "check", bad])
        assert refused.returncode == 2 and named in refused.stderr, (text, refused.returncode, refused.stderr)
    missing = write(os.path.join(work, "bad.toml"), 'iso-listen = "127.0.0.1:0"\n')
    refused = run([clearingd, "config", "check", missing])
    assert refused.returncode == 2 and "--data" in refused.stderr, refused.stderr
    print("  ok  coconut-clearingd config check: settings printed; unknown key, bad values, a missing --data exit 2")

    ready = os.path.join(work, "clearingd.port")
    log_path = os.path.join(work, "clearingd.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([clearingd, "serve", "--config", good, "--ready-file", ready, "--connections-max", "50"],
                                   stdout=log, stderr=log)
    try:
        wait_ready(ready, process, log_path)
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)
    text = open(log_path).read()
    assert "terminal connections at most 50" in text and "terminals over PLAIN TCP" in text, text
    print("  ok  coconut-clearingd serve --config: started from the file, --connections-max on the command line won")


def check_renamed_amount(bins):
    # The old spellings parse (and warn) up to where the reader is needed: no usage error.
    old = run([bins["coconut-hsm"], "--client-key", "/nonexistent", "verify-tac", "--issuer", "0" * 16, "--asn", "0" * 20,
               "--amount", "100", "--terminal", "0" * 12, "--date", "20261206", "--time", "120000", "--serial", "1",
               "--tac", "00000000"])
    assert old.returncode == 1 and "deprecated name, use --amount-fen" in old.stderr, (old.returncode, old.stderr)
    both = run([bins["coconut-terminal"], "load", "100", "--amount-fen", "100", "--clearing", "127.0.0.1:1", "--terminal-id", "X"])
    assert both.returncode == 2, (both.returncode, both.stderr)
    neither = run([bins["coconut-terminal"], "load", "--clearing", "127.0.0.1:1", "--terminal-id", "X"])
    assert neither.returncode == 2 and "--amount-fen" in neither.stderr, (neither.returncode, neither.stderr)
    print("  ok  --amount still parses with a warning; load with both or neither amount is a usage error")


def check_pcscd_hint(bins):
    # A PC/SC socket nobody listens on: SCARD_E_NO_SERVICE ("Service not available"), with how to start pcscd.
    env = dict(os.environ, PCSCLITE_CSOCK_NAME="/nonexistent/pcscd.comm")
    refused = run([bins["coconut-terminal"], "readers"], env=env)
    assert refused.returncode == 20, (refused.returncode, refused.stderr)
    assert "Service not available" in refused.stderr and "is pcscd running? (systemctl start pcscd / pcscd --foreground)" \
        in refused.stderr, refused.stderr
    print("  ok  no pcscd: exit 20 and 'is pcscd running? (systemctl start pcscd / pcscd --foreground)'")


def main():
    bins = binaries(sys.argv[1])
    check_every_binary(bins)
    with tempfile.TemporaryDirectory(prefix="coconut-cli-") as work:
        store, key = hsm_store(bins, work)
        check_port_in_use(bins, store, key, work)
        check_config_files(bins, store, key, work)
    check_renamed_amount(bins)
    check_pcscd_hint(bins)
    print("cli conventions: all ok")


if __name__ == "__main__":
    main()
