#!/usr/bin/env bash
# Python interop test: a grpcio client generated from the .proto talks to
# the built `station` binary. Makes a venv from PyPI (requirements.txt),
# generates the client with grpcio-tools, runs interop.py.
#
# Usage: interop/python/run.sh   (STATION_BIN=path/to/station, default
# debug/station under $CARGO_TARGET_DIR, where cargo built it, or target/;
# VENV=dir, default target/interop-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "error: the Python interop test needs python3 with venv (apt-get install python3-venv)" >&2
        exit 1
    fi
    echo "SKIPPED: python3 with venv not found (apt-get install python3-venv); with CI set this fails" >&2
    exit 0
fi

STATION_BIN=${STATION_BIN:-${CARGO_TARGET_DIR:-target}/debug/station}
if [ ! -x "$STATION_BIN" ]; then
    echo "error: $STATION_BIN not found: cargo build -p station --bin station" >&2
    exit 1
fi

VENV=${VENV:-target/interop-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r interop/python/requirements.txt

GEN=$(mktemp -d)
trap 'rm -rf "$GEN"' EXIT
"$VENV/bin/python" -m grpc_tools.protoc -I proto \
    --python_out="$GEN" --grpc_python_out="$GEN" \
    proto/numbersstation/v1/station.proto

PYTHONPATH="$GEN" timeout 300 "$VENV/bin/python" interop/python/interop.py "$STATION_BIN"
