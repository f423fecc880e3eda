#!/usr/bin/env bash
# Create .venv (if missing) and install fedsilo with its test tools into it.
# torch comes first and pinned, so pip takes the CPU build instead of a CUDA one.
#
# `flwr run .` lists every file under the app folder before it applies .gitignore: an
# environment inside the folder (45,000 files) costs about 5 s on every run. So the
# environment lives outside it, in $FEDSILO_VENV (default: a folder per checkout under
# ~/.cache/fedsilo), and .venv is a link to it; .venv/bin/... works as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -L .venv ] && [ ! -e .venv ]; then
    rm .venv # the environment it pointed to is gone: make a new one
fi
if [ ! -e .venv ]; then
    if [ -n "${FEDSILO_VENV:-}" ]; then
        venv="$FEDSILO_VENV" # yours: used as it is, made only if it does not exist
        [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    else
        # this checkout's own, made afresh (a stale one from an earlier clone goes)
        checkout=$(pwd -P | sha256sum | cut -c1-12)
        venv="${XDG_CACHE_HOME:-$HOME/.cache}/fedsilo/venv-$checkout"
        mkdir -p "$(dirname "$venv")"
        "$PYTHON" -m venv --clear "$venv"
    fi
    ln -s "$venv" .venv
elif [ ! -L .venv ] && [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
elif [ ! -L .venv ]; then
    echo "note: .venv is a folder inside the app; every 'flwr run .' walks it (seconds)." \
        "Remove it and rerun this script to move the environment out." >&2
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
