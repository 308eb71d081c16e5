#!/usr/bin/env bash
# placement_2gpu.sh STEP -- issue 19's GPU record, one step per device command, ON a machine with two H200s
# (device kind nvidia-h200-x2), from the repository root. Prepare the carried folders here first, as for issue 17:
#   PIECE=45M scripts/gpu/prepare_gpu_wheels.sh .gpu vllm     (split into .gpu/vllm_p0 and .gpu/vllm_p1)
#   scripts/gpu/speed_prepare.sh GGUF [GSM8K_DIR]             (.gpu/smollm_p0, .gpu/smollm_p1, .gpu/gsm8k,
#                                                              .gpu/extra_small)
# Send the steps back to back (/tmp lives only while the machine stays warm); each writes its logs to $OUT.
# Minutes are estimates (vLLM start ~50 s per run, the 0.5B step ~5 s, 1.5B ~9 s).
#
# step carry                          min  what it records, and what to look for
#  1   .gpu/vllm_p0 .gpu/extra_small   1   stores vLLM piece 0 and the small extras.
#  2   .gpu/vllm_p1                    9   installs vLLM; tests/gpu/test_placement_gpu.py (colocated vLLM TP 2 over
#                                          both GPUs, split vLLM k=0/1, split HF k=1: the embedded task learns) and
#                                          tests/gpu/test_vllm_torchrun.py. Look for: every case passed; the TP-2
#                                          run's time/weight_sync (both ranks push into their halves).
#  3   (none)                          9   0.5B shape, GRPO 32 prompts x 8, responses of exactly 256 and of 1024
#                                          tokens: colocated sync (both GPUs train and generate) vs split k=0/1/2
#                                          (GPU 0 trains, GPU 1 generates). Look for: the step column; split:1's
#                                          step <= colocated's / 1.3 on the workload where generate and update
#                                          columns are comparable (the 1024-token one, by the issue-17 numbers).
#  4   (none)                          12  the same on the 1.5B shape.
#  5   .gpu/smollm_p0                  0.5 stores the SmolLM2-135M GGUF piece 0.
#  6   .gpu/smollm_p1 .gpu/gsm8k       12  SmolLM2-135M-Instruct from the GGUF; tokens/s on GSM8K prompts (rlkit bench
#                                          --model --data, the four placements); then reward curves: 60 steps of
#                                          the built-in letters task with the real model for each placement, drawn
#                                          side by side (rlkit plot, against steps and against seconds).
#                                          Look for: split:1 and split:2 curves within the colocated curve's
#                                          step-to-step noise; against seconds, split:1 ahead.
# Order of value if device time runs short: 2 (correctness), 3 (the target), 6, 4.
set -uo pipefail
STEP=${1:?usage: scripts/gpu/placement_2gpu.sh STEP (1-6)}
source scripts/gpu/common.sh
MODEL=${MODEL:-/tmp/place/SmolLM2-135M-Instruct}
DATA=/tmp/place/gsm8k/train.parquet
mkdir -p /tmp/place
PLACEMENTS=colocated,split:0,split:1,split:2
# A rollout rank has its GPU to itself: vLLM may take most of it. Colocated runs keep the default share (0.5),
# since training shares the GPU; `rlkit bench` applies overrides to every pairing, hence two benches per shape.
SPLIT_MEMORY=rollout.vllm.gpu_memory_utilization=0.85

