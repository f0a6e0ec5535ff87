#!/usr/bin/env bash
# Builds Inngest's open-source server (the `inngest` command: `inngest start`, `inngest dev`) at a
# pinned version from the Go module proxy, for the real-server test suite. Nothing of Inngest's is
# committed: the source comes from the module download, the binary lands in a cache outside the
# checkout (keyed by version, so a fresh clone on the same machine reuses it) and is linked into
# .tools/bin/inngest (git-ignored).
#
# Why the build is not a plain `go install github.com/inngest/inngest/cmd@version`:
#   - the module's go.mod has a `replace` directive, which `go install pkg@version` refuses;
#   - one package embeds documentation from a git submodule that the module download lacks, and the
#     dev server embeds a UI bundle that is built separately: both folders must exist (empty
#     content is fine, the API the tests use does not read them);
#   - releases are built with CGO_ENABLED=0, so are we.
# Idempotent: a second run builds nothing.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
INNGEST_MODULE="github.com/inngest/inngest"
INNGEST_VERSION="${INNGEST_VERSION:-v1.43.0}"
CACHE_ROOT="${INNGEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inngest-cancellation-exporter}"
CACHED="$CACHE_ROOT/inngest-$INNGEST_VERSION/inngest"
LINK="$REPO/.tools/bin/inngest"

if [ ! -x "$CACHED" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "install-inngest: the go command is needed to build Inngest $INNGEST_VERSION" >&2
    exit 1
  fi
  echo "building Inngest $INNGEST_VERSION from the Go module proxy (first time only, several minutes) ..."
  started=$(date +%s)
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  source_dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$INNGEST_MODULE@$INNGEST_VERSION" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  cp -R "$source_dir" "$work/src"   # the module cache is read-only; the build adds two folders
  chmod -R u+w "$work/src"
  mkdir -p "$work/src/internal/embeddocs/website/pages/docs" "$work/src/pkg/devserver/static"
  echo "documentation is not part of this build" > "$work/src/internal/embeddocs/website/pages/docs/README.md"
  echo "the dev server UI is not part of this build" > "$work/src/pkg/devserver/static/index.html"
  mkdir -p "$(dirname "$CACHED")"
  (cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" \
    -o "$CACHED.partial" ./cmd)
  mv "$CACHED.partial" "$CACHED"   # only a complete binary ever stands in the cache
  echo "built Inngest $INNGEST_VERSION in $(( $(date +%s) - started )) s: $CACHED"
fi
mkdir -p "$(dirname "$LINK")"
ln -sfn "$CACHED" "$LINK"
"$LINK" start --help >/dev/null   # the binary runs (it prints no version of its own: none is stamped in)
echo "inngest $INNGEST_VERSION: $LINK -> $CACHED"
