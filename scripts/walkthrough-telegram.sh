#!/usr/bin/env bash
# The Telegram walkthrough, non-interactively: the steps of skills/add-telegram/SKILL.md,
# "Testing without Telegram", with the fake Bot API standing in for Telegram, from this
# checkout to the first agent's welcome DM.
#
#   scripts/walkthrough-telegram.sh [--keep]
#
# 1. builds nanoclaw, the cli and telegram plugins and fake-telegram (cargo, debug);
# 2. builds the agent image $NANOCLAW_IMAGE (default nanoclaw-agent:walkthrough) from this
#    checkout with container/build.sh --debug;
# 3. in a temp dir: starts `fake-telegram serve`, puts its printed token in data/.env, adds
#    the telegram plugin to plugins.toml with api_base_url pointing at the fake, runs
#    `nanoclaw plugins check`, starts `nanoclaw run`, pairs with `nanoclaw pair telegram`
#    (the user's side played with `fake-telegram send`), runs `nanoclaw init-first-agent`,
#    and waits for the welcome in `fake-telegram sent`; then says hello and waits for the
#    answer.
#
# Prints WALKTHROUGH OK and exits 0 when the welcome and the answer arrived; otherwise
# prints what went wrong with the logs and exits non-zero. Always cleans up: the daemon,
# the fake, the install's containers and the temp dir (--keep leaves the temp dir).
# Needs a Docker engine. Talks to 127.0.0.1 only.
set -euo pipefail

keep=0
case "${1:-}" in
  --keep) keep=1 ;;
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "walkthrough: unknown option $1" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${NANOCLAW_IMAGE:-nanoclaw-agent:walkthrough}
# The operator's defaults: ./data and ./plugins.toml in the directory nanoclaw runs in.
unset NANOCLAW_HOME NANOCLAW_PLUGINS

step() { printf '\n==> %s\n' "$*"; }
fail() {
  printf '\nWALKTHROUGH FAILED: %s\n' "$*" >&2
  for log in fake.log daemon.log pair.out; do
    if [ -n "${work:-}" ] && [ -s "$work/$log" ]; then
      printf -- '--- %s (last 60 lines) ---\n' "$log" >&2
      tail -n 60 "$work/$log" >&2
    fi
  done
  exit 1
}

# Polls `$@` every 0.25 s for up to $1 seconds (the rest is the command); true once it is.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.25
  done
}

work=""
daemon_pid=""
fake_pid=""
pair_pid=""
cleanup() {
  local status=$?
  set +e
  [ -n "$pair_pid" ] && kill "$pair_pid" 2>/dev/null
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    for _ in $(seq 120); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  if [ -n "$fake_pid" ]; then
    kill -TERM "$fake_pid" 2>/dev/null
    wait "$fake_pid" 2>/dev/null
  fi
  if [ -n "$work" ] && [ -d "$work/data" ]; then
    # Containers are labelled with the install id: a hash of the data dir's real path.
    install=$(printf '%s' "$(cd "$work/data" && pwd -P)" | sha256sum | cut -c1-12)
    ids=$(docker ps -aq --filter "label=nanoclaw.install=$install" 2>/dev/null)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  fi
  if [ -n "$work" ]; then
    if [ "$keep" = 1 ]; then
      echo "kept $work"
    else
      rm -rf "$work"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "build nanoclaw, the channels library, and fake-telegram"
(cd "$root" && cargo build --locked -p nanoclaw -p nanoclaw-plugin-channels \
  -p nanoclaw-fake-telegram)
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
bin=$target/debug
for f in nanoclaw fake-telegram libnanoclaw_plugin_channels.so; do
  [ -e "$bin/$f" ] || fail "$bin/$f was not built"
done
export PATH="$bin:$PATH"

step "the agent image $image"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start one, then run this again)"
# Always from this checkout: an image left by an older build runs an older agent, which
# refuses the session databases this nanoclaw makes.
"$root/container/build.sh" --debug --tag "$image"

