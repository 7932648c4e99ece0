#!/usr/bin/env bash
# The Python clients the router is tested with (test/python_clients_test.ts): a
# virtual environment with the versions pinned in requirements.txt, built once into
# $PYCLIENTS_VENV (default ~/.cache/rkllama-router/pyclients) and reused while the
# pins are the same. Idempotent; prints the environment's directory.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${PYCLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllama-router/pyclients}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.requirements"
if [ -f "$STAMP" ] && cmp -s "$STAMP" "$HERE/requirements.txt"; then
  echo "$VENV"
  exit 0
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  -r "$HERE/requirements.txt" >&2
cp "$HERE/requirements.txt" "$STAMP"
echo "$VENV"
