#!/usr/bin/env bash
# Creates .venv when missing and installs requirements.txt + detrlib (editable) into it.
# Called by `make`; prints one clear line, not a pip traceback, when something is missing.
set -uo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOG=${VENV}-install.log

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup: '$PYTHON' not found: install Python 3.10 or newer (e.g. apt-get install python3 python3-venv), or run make PYTHON=/path/to/python3" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: $("$PYTHON" -V 2>&1) is too old: detrlib needs Python 3.10 or newer; install one and run make PYTHON=python3.11 (or newer)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" -V 2>&1)"
    if ! "$PYTHON" -m venv "$VENV" >"$LOG" 2>&1; then
        echo "setup: could not create $VENV (is the venv module installed? apt-get install python3-venv); see $LOG" >&2
        exit 1
    fi
fi
echo "setup: installing requirements.txt and detrlib into $VENV (log: $LOG) ..."
start=$(date +%s)
if ! "$VENV/bin/python" -m pip install --retries 2 --timeout 30 -r requirements.txt -e . >"$LOG" 2>&1; then
    if grep -qiE "NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Network is unreachable|ConnectTimeout|No matching distribution found" "$LOG"; then
        echo "setup: the package index could not be reached (or has no matching release): check the network or proxy (PIP_INDEX_URL), then rerun make; details in $LOG" >&2
    else
        echo "setup: pip failed to install the requirements; the last lines of $LOG say why:" >&2
        grep -v "^WARNING: Location" "$LOG" | tail -n 5 >&2
    fi
    exit 1
fi
touch "$VENV/.detrlib-installed"
echo "setup: done in $(( $(date +%s) - start )) s"