work=$(mktemp -d "${TMPDIR:-/tmp}/nanoclaw-walkthrough.XXXXXX")
cd "$work"
mkdir -p -m 700 data
cp "$root/plugins.toml" plugins.toml
echo "working in $work"

step "fake-telegram serve"
: > fake.log
fake-telegram serve --port "${FAKE_TELEGRAM_PORT:-0}" > fake.log 2>&1 &
fake_pid=$!
wait_for 30 grep -q '^  token: ' fake.log || fail "fake-telegram did not start"
cat fake.log
port=$(sed -n 's|^fake Telegram Bot API listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' fake.log)
token=$(sed -n 's/^  token: //p' fake.log)
[ -n "$port" ] && [ -n "$token" ] || fail "no port or token in fake-telegram's output"

step "the token into data/.env, the plugin into plugins.toml"
printf 'TELEGRAM_BOT_TOKEN=%s\n' "$token" > data/.env
chmod 600 data/.env
# The shipped file has a disabled Telegram table: replace it with the configured one.
sed -i '/^\[plugins\.telegram\]/,/^$/d' plugins.toml
cat >> plugins.toml <<EOF

[plugins.telegram]

[plugins.telegram.settings]
bot_token = { env = "TELEGRAM_BOT_TOKEN" }
api_base_url = "http://127.0.0.1:$port"
EOF

step "nanoclaw plugins check"
nanoclaw plugins check || fail "nanoclaw plugins check failed"

step "nanoclaw run"
nanoclaw run --image "$image" > daemon.log 2>&1 &
daemon_pid=$!
# Output is captured before grep reads it: `grep -q` in a pipe may close it early, and
# the writer's failure would then fail the pipeline (pipefail).
telegram_ok() {
  kill -0 "$daemon_pid" 2>/dev/null || fail "nanoclaw run exited"
  local listed
  listed=$(nanoclaw plugins list 2>/dev/null) && grep -Eq '^  telegram +ok' <<<"$listed"
}
wait_for 60 telegram_ok || fail "the telegram plugin did not report ok"
nanoclaw plugins list

step "nanoclaw pair telegram (the user sends the code with fake-telegram send)"
: > pair.out
nanoclaw pair telegram > pair.out 2>&1 &
pair_pid=$!
wait_for 30 grep -Eq '^    [A-Z0-9]{4}-[A-Z0-9]{4}$' pair.out || fail "nanoclaw pair printed no code"
code=$(grep -Eo '^    [A-Z0-9]{4}-[A-Z0-9]{4}$' pair.out | tr -d ' ')
fake-telegram send --port "$port" --from 42 --name "Ann Lee" --text "$code"
pair_done() { ! kill -0 "$pair_pid" 2>/dev/null; }
wait_for 60 pair_done || fail "nanoclaw pair is still waiting"
wait "$pair_pid" || fail "nanoclaw pair failed"
pair_pid=""
cat pair.out
user=$(sed -n 's/^PAIRED_USER_ID=//p' pair.out)
[ "$user" = "telegram:42" ] || fail "paired $user, not telegram:42"
grep -qx 'OWNER=yes' pair.out || fail "the first pairer was not made owner"

step "nanoclaw init-first-agent"
nanoclaw init-first-agent --user "$user" --name "Ann"

step "fake-telegram sent: the welcome"
sent_has() {
  local sent
  sent=$(fake-telegram sent --port "$port") && grep -qF -- "$1" <<<"$sent"
}
wait_for 120 sent_has "your NanoClaw agent" || fail "no welcome DM arrived"
fake-telegram sent --port "$port"
sent_has "Paired! telegram:42 is now the owner" || fail "no pairing confirmation"

step "the user says hello"
fake-telegram send --port "$port" --from 42 --name "Ann Lee" --text "hello"
wait_for 60 sent_has 'Mock agent: you said "hello"' || fail "no answer to hello"
nanoclaw sessions list

printf '\nWALKTHROUGH OK: the first agent welcomed the paired owner over the fake Telegram\n'
