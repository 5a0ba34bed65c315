#!/usr/bin/env bash
# Installs every Debian 12 package Coconut Card needs to build, test and run — nothing else.
# Idempotent: packages already present are not reinstalled, and apt is not touched when nothing is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake pkg-config git ninja-build clang libclang-rt-14-dev
  # lint (tools/lint: clang-format and clang-tidy 14, in CI)
  clang-format-14 clang-tidy-14
  # crypto, storage, PC/SC
  libssl-dev openssl libsodium-dev liblmdb-dev lmdb-utils libpcsclite-dev
  # real PC/SC stack for tests and the demo (docs/PCSC.md)
  pcscd vsmartcard-vpcd pcsc-tools opensc python3-pyscard
  # network, text, tests, XML
  libboost-dev libfmt-dev nlohmann-json3-dev libcli11-dev doctest-dev libxml2-dev libxml2-utils
  libbenchmark-dev
  # the terminal SDK's API reference (terminal-sdk/Doxyfile, target sdk-docs)
  doxygen
  # HTTP API tests and benchmark: the balance page in headless Chromium, the query load from wrk
  chromium wrk curl
  # the balance page in Chinese (screenshots), activation letters' QR codes and the test that decodes them
  fonts-noto-cjk libqrencode-dev zbar-tools
  # the clearing cluster (clearing/cluster): NATS JetStream servers and the C client
  nats-server libnats-dev
  # its journal messages are zstd-compressed change sets
  libzstd-dev
  # promtool (in Debian's prometheus package): the tests check every /metrics text and ops/ alert rules with it
  prometheus
  # tests/ops reads the alert rules and their unit tests (YAML)
  python3-yaml
  # Debian packages (cpack -G DEB: dpkg-shlibdeps) and their install test (systemd-analyze, systemd-sysusers)
  dpkg-dev systemd
)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# vpcd, pcscd's virtual reader driver, listens on 35963 (slot 0, the card) and 35964 (slot 1, the PSAM):
# inside Linux's ephemeral range (32768-60999), so any outgoing connection on the machine may take one
# of them as its local port, and a pcscd started meanwhile gets "Address already in use" and no reader
# (docs/PCSC.md §7). Reserve them, so the kernel never hands them out (a runtime setting, checked each time).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
vpcd_ports=35963-35964
if [ -r "$reserved" ] && ! grep -Eq "(^|,)${vpcd_ports}(,|$)" "$reserved"; then
  current=$(cat "$reserved")
  if echo "${current:+$current,}${vpcd_ports}" | "${sudo_cmd[@]}" tee "$reserved" >/dev/null 2>&1; then
    echo "setup: vpcd ports ${vpcd_ports} reserved (net.ipv4.ip_local_reserved_ports = $(cat "$reserved"))"
  else
    echo "setup: warning: cannot reserve the vpcd ports ${vpcd_ports} (net.ipv4.ip_local_reserved_ports);" \
         "a PC/SC test may then fail now and then with 'Address already in use' in pcscd's log" >&2
  fi
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

# npx runs the OpenAPI linter (@redocly/cli, from the npm registry) in the tests: Debian's nodejs and
# npm unless a Node.js with npx is installed already (its own npm must not be replaced by Debian's).
if ! command -v npx >/dev/null 2>&1; then
  for package in nodejs npm; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
