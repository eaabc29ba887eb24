#!/usr/bin/env bash
# The GPU checks in one command (under 10 minutes on one GPU, no network): the tests marked gpu,
# `bench gpu` into results/, and a 300-step gpu-profile run on generated data. Prints one summary,
# exits non-zero on any failure, and skips cleanly without CUDA. Installs nothing (see gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
