#!/usr/bin/env bash
# Installs Debian's chromium if absent: the report tests (tests/test_report.py) load the report
# in it, headless, to check it as a browser shows it. Needs apt-get as root (as in CI).
set -euo pipefail
command -v chromium >/dev/null && exit 0
echo "installing chromium (Debian package) for the report's browser tests (first run)" >&2
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium not found and not installable here (needs apt-get as root): install Debian's" \
       "chromium to run the report's browser tests" >&2
  exit 1
fi
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >&2; then
  echo "chromium could not be installed (apt-get install -y chromium failed): the report's" \
       "browser tests need it" >&2
  exit 1
fi
command -v chromium >/dev/null || { echo "apt-get installed no chromium command" >&2; exit 1; }
