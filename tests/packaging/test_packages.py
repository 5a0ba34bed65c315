#!/usr/bin/env python3
"""The Debian packages installed into a fresh root and run from it (docs/OPERATIONS.md "Packages").

No container engine and no systemd as PID 1 here, so:
  1. `cpack -G DEB` builds coconut-clearingd, coconut-hsmd, coconut-tools (and libcoconut-sdk-dev when
     the SDK has install rules); each package's control fields: its name, the libraries dpkg-shlibdeps
     found (libc6, libssl3, liblmdb0 …), systemd, its conffiles and maintainer scripts.
  2. A fresh root with an empty dpkg database and the base system's unit directory, and
     `dpkg --root ROOT --force-script-chrootless -i` the packages. chrootless: the root holds no shell
     to run maintainer scripts in, so dpkg runs them on this machine with DPKG_ROOT=ROOT, and they are
     written for that (systemd-sysusers --root, names resolved in ROOT/etc/group, systemctl not asked).
     --force-depends: the root's database does not list libc6 & co., which are this machine's. Checked:
     the system users in ROOT/etc/passwd (nologin), /etc/coconut/<daemon>/ 0750 root:<user>, every
     package "install ok installed" with its conffiles.
  3. `systemd-analyze --root ROOT verify` of the installed units and timer (not a word of warning; a
     misspelt value in a copy is reported, so the check sees one), and `security --offline`
     with an exposure threshold of 2.0 for the daemons.
  4. The installed binaries run from ROOT: every tool's --help; `config check` of the installed configs
     (when the daemons have it); a store made with ROOT's coconut-hsmd,
     then coconut-hsmd and coconut-clearingd started with ROOT's default configs adjusted to a temporary
     directory and free loopback ports (every other key as installed); the clearing's /healthz answers
     200 "ok" (and coconut-hsmd's, when it has a status port); coconut-settle.service's own command
     settles yesterday's business date against it, and again with nothing new; both daemons stopped by
     PID (SIGTERM: exit 0).
  5. `dpkg --root ROOT -P coconut-hsmd`: conffile and unit gone, the store directory and user kept.

  test_packages.py BUILD_DIR     (as root, like dpkg; exit 77 = skipped otherwise)
"""
import datetime
import json
import re
import os
import shutil
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

WAIT_S = 30
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
MULTIARCH = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True, text=True).stdout.strip() or \
    "x86_64-linux-gnu"
DAEMONS = {  # package: (system user, config, unit)
    "coconut-clearingd": ("coconut-clearing", "clearingd.toml", "coconut-clearingd.service"),
    "coconut-hsmd": ("coconut-hsm", "hsmd.toml", "coconut-hsmd.service"),
}
TOOLS = ["coconut", "coconut-terminal", "coconut-settle", "coconut-vcard", "coconut-hsm"]


def log(text):
    print(text, flush=True)


def run(argv, check=True, timeout=300, env=None, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input_text)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def build_packages(build, out):
    run(["cpack", "-G", "DEB", "--config", os.path.join(build, "CPackConfig.cmake"), "-B", out], timeout=600)
    debs = {}
    for name in os.listdir(out):
        if name.endswith(".deb"):
            package = run(["dpkg-deb", "-f", os.path.join(out, name), "Package"]).stdout.strip()
            debs[package] = os.path.join(out, name)
    for package in ["coconut-clearingd", "coconut-hsmd", "coconut-tools"]:
        assert package in debs, f"cpack made no {package}: {sorted(debs)}"
    log(f"  ok  cpack -G DEB: {', '.join(sorted(debs))}")
    return debs


