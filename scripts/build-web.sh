#!/usr/bin/env bash
# Builds the web app (web/ → web/dist), which the kiln binary embeds (crates/kiln-server/build.rs):
# Node.js and npm from Debian when missing, the packages pinned by web/package-lock.json
# (`npm ci`), then `npm run build` (tsc, then vite). Idempotent; up.sh and test.sh run it before
# cargo needs the build.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y nodejs npm >/dev/null
fi
# A lock file newer than the installed packages (or none installed): install exactly it.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
