#!/usr/bin/env bash
# The GPU checks in one run, for a lent GPU: the CUDA-only tests, the loss overhead (b), and throughput (a) on a
# ~1B LLaMA in bf16 with train.py's defaults (packed_sdpa: PyTorch's varlen flash kernel), with compiled
# decoder layers (training.compile), and compiled with fp32 weights under bf16 autocast (train.py's precision).
# Each log goes to OUTPUT_DIR. Usage: benchmarks/gpu_checks.sh [OUTPUT_DIR]
# Wheels in .whl/ (e.g. `pip download --no-deps transformers==5.24.0 -d .whl` where the machine's
# Transformers is older) are installed first, into a private directory.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/plw-site .whl/*.whl
  export PYTHONPATH=/tmp/plw-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
status=0  # a failing step does not stop the others: device time is scarce
logged() { local log=$1; shift; "$@" 2>&1 | tee "$out/$log" || status=1; }
logged machine.log nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
logged tests.log python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "cuda or compiled"
model=(--device cuda --dtype bfloat16 --preset 1b)
logged loss_overhead.log python3 benchmarks/bench_loss_overhead.py "${model[@]}" --batch 16
throughput=(benchmarks/bench_throughput.py "${model[@]}" --records-per-step 128 --micro-batch 16 --packed-micro-batch 128)
logged throughput.log python3 "${throughput[@]}"
logged throughput_compiled.log python3 "${throughput[@]}" --compile
logged throughput_compiled_fp32_weights.log python3 "${throughput[@]}" --compile --fp32-weights  # train.py's setting
exit $status