def control(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


def check_control(debs):
    for package in ["coconut-clearingd", "coconut-hsmd"]:
        depends = control(debs[package], "Depends")
        for needed in ["libc6", "libssl3", "systemd"]:
            assert needed in depends, f"{package} Depends: {depends} (no {needed})"
        listing = run(["dpkg-deb", "-I", debs[package]]).stdout
        for script in ["postinst", "prerm", "postrm", "conffiles"]:
            assert f" {script}" in listing, f"{package} has no {script}:\n{listing}"
    assert "liblmdb0" in control(debs["coconut-clearingd"], "Depends")
    if "libcoconut-sdk-dev" in debs:
        assert "libssl-dev" in control(debs["libcoconut-sdk-dev"], "Depends")
    log("  ok  Depends from dpkg-shlibdeps (libc6, libssl3, liblmdb0) and systemd; maintainer scripts and conffiles")


def make_root(root):
    """An empty dpkg database, and what the base system gives the units (sysinit.target & co., /bin/sh)."""
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "bin", "lib/systemd"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"]:
        open(os.path.join(root, f), "w").close()
    shutil.copytree("/lib/systemd/system", os.path.join(root, "lib/systemd/system"), symlinks=True)
    for program in ["/bin/sh", "/bin/kill"]:
        shutil.copy(program, os.path.join(root, "bin"))


def dpkg(root, *args):
    force = ["--force-script-chrootless", "--force-depends"]
    return run(["dpkg", f"--root={root}", f"--log={os.path.join(root, 'dpkg.log')}", *force, *args], timeout=300)


def installed_ok(root, debs):
    status = open(os.path.join(root, "var/lib/dpkg/status")).read()
    for package in debs:
        stanza = status.split(f"Package: {package}\n")[1].split("\n\n")[0]
        assert "Status: install ok installed" in stanza, stanza
    passwd = {line.split(":")[0]: line.split(":") for line in open(os.path.join(root, "etc/passwd")).read().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in open(os.path.join(root, "etc/group")).read().splitlines()}
    for package, (user, config, unit) in DAEMONS.items():
        assert user in passwd and passwd[user][6].endswith("nologin"), (user, passwd.get(user))
        assert f"/etc/coconut/{config}" in status.split(f"Package: {package}\n")[1].split("\n\n")[0], f"{config} not a conffile"
        assert os.path.isfile(os.path.join(root, "lib/systemd/system", unit)), unit
        secrets = os.path.join(root, "etc/coconut", "clearingd" if package == "coconut-clearingd" else "hsmd")
        st = os.stat(secrets)
        assert oct(st.st_mode & 0o777) == "0o750" and st.st_uid == 0 and st.st_gid == int(groups[user][2]), (secrets, st)
    if "libcoconut-sdk-dev" in debs:
        for path in ["usr/lib/cmake/Coconut/CoconutConfig.cmake", "usr/lib/pkgconfig/coconut-sdk.pc", "usr/include/coconut/version.hpp"]:
            assert os.path.isfile(os.path.join(root, path)), f"libcoconut-sdk-dev installed no /{path}"
    log("  ok  dpkg --root: installed, system users (nologin), /etc/coconut/<daemon>/ 0750 root:<user>, conffiles")


def verify_units(root):
    units = [os.path.join(root, "lib/systemd/system", u) for u in
             ["coconut-clearingd.service", "coconut-hsmd.service", "coconut-settle.service", "coconut-settle.timer"]]
    result = run(["systemd-analyze", f"--root={root}", "verify", *units])
    assert not result.stderr.strip() and not result.stdout.strip(), result.stderr  # a bad value is only a warning
    broken = os.path.join(root, "lib/systemd/system", "coconut-broken.service")  # what verify reports
    with open(units[1]) as f, open(broken, "w") as out:
        out.write(f.read().replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    result = run(["systemd-analyze", f"--root={root}", "verify", broken], check=False)
    assert "strictly" in result.stderr, result.stderr
    os.remove(broken)
    for unit in units[:2]:  # --threshold counts tenths of the 0.0–10.0 exposure printed
        result = run(["systemd-analyze", f"--root={root}", "security", "--offline=true", "--threshold=20", unit], check=False)
        assert result.returncode == 0, f"{unit}: exposure over 2.0\n{result.stdout[-400:]}"
    log("  ok  systemd-analyze verify (units, timer); security --offline: daemons' exposure at most 2.0")


def wait_file(path, process, what):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        if os.path.exists(path) and open(path).read().strip():
            return int(open(path).read().strip())
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready within {WAIT_S} s")


def serve_argv(binary, config, settings, env):
    """serve with the installed config adjusted: through --config when the binary reads one, else as flags."""
    help_text = run([binary, "serve", "--help"], env=env).stdout
    if "--config" in help_text:
        path = config + ".test.toml"
        with open(path, "w") as f:
            for key, value in settings.items():
                f.write(f"{key} = {json.dumps(value)}\n")
        return [binary, "serve", "--config", path]
    argv = [binary, "serve"]
    for key, value in settings.items():
        assert f"--{key}" in help_text, f"{config}: {key} is not an option of {binary} serve"
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return argv


def healthz(port, what):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        body = json.loads(r.read())
        assert r.status == 200 and body["status"] == "ok", (what, r.status, body)


def stop(process, what):
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=WAIT_S)
    assert code == 0, f"{what} exited {code} on SIGTERM"


def settle_like_the_timer(root, work, env, data, http_port):
    """coconut-settle.service's command, with the paths moved into ROOT and the temporary directory."""
    unit = open(os.path.join(root, "lib/systemd/system/coconut-settle.service")).read().replace("\\\n", " ")
    command = [line for line in unit.splitlines() if line.startswith("ExecStart=")][0][len("ExecStart="):]
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"], argv
    script = argv[2].replace("%%", "%")
    for installed, here in [("/usr/bin/", os.path.join(root, "usr/bin") + "/"), ("/var/lib/coconut-clearingd", data),
                            ("/etc/coconut/settlement.json", os.path.join(root, "etc/coconut/settlement.json")),
                            ("http://127.0.0.1:8080", f"http://127.0.0.1:{http_port}"),
                            ("/etc/coconut/settlement.token", os.path.join(work, "settlement.token")),
                            ("/usr/share/coconut/schemas", os.path.join(root, "usr/share/coconut/schemas")),
                            ("/var/lib/coconut-settlement", os.path.join(work, "settlement"))]:
        assert installed in script, (installed, script)
        script = script.replace(installed, here)
    def yesterday_utc8():
        return (datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))) - datetime.timedelta(days=1)).strftime("%Y%m%d")

    days = {yesterday_utc8()}
    first = run(["/bin/sh", "-c", script], env=env, timeout=120)
    again = run(["/bin/sh", "-c", script], env=env, timeout=120)
    cycles = os.listdir(os.path.join(work, "settlement"))
    days.add(yesterday_utc8())  # a run across 00:00 UTC+8 may settle either day
    assert len(cycles) == 1 and cycles[0] in days, (cycles, days)
    assert "posted" in first.stdout and "0 new" in again.stdout, (first.stdout, again.stdout)
    log(f"  ok  coconut-settle.service's command: cycle {cycles[0]} (yesterday in UTC+8) posted; run again: nothing new")


