#!/usr/bin/env bash
# Builds the NanoClaw agent container image.
#
#   container/build.sh              minimal image, FROM scratch: nanoclaw-agent, exactly the
#                                   shared libraries ldd reports for it, and /tmp. Needs no
#                                   image registry. Runs the mock provider (no Claude CLI).
#   container/build.sh --claude     production image: a Debian base made with debootstrap
#                                   from the machine's apt mirror, the native Claude Code CLI
#                                   from its npm package (scripts/claude-cli.sh), nanoclaw-agent.
#                                   Needs no image registry; needs root for debootstrap the
#                                   first time (the base image is cached under a tag that
#                                   hashes its inputs, so later builds skip it).
#
# Options:
#   --release          build nanoclaw-agent with the release profile (default)
#   --debug            build it with the dev profile
#   --binary PATH      use an already built nanoclaw-agent instead of running cargo
#   --tag NAME:TAG     image tag (default nanoclaw-agent:latest, or
#                      nanoclaw-agent-claude:latest with --claude)
#   --claude           build the production image
#   -h, --help         this text
#
# Environment: DOCKER (default docker) names the docker CLI; CARGO_TARGET_DIR is honoured.
#   NANOCLAW_DEBIAN_MIRROR   Debian mirror for the --claude base (default: the first Debian
#                            mirror in this machine's apt sources, else deb.debian.org)
#   NANOCLAW_DEBIAN_SUITE    Debian suite for the --claude base (default bookworm)
#   NANOCLAW_CACHE, NANOCLAW_CLAUDE_VERSION   see scripts/claude-cli.sh
# Running it again rebuilds and re-tags the same image.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "build.sh: $*" >&2; exit 1; }

profile=release
tag=""
claude=0
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    --claude) claude=1 ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift ;;
    --tag=*) tag=${1#*=} ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift ;;
    --binary=*) binary=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
docker=${DOCKER:-docker}
command -v "$docker" >/dev/null || die "no docker CLI ($docker) on PATH"

if [ -z "$binary" ]; then
  cargo_args=(build --locked -p nanoclaw-agent-runner --bin nanoclaw-agent)
  [ "$profile" = release ] && cargo_args+=(--release)
  (cd "$root" && cargo "${cargo_args[@]}")
  target_dir=${CARGO_TARGET_DIR:-}
  if [ -z "$target_dir" ]; then
    target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps \
      | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  fi
  [ -n "$target_dir" ] || die "cannot find cargo's target directory"
  [ "$profile" = debug ] && out=debug || out=release
  binary=$target_dir/$out/nanoclaw-agent
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "no executable nanoclaw-agent at $binary"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# The image gets a copy without debug sections (the release profile keeps line tables, which
# are most of the file); symbols stay, so backtraces still name functions.
place_binary() {
  if command -v strip >/dev/null; then
    strip --strip-debug -o "$1" "$binary"
    chmod 0755 "$1"
  else
    install -m 0755 "$binary" "$1"
  fi
}

if [ "$claude" = 1 ]; then
  tag=${tag:-nanoclaw-agent-claude:latest}
  # shellcheck source=container/base.sh
  . "$here/base.sh"
  base_tag=$(claude_base_image) || exit 1
  claude_bin=$("$root/scripts/claude-cli.sh") || die "cannot fetch the Claude Code CLI"
  place_binary "$ctx/nanoclaw-agent"
  # A hard link when the cache is on the same file system: the CLI is 250 MB.
  ln "$claude_bin" "$ctx/claude" 2>/dev/null || cp "$claude_bin" "$ctx/claude"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base_tag
COPY claude /usr/local/bin/claude
COPY nanoclaw-agent /usr/local/bin/nanoclaw-agent
# The host sets HOME to a directory in the session (Claude Code's state persists there);
# /home/agent is for running the image by hand.
ENV HOME=/home/agent \\
    NANOCLAW_PROVIDER=claude \\
    NANOCLAW_CLAUDE_BIN=/usr/local/bin/claude
USER 1000:1000
WORKDIR /workspace/agent
ENTRYPOINT ["/usr/local/bin/nanoclaw-agent"]
DOCKERFILE
else
  tag=${tag:-nanoclaw-agent:latest}
  rootfs=$ctx/rootfs
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  place_binary "$rootfs/usr/local/bin/nanoclaw-agent"
  # Every library ldd resolves ("name => /path (addr)") and the loader ("/path (addr)"),
  # copied (symlinks followed) to the same path in the image. A static binary has none.
  ldd_out=$(ldd "$binary" 2>&1) || true
  libs=$(printf '%s\n' "$ldd_out" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  if [ -z "$libs" ] && ! printf '%s' "$ldd_out" | grep -qE 'statically linked|not a dynamic executable'; then
    die "cannot read the shared libraries of $binary: $ldd_out"
  fi
  if printf '%s' "$ldd_out" | grep -q 'not found'; then
    die "missing shared libraries for $binary: $ldd_out"
  fi
  for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# No Claude CLI in this image: the mock provider is the default here.
ENV NANOCLAW_PROVIDER=mock
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/nanoclaw-agent"]
DOCKERFILE
fi

# The legacy builder works with every engine, including Debian's docker.io without buildx.
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "$docker" build -q -t "$tag" "$ctx" >/dev/null
size=$("$docker" image inspect -f '{{.Size}}' "$tag")
echo "built $tag ($((size / 1000000)) MB)"
