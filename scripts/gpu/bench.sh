#!/usr/bin/env bash
# scripts/gpu/bench.sh NAME [rlkit bench arguments...] -- runs ON THE GPU machine, from the repository root,
# after record_stage1.sh (and, for vLLM pairings, the command carrying .gpu/vllm_p1) installed the wheels.
# Runs `rlkit bench ARGS --out /tmp/bench/NAME` with a model cache shared by every NAME (so each shape is
# built once per machine) and copies the table, bench.json and each run's log tail to $OUT/NAME*.
# For SGLang pairings set SITE=/tmp/site_sglang (sglang_tests.sh installs it) instead of the vLLM bundle.
set -uo pipefail
NAME=${1:?usage: scripts/gpu/bench.sh NAME [rlkit bench arguments...]}
shift
source scripts/gpu/common.sh
if [ -n "${SITE:-}" ]; then  # another bundle (SGLang): its own packages first, not the vLLM bundle's
  export PYTHONPATH="$SITE:$PWD:/tmp/site_extra:/tmp/site_ds"
fi
mkdir -p /tmp/bench/cache "/tmp/bench/$NAME"
ln -sfn /tmp/bench/cache "/tmp/bench/$NAME/cache"
echo "+ rlkit bench $* --out /tmp/bench/$NAME" | tee "$OUT/$NAME.log"
start=$(date +%s)
python3 -m rlkit bench "$@" --out "/tmp/bench/$NAME" 2>&1 | grep --line-buffered -v "Loading\|it/s]" | tee -a "$OUT/$NAME.log"
rc=${PIPESTATUS[0]}
echo "bench exit $rc after $(( $(date +%s) - start ))s" | tee -a "$OUT/$NAME.log"
cp "/tmp/bench/$NAME/bench.json" "$OUT/$NAME.json" 2>/dev/null
for run in "/tmp/bench/$NAME"/runs/*; do
  [ -f "$run/bench.log" ] && tail -n 40 "$run/bench.log" > "$OUT/${NAME}_$(basename "$run").txt"
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader
exit "$rc"
