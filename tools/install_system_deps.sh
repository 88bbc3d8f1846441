#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, if missing.
set -euo pipefail
packages=(libgtest-dev ninja-build cmake g++ clang libclang-rt-14-dev python3.11-venv python3.11-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
