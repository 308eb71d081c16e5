#!/usr/bin/env bash
# GPU record, command 2 of 3: carry .gpu/vllm_p1. Finishes the vLLM install, then times the GRPO workload on
# the Qwen2.5-0.5B shape (random weights, fixed lengths) for fsdp2 x {vllm, hf}, and vLLM's own offline
# throughput on the same shapes.
set -uo pipefail
source scripts/gpu/common.sh
bash scripts/gpu/device_install.sh vllm .gpu/vllm_p1 | tail -1
[ -f /tmp/site_vllm/.installed ] || { echo "vLLM bundle missing: run record_stage1.sh first, back to back"; exit 3; }
BENCH="--shape 0.5b --prompts 32 --n 8 --prompt-len 128 --response-len 256 --steps 3 --warmup 1 --out /tmp/bench05"
echo "+ rlkit bench $BENCH --engine fsdp2 --rollout vllm,hf" | tee "$OUT/bench_fsdp2.log"
python3 -m rlkit bench $BENCH --engine fsdp2 --rollout vllm,hf 2>&1 | tee -a "$OUT/bench_fsdp2.log"
cp /tmp/bench05/bench.json "$OUT/bench_fsdp2.json"
for run in /tmp/bench05/runs/*; do tail -n 30 "$run/bench.log" > "$OUT/log_$(basename "$run").txt"; done
python3 scripts/gpu/vllm_offline_throughput.py /tmp/bench05/cache/qwen2.5-0.5b-random-v1 2>&1 \
  | grep -v Warning | tail -n 5 | tee "$OUT/vllm_offline.txt"