def run_daemons(root, work):
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(root, "usr/lib", MULTIARCH))
    bin_dir = os.path.join(root, "usr/bin")
    for tool in TOOLS + ["coconut-clearingd", "coconut-hsmd"]:
        run([os.path.join(bin_dir, tool), "--help"], env=env)
    log(f"  ok  {', '.join(TOOLS)}, coconut-clearingd, coconut-hsmd --help from the root")
    for daemon, config in [("coconut-clearingd", "clearingd.toml"), ("coconut-hsmd", "hsmd.toml")]:
        binary = os.path.join(bin_dir, daemon)
        if re.search(r"^\s+config\s", run([binary, "--help"], env=env).stdout, re.M):  # the subcommand `config check FILE`
            run([binary, "config", "check", os.path.join(root, "etc/coconut", config)], env=env)
            example = os.path.join(root, "usr/share/doc", daemon, "examples", daemon + ".toml")
            run([binary, "config", "check", example], env=env)
            log(f"  ok  {daemon} config check: /etc/coconut/{config} and the packaged example")
    hsmd, clearingd = os.path.join(bin_dir, "coconut-hsmd"), os.path.join(bin_dir, "coconut-clearingd")
    store, key = os.path.join(work, "hsm"), os.path.join(work, "clearing.key")
    run([hsmd, "init", "--store", store], env=env)
    run([hsmd, "client", "add", "--store", store, "--id", "clearing", "--permissions", "tac,load,auth", "--key-out", key], env=env)
    processes = []
    try:
        hsm_settings = tomllib.load(open(os.path.join(root, "etc/coconut/hsmd.toml"), "rb"))
        hsm_settings.update({"store": store, "listen": "127.0.0.1:0", "ready-file": os.path.join(work, "hsm.port")})
        hsm_status = "--http-port" in run([hsmd, "serve", "--help"], env=env).stdout  # /healthz, /metrics
        if hsm_status:
            hsm_settings.update({"http-port": 0, "http-ready-file": os.path.join(work, "hsm.http")})
        hsm = subprocess.Popen(serve_argv(hsmd, os.path.join(work, "hsmd"), hsm_settings, env), env=env,
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "hsmd.log"), "w"))
        processes.append(hsm)
        hsm_port = wait_file(hsm_settings["ready-file"], hsm, "coconut-hsmd")
        if hsm_status:
            healthz(wait_file(hsm_settings["http-ready-file"], hsm, "coconut-hsmd's status port"), "coconut-hsmd")
        settings = tomllib.load(open(os.path.join(root, "etc/coconut/clearingd.toml"), "rb"))
        for tls in ["tls-cert", "tls-key", "tls-ca"]:  # terminals' TLS is not what this checks
            settings.pop(tls)
        settings.update({"data": os.path.join(work, "data"), "iso-listen": "127.0.0.1:0", "http-listen": "127.0.0.1:0",
                         "hsm": f"127.0.0.1:{hsm_port}", "hsm-key": key, "insecure-terminals": True,
                         "ready-file": os.path.join(work, "iso.port"), "http-ready-file": os.path.join(work, "http.port")})
        os.makedirs(settings["data"])
        token = run([clearingd, "admin", "--data", settings["data"], "clerk-add", "--name", "settlement", "--roles", "settlement"],
                    env=env).stdout.strip()
        with open(os.path.join(work, "settlement.token"), "w") as f:
            f.write(token + "\n")
        daemon = subprocess.Popen(serve_argv(clearingd, os.path.join(work, "clearingd"), settings, env), env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "clearingd.log"), "w"))
        processes.append(daemon)
        http_port = wait_file(settings["http-ready-file"], daemon, "coconut-clearingd")
        healthz(http_port, "coconut-clearingd")
        log(f"  ok  coconut-hsmd (port {hsm_port}) and coconut-clearingd from the root with the installed configs: "
            f"/healthz 200 ok ({'both' if hsm_status else 'the clearing; this coconut-hsmd has no status port'})")
        settle_like_the_timer(root, work, env, settings["data"], http_port)
        stop(daemon, "coconut-clearingd")
        stop(hsm, "coconut-hsmd")
        log("  ok  both stopped by PID with SIGTERM, exit 0")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT_S)


def purge(root):
    store = os.path.join(root, "var/lib/coconut-hsm")
    os.makedirs(store)
    dpkg(root, "-P", "coconut-hsmd")
    assert not os.path.exists(os.path.join(root, "etc/coconut/hsmd.toml"))
    assert not os.path.exists(os.path.join(root, "lib/systemd/system/coconut-hsmd.service"))
    assert os.path.isdir(store) and "coconut-hsm:" in open(os.path.join(root, "etc/passwd")).read()
    log("  ok  dpkg -P coconut-hsmd: conffile and unit gone, the store directory and the user kept")


def main():
    build = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:  # the packages' files are root's, and postinst gives /etc/coconut/<daemon> to root
        log("packages: skipped, dpkg --root installs root-owned files: run as root (CI's container is)")
        sys.exit(77)
    work = tempfile.mkdtemp(prefix="coconut-packages-")
    try:
        debs = build_packages(build, os.path.join(work, "debs"))
        check_control(debs)
        root = os.path.join(work, "root")
        make_root(root)
        dpkg(root, "-i", *debs.values())
        installed_ok(root, debs)
        verify_units(root)
        run_daemons(root, work)
        purge(root)
        log("packages: all checks passed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
