# Sourced by build.sh: the Debian base image of the Claude image, from packages only.
#
# `claude_base_image` prints the tag of the base image, building it first when no image has
# that tag. The tag is a hash of every input (suite, mirror, package list, this recipe's
# revision), so a rerun with the same inputs skips debootstrap, and changing one builds anew.
# shellcheck shell=bash

# What Claude Code's tools expect besides the minbase essentials (bash, coreutils, findutils,
# grep, sed, tar, gzip, diffutils): git, ripgrep (its Grep/Glob tools), ps/kill (procps),
# CA certificates (HTTPS from the agent's own tools when a network is given).
CLAUDE_BASE_PACKAGES=(ca-certificates git ripgrep procps)
# Bump when the steps below change what ends up in the image.
CLAUDE_BASE_RECIPE=2
# build.sh sets it; standalone use gets the default.
docker=${docker:-${DOCKER:-docker}}

# The first Debian mirror in the apt sources (deb822 or one-line format), minus security and
# backports archives.
claude_base_mirror() {
  if [ -n "${NANOCLAW_DEBIAN_MIRROR:-}" ]; then
    echo "$NANOCLAW_DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(
    {
      cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\).*/\2/p'
    } | grep -E '^https?://' | grep -v -e security -e backports | grep -i debian | head -n1
  ) || true
  echo "${m:-http://deb.debian.org/debian}"
}

# Removes a build directory. A debootstrap that failed half way may leave /proc, /sys or a
# bind of /dev mounted inside it: unmount those first, and never cross into another file
# system while deleting.
claude_base_cleanup() {
  local m
  awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

claude_base_image() {
  local suite mirror packages hash tag
  suite=${NANOCLAW_DEBIAN_SUITE:-bookworm}
  mirror=$(claude_base_mirror)
  packages=$(IFS=,; echo "${CLAUDE_BASE_PACKAGES[*]}")
  hash=$(printf 'recipe=%s\nsuite=%s\nmirror=%s\npackages=%s\narch=%s\n' \
    "$CLAUDE_BASE_RECIPE" "$suite" "$mirror" "$packages" "$(uname -m)" | sha256sum | cut -c1-16)
  tag=nanoclaw-claude-base:$suite-$hash
  if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "build.sh: base image $tag is cached" >&2
    echo "$tag"
    return
  fi

  if [ "$(id -u)" != 0 ]; then
    echo "build.sh: the base image $tag is not built yet, and debootstrap needs root:" \
      "run container/build.sh --claude as root (or with sudo) once" >&2
    return 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build.sh: debootstrap is missing (scripts/deps.sh installs it)" >&2
    return 1
  fi

  echo "build.sh: building base image $tag (debootstrap $suite from $mirror)" >&2
  local work rootfs started
  started=$(date +%s)
  # Not under /tmp: it may be a small tmpfs or mounted nodev, and the tree is ~150 MB.
  work=$(mktemp -d "${NANOCLAW_BUILD_TMP:-/var/tmp}/nanoclaw-base.XXXXXX")
  rootfs=$work/rootfs
  # build.sh calls this in a command substitution: a subshell, with its own EXIT trap.
  # shellcheck disable=SC2064
  trap "claude_base_cleanup '$work'" EXIT
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    echo "build.sh: debootstrap failed; the end of its log:" >&2
    tail -n 20 "$work/debootstrap.log" >&2
    [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
    return 1
  fi

  # The agent's user (uid 1000, as the host runs it) and the mount points.
  chroot "$rootfs" useradd --uid 1000 --user-group --create-home --home-dir /home/agent \
    --shell /bin/bash agent
  mkdir -p "$rootfs/workspace/agent" "$rootfs/workspace/global"
  chown -R 1000:1000 "$rootfs/workspace"
  # Lean: no package caches, lists, docs, translations or logs (nothing installs packages
  # at run time; messages stay in English).
  rm -rf --one-file-system "${rootfs:?}"/var/cache/apt/* "${rootfs:?}"/var/lib/apt/lists/* \
    "${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* \
    "${rootfs:?}"/usr/share/locale/* \
    "${rootfs:?}"/var/log/* "${rootfs:?}"/var/cache/debconf/*-old "${rootfs:?}"/dev/* "${rootfs:?}"/proc/* \
    "${rootfs:?}"/sys/*

  tar -C "$rootfs" --numeric-owner --one-file-system -c . \
    | "$docker" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$tag" >/dev/null
  claude_base_cleanup "$work"
  # Bases of earlier inputs are only tags now (images built on them keep their layers).
  local old
  for old in $("$docker" image ls --format '{{.Repository}}:{{.Tag}}' nanoclaw-claude-base); do
    [ "$old" = "$tag" ] || "$docker" rmi "$old" >/dev/null 2>&1 || true
  done
  echo "build.sh: base image $tag built in $(($(date +%s) - started)) s" >&2
  echo "$tag"
}
