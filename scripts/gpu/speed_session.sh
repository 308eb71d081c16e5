#!/usr/bin/env bash
# speed_session.sh STEP -- issue 17's GPU plan, one step per device command, ON the GPU machine (one H200), from
# the repository root. Prepare the carried folders here first: scripts/gpu/speed_prepare.sh GGUF GSM8K_DIR.
# Send the steps back to back (/tmp lives only while the machine stays warm); each writes its logs to $OUT.
# Minutes are estimates from earlier sessions' timings (model loads, vLLM init ~50 s, steps of ~5-7 s).
#
# step carry                                   min  what it measures, and what to look for
#  1   .gpu/vllm_p0 .gpu/dsw .gpu/extra_small   3   installs DeepSpeed + extras, stores vLLM piece 0. 1c: ZeRO-3 as
#                                                   rlkit now builds it (leaf decoder layers, persistent parameters)
#                                                   vs DeepSpeed's stock ZeRO-3 vs ZeRO-2 vs FSDP2, log-prob pass and
#                                                   update, 0.5B shape, 256 x (128+256), 16 per micro-batch.
#                                                   Look for: z3 update within 1.2x of fsdp2 (stock was ~2.3x);
#                                                   profile_z3_stock.txt GPU-busy share well under z3's.
#  2   .gpu/vllm_p1                             3   finishes vLLM. 1a on the 0.5B shape (the docs' 1.02 s vs 1.98 s):
#                                                   per-variant times of scripts/gpu/vllm_logprobs_cost.py.
#                                                   Look for: "rlkit request, logprobs=0" near "no logprobs";
#                                                   which of flat_logprobs / detokenize=False buys it; gc_s; the
#                                                   profile's top functions (decode, Logprob, append_logprobs...).
#  3   .gpu/smollm_p0                           0.5 stores GGUF piece 0 (nothing else: keep it short).
#  4   .gpu/smollm_p1 .gpu/gsm8k                8   imports SmolLM2-135M-Instruct ($MODEL), then the issue's
#                                                   workload as a user runs it: rlkit bench --model --data, fsdp2 x
#                                                   vllm, defaults only, 32 x 8 x <=256, median of steps 2-6, with
#                                                   the vLLM-alone rows; and 1a on real text (GSM8K prompts).
#                                                   Look for: step <= 4.4 s; step / vLLM <= 1.3x; gen / vLLM <= 1.11x.
#  5   (none)                                   5   the speed switches by hand, fsdp2 and deepspeed x vllm (the
#                                                   "auto" design's targets), and DeepSpeed's passes on $MODEL
#                                                   (also without overlap_comm, which one rank cannot use).
#                                                   Look for: deepspeed step <= 1.2x fsdp2's.
#  6   .gpu/sglang_p0                           1   stores SGLang piece 0; the FSDP2 passes on $MODEL with the
#                                                   machine's transformers (5.17): the reference for step 7.
#  7   .gpu/sglang_p1                           8   installs SGLang. 1b: scripts/gpu/sglang_contention.py (passes
#                                                   alone / next to an idle SGLang, spinning or sleeping; SGLang's
#                                                   generate with and without log-probs), the same passes with the
#                                                   SGLang bundle's transformers (5.12.1) hidden, and rlkit bench
#                                                   fsdp2 x sglang on the issue's workload.
#                                                   Look for: passes "alone" here vs step 6 (the transformers build);
#                                                   sleep_on_idle=False vs True, and its idle_cpu_share (~1.0 vs ~0).
# Order of value if device time runs short: 1, 2, 4 (vLLM and DeepSpeed causes, the targets), then 6-7 (SGLang), 5.
set -uo pipefail
STEP=${1:?usage: scripts/gpu/speed_session.sh STEP (1-7)}
source scripts/gpu/common.sh
MODEL=${MODEL:-/tmp/speed/SmolLM2-135M-Instruct}
DATA=/tmp/speed/gsm8k/train.parquet
SGLANG_SITE=/tmp/site_sglang
mkdir -p /tmp/speed
PASSES="python3 benchmarks/engine_passes.py --seqs 256 --prompt-len 128 --response-len 256 --repeats 2"
WORKLOAD="--model $MODEL --data $DATA --prompts 32 --n 8 --response-len 256 --steps 5 --warmup 1"
DS_SETTINGS=(--setting z3: --setting z3_stock:ds.stage3_param_persistence_threshold=100000,leaf_layers=false
             --setting z2:deepspeed.zero_stage=2 --setting z1:deepspeed.zero_stage=1)

