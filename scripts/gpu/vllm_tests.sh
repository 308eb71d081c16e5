#!/usr/bin/env bash
# scripts/gpu/vllm_tests.sh PIECEDIR [PYTEST_ARGS...] -- runs ON THE GPU machine, from the repository root.
#
# Hands the vLLM bundle pieces carried in PIECEDIR (from scripts/gpu/prepare_gpu_wheels.sh) to
# scripts/gpu/device_install.sh, and once every piece has arrived and unpacked into /tmp/site_vllm, runs
# tests/gpu/test_vllm.py and test_vllm_torchrun.py. Send the pieces in back-to-back commands (the machine keeps /tmp only while
# warm); the command carrying the last piece and SHA256SUMS runs the tests. See docs/vllm.md.
# Writes vllm_tests.log and vllm_numbers.json under $OUT (default /tmp/vllm_out).
set -uo pipefail
PIECEDIR=${1:?usage: scripts/gpu/vllm_tests.sh PIECEDIR [PYTEST_ARGS...]}
shift
OUT=${OUT:-/tmp/vllm_out}
mkdir -p "$OUT"

bash scripts/gpu/device_install.sh vllm "$PIECEDIR" 2>&1 | tail -2
if [ ! -f /tmp/site_vllm/.installed ]; then
  echo "vLLM is not installed yet: carry the remaining pieces (the last one with SHA256SUMS)"
  exit 0
fi

export PYTHONPATH=/tmp/site_vllm:$PWD${PYTHONPATH:+:$PYTHONPATH}
export VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export RLKIT_GPU_NUMBERS=$OUT/vllm_numbers.json OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader

start=$(date +%s)
# no -x: one device call should report every failing test, not only the first
timeout 500 python3 -m pytest tests/gpu/test_vllm.py tests/gpu/test_vllm_torchrun.py -m gpu -q -s -p no:cacheprovider "$@" 2>&1 \
  | tee "$OUT/vllm_tests.log"
rc=${PIPESTATUS[0]}
echo "pytest exit $rc after $(( $(date +%s) - start ))s"
grep -h "^\[vllm-gpu\]" "$OUT/vllm_tests.log"
exit "$rc"
