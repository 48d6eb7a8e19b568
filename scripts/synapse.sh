#!/usr/bin/env bash
# A throwaway Synapse homeserver for the Matrix tests, on 127.0.0.1 only.
#
#   scripts/synapse.sh install      installs matrix-synapse from PyPI into a virtualenv
#                                   (idempotent; quick when already there)
#   scripts/synapse.sh start DIR    writes a config into DIR (server_name localhost, a free port,
#                                   sqlite, registration shared secret, no federation, relaxed
#                                   rate limits, no outbound traffic) and starts Synapse;
#                                   prints "PORT SECRET" when it answers
#   scripts/synapse.sh stop DIR     stops the server started in DIR
#   scripts/synapse.sh installed    exits 0 when Synapse is installed (installs nothing)
#   scripts/synapse.sh register DIR USER PASSWORD
#                                   registers a (non-admin) user on the server started in DIR
#                                   with the registration shared secret (the admin API)
#
# The virtualenv lives in $NANOCLAW_SYNAPSE_VENV (default ~/.cache/nanoclaw/synapse-venv).
set -euo pipefail

venv="${NANOCLAW_SYNAPSE_VENV:-$HOME/.cache/nanoclaw/synapse-venv}"
py="$venv/bin/python"

install() {
  if [ -x "$py" ] && "$py" -c 'import synapse' >/dev/null 2>&1; then
    return 0
  fi
  echo "synapse.sh: installing matrix-synapse into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q 'matrix-synapse' >&2
  "$py" -c 'import synapse' >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local port secret
  port=$(free_port)
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The signing key, generated once per directory.
  [ -f "$dir/signing.key" ] || "$venv/bin/generate_signing_key" -o "$dir/signing.key"
  cat > "$dir/homeserver.yaml" <<YAML
server_name: "localhost"
public_baseurl: "http://127.0.0.1:$port/"
pid_file: "$dir/homeserver.pid"
signing_key_path: "$dir/signing.key"
media_store_path: "$dir/media"
report_stats: false
enable_metrics: false
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$dir/homeserver.db"
log_config: "$dir/log.yaml"
registration_shared_secret: "$secret"
enable_registration: false
# No federation and no outbound traffic.
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
url_preview_enabled: false
update_user_directory_from_worker: null
user_directory:
  enabled: false
presence:
  enabled: false
# Tests send quickly.
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_admin_redaction: {per_second: 1000, burst_count: 1000}
rc_media_create: {per_second: 1000, burst_count: 1000}
max_upload_size: 10M
YAML
  cat > "$dir/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$dir/homeserver.log"
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
YAML
  "$py" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --daemonize >/dev/null 2>"$dir/start.err" \
    || { cat "$dir/start.err" >&2; exit 1; }
  for _ in $(seq 1 300); do
    if python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_matrix/client/versions", timeout=1)
PY
    then
      echo "$port $secret"
      return 0
    fi
    sleep 0.2
  done
  echo "synapse.sh: Synapse did not answer on 127.0.0.1:$port" >&2
  tail -n 30 "$dir/homeserver.log" >&2 || true
  exit 1
}

stop() {
  local dir="$1"
  [ -f "$dir/homeserver.pid" ] || return 0
  local pid
  pid=$(cat "$dir/homeserver.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

installed() {
  [ -x "$py" ] && "$py" -c 'import synapse' >/dev/null 2>&1
}

register() {
  local dir="$1" user="$2" password="$3"
  "$venv/bin/register_new_matrix_user" -c "$dir/homeserver.yaml" -u "$user" -p "$password" \
    --no-admin "$(sed -n 's/^public_baseurl: "\(.*\)\/"$/\1/p' "$dir/homeserver.yaml")" >/dev/null
}

case "${1:-}" in
  install) install ;;
  installed) installed ;;
  register) register "${2:?usage: synapse.sh register DIR USER PASSWORD}" "${3:?}" "${4:?}" ;;
  start) start "${2:?usage: synapse.sh start DIR}" ;;
  stop) stop "${2:?usage: synapse.sh stop DIR}" ;;
  python) echo "$py" ;;
  *) echo "usage: synapse.sh install | installed | start DIR | stop DIR | register DIR USER PASSWORD" >&2; exit 2 ;;
esac
