#!/usr/bin/env bash
# Installs what building and testing NanoClaw needs on Debian, idempotently: a C toolchain
# (for SQLite and ring), the Docker engine, Python 3 (a test fakes the Claude CLI with it;
# the Matrix tests run Synapse in a virtualenv), debootstrap (the Claude image's base) and
# npm (the Claude Code CLI comes from its npm package: scripts/claude-cli.sh).
# Nothing is installed when it is already there. Needs root (or sudo) only to install.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The Matrix tests' local Synapse lives in a virtualenv (scripts/synapse.sh).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
# container/build.sh --claude: the Debian base from packages, the CLI from npm.
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The package-install tests serve a local apt repository (dpkg-scanpackages).
command -v dpkg-scanpackages >/dev/null 2>&1 || need+=(dpkg-dev)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps.sh: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "deps.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps.sh: cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)" >&2
  else
    echo "deps.sh: installing the Rust toolchain with rustup (https://rustup.rs)"
    curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
  echo "deps.sh: rustc $have is older than the required $want; run: rustup update stable" >&2
  exit 1
fi
