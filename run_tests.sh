#!/usr/bin/env bash
# Runs the whole test suite (installs what it needs on first use). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m pytest -q -p no:cacheprovider "$@" tests
