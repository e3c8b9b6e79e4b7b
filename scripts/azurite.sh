#!/usr/bin/env bash
# Installs Azurite (Azure Blob Storage emulator, npm package) under .cache/azurite if absent.
# Needs Node.js and npm; tests/azurite.py installs it the same way when run on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$ROOT/.cache/azurite/node_modules/.bin/azurite-blob" ]; then
  if ! command -v npm >/dev/null; then
    echo "npm not found: install Node.js (>= 18) to run the Azure Blob tests" >&2
    exit 1
  fi
  echo "installing Azurite into .cache/azurite (first run)" >&2
  mkdir -p "$ROOT/.cache/azurite"
  npm install --prefix "$ROOT/.cache/azurite" --no-audit --no-fund azurite >&2
fi