need() { [ -e "$1" ] || { echo "missing $1: run the earlier steps first, back to back"; exit 3; }; }
log() { tee -a "$OUT/step$STEP.log"; }
bench() {  # bench NAME ARGS...: rlkit bench into /tmp/speed/NAME, table and json to $OUT
  local name=$1; shift
  echo "+ rlkit bench $* --out /tmp/speed/$name" | log
  python3 -m rlkit bench "$@" --out "/tmp/speed/$name" 2>&1 | grep --line-buffered -v "Loading\|it/s]" | log
  cp "/tmp/speed/$name/bench.json" "$OUT/$name.json" 2>/dev/null
  for run in "/tmp/speed/$name"/runs/*; do tail -n 30 "$run/bench.log" > "$OUT/${name}_$(basename "$run").txt"; done
}

case $STEP in
1)
  bash scripts/gpu/record_stage1.sh
  install_wheels .gpu/dsw /tmp/site_pyd '(deepspeed|hjson)'  # pydantic until the vLLM bundle brings its own
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  $PASSES --engine deepspeed --shape 0.5b --out /tmp/speed/passes05 "${DS_SETTINGS[@]}" --profile z3_stock 2>&1 | log
  cp /tmp/speed/passes05/passes.json "$OUT/passes05_deepspeed.json"
  cp /tmp/speed/passes05/profile_z3_stock.txt "$OUT/"
  $PASSES --engine fsdp2 --shape 0.5b --out /tmp/speed/passes05 --setting fsdp2: 2>&1 | log
  cp /tmp/speed/passes05/passes.json "$OUT/passes05_fsdp2.json"
  ;;
2)
  bash .gpu/vllm_p1/device_install.sh vllm .gpu/vllm_p1 | tail -1
  need /tmp/site_vllm/.installed
  python3 scripts/gpu/vllm_logprobs_cost.py --model /tmp/speed/passes05/cache/qwen2.5-0.5b-random-v2 2>&1 \
    | grep -v Warning | log
  mv "$OUT/vllm_logprobs_profile.txt" "$OUT/vllm_logprobs_profile_05b.txt"
  ;;
3)
  bash .gpu/smollm_p0/device_install.sh smollm .gpu/smollm_p0 | tail -1
  ;;
4)
  bash .gpu/smollm_p1/device_install.sh smollm .gpu/smollm_p1 | tail -1
  need /tmp/site_smollm/.installed
  install_wheels .gpu/extra_small /tmp/site_extra
  mkdir -p /tmp/speed/gsm8k && cp .gpu/gsm8k/train.parquet "$DATA"
  [ -f "$MODEL/config.json" ] || python3 -m rlkit model import /tmp/site_smollm/*.gguf "$MODEL" 2>&1 | tail -3 | log
  need "$MODEL/config.json"
  bench default $WORKLOAD --engine fsdp2 --rollout vllm
  python3 scripts/gpu/vllm_logprobs_cost.py --model "$MODEL" --data "$DATA" 2>&1 | grep -v Warning | log
  ;;
5)
  need "$MODEL/config.json"
  bench switches $WORKLOAD --engine fsdp2,deepspeed --rollout vllm --no-baseline --steps 4 \
    engine.torch_compile=true engine.pack_sequences=true engine.max_tokens_per_micro_batch=16384 \
    rollout.return_logprobs=false algorithm.old_logprobs_from_update=true
  $PASSES --engine deepspeed --model "$MODEL" --out /tmp/speed/passes_smollm "${DS_SETTINGS[@]}" \
    --setting z3_no_overlap:ds.overlap_comm=false --setting z2_no_overlap:deepspeed.zero_stage=2,ds.overlap_comm=false 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_deepspeed.json"
  ;;
6)
  bash .gpu/sglang_p0/device_install.sh sglang .gpu/sglang_p0 | tail -1
  need "$MODEL/config.json"
  python3 -c "import transformers; print('transformers', transformers.__version__)" | log
  $PASSES --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_smollm --setting fsdp2: --repeats 3 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_fsdp2.json"
  ;;
7)
  bash .gpu/sglang_p1/device_install.sh sglang .gpu/sglang_p1 | tail -1
  need $SGLANG_SITE/.installed
  need "$MODEL/config.json"
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  python3 scripts/gpu/sglang_contention.py --model "$MODEL" --data "$DATA" 2>&1 | grep -v Warning | log
  # the trainer's passes with the machine's transformers instead of the bundle's (SGLang itself not imported)
  mkdir -p /tmp/site_sglang_hidden
  mv $SGLANG_SITE/transformers $SGLANG_SITE/transformers-*.dist-info /tmp/site_sglang_hidden/ 2>/dev/null
  python3 -c "import transformers; print('transformers', transformers.__version__)" | log
  $PASSES --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_sglang_site --setting fsdp2_machine_tf: --repeats 3 \
    2>&1 | log
  mv /tmp/site_sglang_hidden/* $SGLANG_SITE/
  bench sglang $WORKLOAD --engine fsdp2 --rollout sglang --no-baseline
  ;;
*)
  echo "unknown step $STEP (1-7)"; exit 2
  ;;
esac