need() { [ -e "$1" ] || { echo "missing $1: run the earlier steps first, back to back"; exit 3; }; }
log() { tee -a "$OUT/step$STEP.log"; }
bench() {  # bench NAME ARGS...: rlkit bench into /tmp/place/NAME, table and json to $OUT
  local name=$1; shift
  echo "+ rlkit bench $* --out /tmp/place/$name" | log
  python3 -m rlkit bench "$@" --out "/tmp/place/$name" 2>&1 | grep --line-buffered -v "Loading\|it/s]" | log
  cp "/tmp/place/$name/bench.json" "$OUT/$name.json" 2>/dev/null
  for run in "/tmp/place/$name"/runs/*; do tail -n 30 "$run/bench.log" > "$OUT/${name}_$(basename "$run").txt"; done
}
shape_benches() {  # shape_benches SHAPE RESPONSE_LEN: the four placements on one workload
  local shape=$1 length=$2 common
  common="--shape $shape --engine fsdp2 --rollout vllm --nproc 2 --prompts 32 --n 8 --response-len $length"
  common="$common --steps 5 --warmup 2 --no-baseline"
  bench "${shape}_${length}_colocated" $common --placement colocated
  bench "${shape}_${length}_split" $common --placement split:0,split:1,split:2 $SPLIT_MEMORY
}
curves() {  # curves NAME ARGS...: 60 steps of the built-in letters task with $MODEL, two processes
  local name=$1; shift
  echo "+ torchrun -m rlkit train $name" | log
  torchrun --standalone --nproc_per_node=2 -m rlkit train --rollout vllm model.path="$MODEL" \
    trainer.output_dir="/tmp/place/curves/$name" trainer.total_steps=60 trainer.test_freq=10 trainer.save_at_end=false \
    trainer.progress_bar=false optim.lr=1e-5 rollout.max_new_tokens=64 "$@" 2>&1 | grep -v "Loading\|it/s]" | tail -n 5 | log
  cp "/tmp/place/curves/$name/metrics.jsonl" "$OUT/curves_$name.jsonl"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | log

case $STEP in
1)
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p0 | tail -1
  install_wheels .gpu/extra_small /tmp/site_extra
  ;;
2)
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p1 | tail -1
  need /tmp/site_vllm/.installed
  timeout 560 python3 -m pytest tests/gpu/test_placement_gpu.py tests/gpu/test_vllm_torchrun.py -m gpu -q -p no:cacheprovider \
    -k "not sglang" 2>&1 | tail -n 40 | log
  ;;
3)
  need /tmp/site_vllm/.installed
  shape_benches 0.5b 1024
  shape_benches 0.5b 256
  ;;
4)
  need /tmp/site_vllm/.installed
  shape_benches 1.5b 1024
  shape_benches 1.5b 256
  ;;
5)
  bash scripts/gpu/device_install.sh smollm .gpu/smollm_p0 | tail -1
  ;;
6)
  bash scripts/gpu/device_install.sh smollm .gpu/smollm_p1 | tail -1
  need /tmp/site_smollm/.installed
  mkdir -p /tmp/place/gsm8k && cp .gpu/gsm8k/train.parquet "$DATA"
  # The GGUF (Q4_1) as a bf16 Hugging Face folder (rlkit model import; the gguf package: step 1).
  [ -f "$MODEL/config.json" ] || python3 -m rlkit model import /tmp/site_smollm/*.gguf "$MODEL" 2>&1 | tail -3 | log
  need "$MODEL/config.json"
  common="--model $MODEL --data $DATA --engine fsdp2 --rollout vllm --nproc 2 --prompts 32 --n 8 --response-len 256"
  common="$common --steps 5 --warmup 1 --no-baseline"
  bench smollm_colocated $common --placement colocated
  bench smollm_split $common --placement split:0,split:1,split:2 $SPLIT_MEMORY
  curves colocated
  curves split_k0 placement.mode=split $SPLIT_MEMORY
  curves split_k1 placement.mode=split placement.staleness=1 $SPLIT_MEMORY
  curves split_k2 placement.mode=split placement.staleness=2 $SPLIT_MEMORY
  cd /tmp/place/curves || exit 3
  python3 -m rlkit plot colocated split_k0 split_k1 split_k2 --keys reward/mean,val/reward/mean,time/step \
    --out "$OUT/reward_curves.png" | log
  python3 -m rlkit plot colocated split_k0 split_k1 split_k2 --keys reward/mean,val/reward/mean --x time \
    --out "$OUT/reward_curves_by_time.png" | log
  ;;
*)
  echo "unknown step $STEP (1-6)"; exit 2
  ;;
esac
