#!/usr/bin/env bash
# Fetches the pinned Claude Code CLI (the native binary its npm package ships) into a cache
# and prints the binary's path. Idempotent: a cached binary that reports the pinned version is
# reused without asking the registry.
#
#   scripts/claude-cli.sh             print the path of the cached binary (fetch it first if needed)
#   scripts/claude-cli.sh --version   print the pinned version only
#
# Environment:
#   NANOCLAW_CACHE              cache root (default $HOME/.cache/nanoclaw)
#   NANOCLAW_CLAUDE_VERSION     another version than the pin (for trying a newer CLI)
#
# The binary comes from `@anthropic-ai/claude-code-<platform>`, the optional dependency the
# main `@anthropic-ai/claude-code` package installs for this platform. `npm pack` checks the
# tarball against the registry's integrity hash. Needs npm (scripts/deps.sh installs it).
set -euo pipefail

# The one place the Claude Code version is pinned (the image build and the tests use it).
PINNED=2.1.128

die() { echo "claude-cli.sh: $*" >&2; exit 1; }

version=${NANOCLAW_CLAUDE_VERSION:-$PINNED}
if [ "${1:-}" = --version ]; then
  echo "$version"
  exit 0
fi
[ $# -eq 0 ] || die "unknown option: $1 (try --version)"

case "$(uname -m)" in
  x86_64|amd64) platform=linux-x64 ;;
  aarch64|arm64) platform=linux-arm64 ;;
  *) die "no Claude Code build for $(uname -m)" ;;
esac
# A musl system (Alpine) needs the musl build.
if ldd --version 2>&1 | grep -qi musl; then
  platform=$platform-musl
fi

cache=${NANOCLAW_CACHE:-$HOME/.cache/nanoclaw}/claude-code/$version-$platform
bin=$cache/claude
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$version "; then
  echo "$bin"
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is needed to fetch the Claude Code CLI (run scripts/deps.sh)"
mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$(dirname "$cache")/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
package="@anthropic-ai/claude-code-$platform@$version"
echo "claude-cli.sh: fetching $package" >&2
(cd "$work" && npm pack --silent "$package" >/dev/null) || die "npm pack $package failed"
tarball=$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)
[ -n "$tarball" ] || die "npm pack left no tarball for $package"
tar -xzf "$tarball" -C "$work" package/claude || die "$package has no package/claude"
chmod 0755 "$work/package/claude"
"$work/package/claude" --version 2>/dev/null | grep -q "^$version " \
  || die "the fetched binary does not run here or is not version $version"
# Placed with a rename, so a concurrent run never sees half a binary.
mkdir -p "$cache"
mv -f "$work/package/claude" "$bin"
echo "$bin"
