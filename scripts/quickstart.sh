#!/usr/bin/env bash
# NanoClaw quickstart: from a clean clone to a chat with your own agent, no account needed.
#
#   scripts/quickstart.sh              build, start the host, open an interactive chat
#   scripts/quickstart.sh -m "hello"   the same, but send one message, print the reply, exit
#   scripts/quickstart.sh --stop       stop the host
#
# It installs what is missing (Debian packages, the Rust toolchain), starts the Docker engine
# if needed, builds NanoClaw and the agent image, creates your agent on the local `cli`
# channel (with the mock provider: no API key), starts `nanoclaw run` in the background and
# opens `nanoclaw chat`. Running it again reuses everything already done. Data lives in
# ./data (or $NANOCLAW_HOME); the host's log is data/logs/nanoclaw.log.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export NANOCLAW_HOME=${NANOCLAW_HOME:-$root/data}
pidfile=$NANOCLAW_HOME/nanoclaw.pid
nanoclaw=$root/target/release/nanoclaw

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if [ "${1:-}" = "--stop" ]; then
  if running; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 60); do running || break; sleep 0.5; done
    echo "nanoclaw stopped"
  else
    echo "nanoclaw is not running"
  fi
  rm -f "$pidfile"
  exit 0
fi

step() { printf '\n==> %s\n' "$*"; }

step "Checking dependencies"
scripts/deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step "Starting the Docker engine (if it is not running)"
scripts/engine.sh

step "Building NanoClaw (release; the first build takes a few minutes)"
cargo build --release --locked -p nanoclaw -p nanoclaw-plugin-channels -p nanoclaw-agent-runner

step "Building the agent image"
container/build.sh --binary "$root/target/release/nanoclaw-agent" >/dev/null
echo "nanoclaw-agent:latest is ready"

user=$(id -un)
folder="dm-with-$(printf '%s' "$user" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' '-' | sed 's/--*/-/g; s/^-//; s/-$//')"
if ! "$nanoclaw" --json groups list | grep -q "\"folder\": \"$folder\""; then
  step "Creating your agent on the local chat channel"
  "$nanoclaw" init-first-agent --user "cli:$user" --chat "$user" --name "$user"
fi

if ! running; then
  step "Starting the host (log: $NANOCLAW_HOME/logs/nanoclaw.log)"
  mkdir -p "$NANOCLAW_HOME/logs"
  nohup "$nanoclaw" run --plugins "$root/plugins.toml" >>"$NANOCLAW_HOME/logs/nanoclaw.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 60); do
    [ -S "$NANOCLAW_HOME/plugins/cli/chat.sock" ] && break
    running || { echo "the host exited; see $NANOCLAW_HOME/logs/nanoclaw.log" >&2; tail -n 20 "$NANOCLAW_HOME/logs/nanoclaw.log" >&2; exit 1; }
    sleep 0.5
  done
fi

cat <<EOF

NanoClaw is running. Your agent uses the mock provider (it echoes; no account needed).
  chat again:        target/release/nanoclaw chat
  check the install: target/release/nanoclaw doctor
  stop the host:     scripts/quickstart.sh --stop
  use Claude:        put ANTHROPIC_API_KEY=... in $NANOCLAW_HOME/.env, then
                     container/build.sh --claude
                     target/release/nanoclaw groups set $folder --provider claude
                     and restart the host (see skills/setup/SKILL.md)
EOF
step "Opening a chat with your agent (type /quit to leave)"
exec "$nanoclaw" chat "$@"
