# Sourced by run_local.sh and run_tests.sh: a project virtualenv, (re)installed when setup.py changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CURRENTS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV (first run: installs Apache Beam and friends, a few minutes)" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat "$ROOT/setup.py" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test,bench]" >&2
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
# The dev tools (devtools/: the local receiver, the sample generator) are not part of the
# package; this path entry lets `python -m devtools.receiver` start from any folder.
pth=("$VENV"/lib/python3*/site-packages)
if [ -d "${pth[0]}" ] && [ ! -f "${pth[0]}/currents_to_segment_devtools.pth" ]; then
  echo "$ROOT" > "${pth[0]}/currents_to_segment_devtools.pth"
fi
export PATH="$VENV/bin:$PATH"
