#!/usr/bin/env bash
# Installs every Debian 12 package Coconut Card needs to build, test and run — nothing else.
# Idempotent: packages already present are not reinstalled, and apt is not touched when nothing is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake pkg-config git ninja-build clang libclang-rt-14-dev
  # crypto, storage, PC/SC
  libssl-dev libsodium-dev liblmdb-dev lmdb-utils libpcsclite-dev
  # real PC/SC stack for tests and the demo (PCSC.md)
  pcscd vsmartcard-vpcd pcsc-tools opensc python3-pyscard
  # network, text, tests, XML
  libboost-dev libfmt-dev nlohmann-json3-dev libcli11-dev doctest-dev libxml2-dev libxml2-utils
  libbenchmark-dev
  # HTTP API tests and benchmark: the balance page in headless Chromium, the query load from wrk
  chromium wrk curl
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
