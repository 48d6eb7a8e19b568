#!/usr/bin/env bash
# Makes sure a Docker engine answers, starting one if this user may: as root, a dockerd with
# no iptables rules and no default bridge (agent containers run with --network none).
# Its log goes to ${NANOCLAW_HOME:-data}/logs/dockerd.log.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  if command -v systemctl >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo systemctl start docker
  else
    echo "engine.sh: the Docker engine is not running. Start it (as root: dockerd --iptables=false --bridge=none &," \
         "or: sudo systemctl start docker) and make sure you may use it (the docker group)." >&2
    exit 1
  fi
else
  logs=${NANOCLAW_HOME:-data}/logs
  mkdir -p "$logs"
  echo "engine.sh: starting dockerd (log: $logs/dockerd.log)"
  nohup dockerd --iptables=false --bridge=none >>"$logs/dockerd.log" 2>&1 &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "engine.sh: the Docker engine did not come up; see ${NANOCLAW_HOME:-data}/logs/dockerd.log" >&2
exit 1
