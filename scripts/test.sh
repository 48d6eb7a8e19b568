#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test (unit, integration, plugin
# loading, end to end with a real Docker engine and fake platform servers on 127.0.0.1),
# then the operator's Telegram walkthrough (skills/add-telegram) against the fake Bot API.
# Installs and starts what the tests need first, idempotently.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export NANOCLAW_HOME=${NANOCLAW_HOME:-$root/data}

scripts/deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
scripts/engine.sh
# End-to-end tests fail, rather than skip, when the engine is missing.
export NANOCLAW_REQUIRE_DOCKER=1
# The Matrix end-to-end tests run against a real homeserver: a local Synapse from PyPI
# (quick when already installed); they fail, rather than skip, without it.
scripts/synapse.sh install
export NANOCLAW_REQUIRE_SYNAPSE=1
# The Claude provider's tests run the real Claude Code CLI (pinned, cached after the first
# fetch); they fail, rather than skip, without it. The Claude image's Debian base is built
# by the first test that needs it (about a minute) and cached by its inputs after that.
scripts/claude-cli.sh >/dev/null
export NANOCLAW_REQUIRE_CLAUDE_CLI=1

cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
scripts/walkthrough-telegram.sh
