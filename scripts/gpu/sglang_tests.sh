#!/usr/bin/env bash
# sglang_tests.sh - the device command for the SGLang rollout's GPU tests (run from the repository root ON
# the GPU machine). It installs the SGLang bundle from whichever piece folders were carried, then runs
# tests/gpu/test_sglang.py once the bundle is complete.
#
# Pieces, prepared here with
#     PIECE=45M scripts/gpu/prepare_gpu_wheels.sh .gpu sglang
# and split into two carried folders (scripts/gpu/device_install.sh, in the tree, installs them):
#     .gpu/sglang_p0/  sglang.tar.xz.00                      (45 MiB)
#     .gpu/sglang_p1/  sglang.tar.xz.01 + SHA256SUMS          (39.5 MiB)
# Send them in back-to-back commands while the machine stays warm (/tmp survives only then):
#     1. carry [".gpu/sglang_p0"]:  bash scripts/gpu/sglang_tests.sh      -> "WAITING", exits 3
#     2. carry [".gpu/sglang_p1"]:  bash scripts/gpu/sglang_tests.sh      -> "INSTALLED", runs the tests
# Writes $OUT/sglang_tests.log and $OUT/sglang_numbers.json (measured numbers).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sglang_out}
mkdir -p "$OUT"
SITE=/tmp/site_sglang

for pieces in .gpu/sglang_p0 .gpu/sglang_p1; do
  if [ -d "$pieces" ] && [ ! -f "$SITE/.installed" ]; then
    bash scripts/gpu/device_install.sh sglang "$pieces" | tail -1
  fi
done
if [ ! -f "$SITE/.installed" ]; then
  echo "SGLang bundle not complete in /tmp/parts_sglang yet: carry the other piece folder in the next command"
  exit 3
fi

export PYTHONPATH=$SITE:$PWD
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RLKIT_GPU_NUMBERS=$OUT/sglang_numbers.json
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
python3 -c "import sglang, torch, transformers; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest tests/gpu/test_sglang.py -m gpu -x -q 2>&1 | tee "$OUT/sglang_tests.log"
exit "${PIPESTATUS[0]}"
