#!/usr/bin/env bash
# The first thing to run on a GPU machine or a Jetson: builds the TensorRT engines for the
# demo model and a real-size random-weight Lotus, compares TensorRT / ONNX Runtime CUDA /
# torch CUDA with torch fp32 and prints one table. See scripts/gpu_check.py --help.
# Without CUDA it says so and exits 0 (1 with --require-gpu).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
