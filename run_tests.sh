#!/usr/bin/env bash
# Runs the test suite (installs what it needs on first use). Extra args go to pytest.
#   ./run_tests.sh                        the whole suite (CI runs exactly this)
#   ./run_tests.sh --fast                 unit and small end-to-end tests only, for the edit loop
#   ./run_tests.sh tests/test_x.py -k y   some tests only (any argument naming tests/...)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
scripts/azurite.sh   # the Azure Blob emulator (Node.js) for tests/test_azure.py
scripts/chromium.sh  # Debian's chromium, headless, for the report tests (tests/test_report.py)
tier=()
if [ "${1:-}" = "--fast" ]; then shift; tier=(-m "not slow"); fi
where=(tests)
for arg in "$@"; do case "$arg" in tests/*) where=() ;; esac; done
exec python -m pytest -q -p no:cacheprovider "${tier[@]+"${tier[@]}"}" "$@" "${where[@]+"${where[@]}"}"
