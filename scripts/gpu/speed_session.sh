#!/usr/bin/env bash
# speed_session.sh STEP -- issue 17's GPU plan, one step per device command, ON the GPU machine (one H200), from
# the repository root. Prepare the carried folders here first: scripts/gpu/speed_prepare.sh GGUF [GSM8K_DIR].
# Send the steps back to back (/tmp lives only while the machine stays warm); each writes its logs to $OUT.
# Minutes are estimates from earlier sessions' timings (model loads, vLLM init ~50 s, steps of ~5-7 s).
#
# step carry                                   min  what it measures, and what to look for
#  1   .gpu/vllm_p0 .gpu/dsw .gpu/extra_small   3   installs DeepSpeed + extras, stores vLLM piece 0. 1c: ZeRO-3 as
#                                                   rlkit now builds it (leaf decoder layers, persistent parameters)
#                                                   vs DeepSpeed's stock ZeRO-3 vs ZeRO-2 vs FSDP2, log-prob pass and
#                                                   update, 0.5B shape, 256 x (128+256), 16 per micro-batch (options
#                                                   left at auto are their fixed defaults in engine_passes.py).
#                                                   Look for: z3 update within 1.2x of fsdp2 (stock was ~2.3x);
#                                                   z2 vs z3: ZeRO-2 is what zero_stage auto picks on one GPU.
#  2   .gpu/vllm_p1                             3   finishes vLLM. 1a on the 0.5B shape (the docs' 1.02 s vs 1.98 s):
#                                                   per-variant times of scripts/gpu/vllm_logprobs_cost.py.
#                                                   Look for: "rlkit request, logprobs=0" near "no logprobs".
#  3   .gpu/smollm_p0                           0.5 stores GGUF piece 0 (nothing else: keep it short).
#  4   .gpu/smollm_p1 .gpu/gsm8k                8   imports SmolLM2-135M-Instruct ($MODEL), then the issue's
#                                                   workload as a user runs it: rlkit bench --model --data, fsdp2 x
#                                                   vllm, NO speed switches (every option auto), 32 x 8 x <=256,
#                                                   median of steps 2-6, with the vLLM-alone rows; and 1a on real
#                                                   text (GSM8K prompts).
#                                                   Look for: the "fsdp2 x vllm ran with ..." line (what auto
#                                                   picked: packing, compile, a budget, no checkpointing, no rollout
#                                                   log-probs, old log-probs from the update); step <= 4.4 s;
#                                                   step / vLLM <= 1.3x; gen / vLLM <= 1.11x; peak GB against the
#                                                   budget's arithmetic in default_fsdp2-vllm.txt (speed: lines).
#  5   (none)                                   6   the same workload: deepspeed x vllm with no speed switches
#                                                   (auto: ZeRO-2 on one GPU), and fsdp2 x vllm with the fixed
#                                                   settings plus the issue's hand-picked switches (its 5.13 s row).
#                                                   Look for: deepspeed step <= 1.2x step 4's fsdp2; step 4's auto
#                                                   row at or below the hand-picked one.
#  6   (none)                                   5   fsdp2 x vllm with the fixed settings from before auto (the
#                                                   "before" row on this machine), and DeepSpeed's passes on $MODEL
#                                                   (also without overlap_comm, which one rank cannot use).
#  7   .gpu/sglang_p0                           1   stores SGLang piece 0; the FSDP2 passes on $MODEL with the
#                                                   machine's transformers (5.17): the reference for step 8.
#  8   .gpu/sglang_p1                           8   installs SGLang. 1b: scripts/gpu/sglang_contention.py, the same
#                                                   passes with the SGLang bundle's transformers hidden, and rlkit
#                                                   bench fsdp2 x sglang on the issue's workload (no speed switches),
#                                                   with SGLang alone (and vLLM alone) on the same prompts.
#                                                   Look for: passes "alone" here vs step 7 (the transformers build);
#                                                   sleep_on_idle=False vs True, and its idle_cpu_share (~1.0 vs ~0)
#                                                   and idle_own_process (a thread left polling in the trainer);
#                                                   `gen / own alone` of fsdp2 x sglang (target: <= 1.11x).
#  9   (none)                                   7   tests/gpu/test_speed_defaults_gpu.py (what auto picks for the tiny
#                                                   model, FSDP2 and DeepSpeed: 2 passed), then
#                                                   target 5: configs/grpo_gsm8k.yaml as shipped (64 x 8 x <=512, 4
#                                                   optimizer steps a batch), FSDP2, on $MODEL and the GSM8K file,
#                                                   6 steps; only paths, the step count and no validation/saves
#                                                   given. Look for: median time/step of steps 2-6 <= 1/3 of 23-34 s
#                                                   (recipe_fsdp2.txt), and its speed: lines.
# 10   (none)                                   6   the same with --engine deepspeed (33-43 s before).
# Order of value if device time runs short: 1, 4 (the defaults, targets 1-3), 9-10 (target 5), 5, 2, then 6-8.
#
# What steps 1-10 left open (the sixth session's plan: SGLang first, then ZeRO-3 on the workload with vLLM):
# 11   .gpu/smollm_p0 .gpu/dsw .gpu/extra_small 1   stores GGUF piece 0; installs DeepSpeed, pydantic (in its own
#                                                   site, for the steps before a bundle brings one) and the extras.
# 12   .gpu/smollm_p1 .gpu/gsm8k                4   imports $MODEL; the passes on it at the workload's size (256 x
#                                                   (128+256)): FSDP2, ZeRO-3 and ZeRO-2, 16 sequences a micro-batch
#                                                   and one packed micro-batch of 256 (what auto's budget gives).
#                                                   Look for: z3 within 1.2x of fsdp2, both micro-batchings.
# 13   .gpu/sglang_p0                           3   stores SGLang piece 0; tests/gpu/test_speed_defaults_gpu.py
#                                                   (its rollout.sleep assertion has not run on a GPU yet).
# 14   .gpu/sglang_p1                           5   installs SGLang; step 8's rlkit bench fsdp2 x sglang.
# 15   (none)                                   5   step 8's contention script and passes without the bundle's
#                                                   transformers (step 8 is 14 then 15).
# 16   .gpu/vllm_p0                             0.5 stores vLLM piece 0.
# 17   .gpu/vllm_p1                             8   installs vLLM; rlkit bench fsdp2,deepspeed x vllm with ZeRO-3 on
#                                                   the workload (no other switch) and vLLM alone. Look for: z3 step
#                                                   and passes within 1.2x of fsdp2's; fsdp2 x vllm's ref and update
#                                                   against step 14's fsdp2 x sglang (the issue's 1.5-2x).
# What the sixth session left open (docs/benchmarks.md, "The sixth session"): 11, 12 (SKIP_PASSES=1: import only),
# 13, 14, then:
# 18   (none)                                   3   where the SGLang generate phase loses time against SGLang alone:
#                                                   scripts/gpu/sglang_generate_gap.py (raw engine vs rlkit's call,
#                                                   after a weight push, after sleep/wake, after GPU work, with and
#                                                   without the memory saver). The seventh session's machine stopped
#                                                   answering while 18 ran with 21 in one call (nothing came back):
#                                                   send them as separate calls, 18 first.
# 19   (none)                                   5   ZeRO-3 and torch.compile: the passes with rlkit's plain F.linear
#                                                   (DeepSpeed's memory_efficient_linear off, since the seventh
#                                                   session) and with DeepSpeed's wrapper, compiled and eager, beside
#                                                   FSDP2; one process each. Look for: recompiles, z3 near fsdp2.
# The seventh session: 11, 12 (SKIP_PASSES=1), 13, 14, 18, 19, 16, 17, then:
# 20   (none)                                   4   deepspeed x vllm, ZeRO-3 compiled, on the workload (after 17).
# 21   (none)                                   4   py-spy's stacks of a 3-step rlkit bench fsdp2 x sglang (with
#                                                   SGLang alone), every process (after 14; py-spy from step 11).
# The eighth session: 11, 12 (SKIP_PASSES=1), 16, then:
# 22   .gpu/vllm_p1                             5   installs vLLM; scripts/gpu/vllm_seed_cost.py: per-request seeds
#                                                   against one seed per call, and vLLM alone, in one engine; the
#                                                   call-seeded replay with a warm and a cold prefix cache. Ran at
#                                                   commit a6f4c7d; the option and the script were reverted after
#                                                   it (per-request seeds cost nothing; the call seed did not
#                                                   replay): check that commit out to rerun it. Elsewhere 22
#                                                   only installs vLLM (for 26's bench).
# 23   (none)                                   5   rlkit bench fsdp2 x vllm on the workload with defaults (and vLLM
#                                                   alone), then the torch profiler's kernel table of FSDP2's
#                                                   compiled, packed update at the workload's size.
# 24   (none)                                   3   where FSDP2's update spends its host time (step 23 found the GPU
#                                                   busy 27% of it): the profiler's tables by kernel and by host
#                                                   time, and the update without resharding after forward, in one
#                                                   micro-batch, and eager (after 12; no vLLM needed).
# 25   (none)                                   3   step 24 again after the flash kernel went into the compiled
#                                                   layers (no graph break around the attention), with dynamo's
#                                                   graph-break and recompile counts.
# 26   (none)                                   5   the traced attention against the graph break it replaced, on one
#                                                   machine, in the order traced, broken, broken, traced (each a
#                                                   process of its own; the second of two processes ran faster in
#                                                   the eighth session), then the workload's bench with vLLM alone
#                                                   before and after. Needs 12 (and 16 + 22's install for the bench).
#                                                   NO_BENCH=1: the A/B only.
# The ninth session: 11, 12 (SKIP_PASSES=1), 16, 22, then:
# 27   (none)                                   6   the workload's bench with defaults (vLLM alone before and after;
#                                                   bench.json's phases now carry time/gc, the collector's seconds),
#                                                   then the same pairing with one micro-batch for the whole step
#                                                   (a budget above the step's tokens; no baseline). Look for: the
#                                                   step and update of one micro-batch against two, its peak GB
#                                                   (what a compiled token costs beside the awake engine).
# 28   (none)                                   5   py-spy's stacks of a 4-step bench of the pairing (no baseline),
#                                                   every process, for where the trainer's generate phase spends
#                                                   the time that vLLM alone does not; then tests/gpu/
#                                                   test_packing_gpu.py (its compiled test has not run yet).
# The tenth session: 11, 12 (SKIP_PASSES=1), 16, 22, then:
# 29   (none)                                   8   engine.share_prompts (each prompt once for its group's samples):
#                                                   tests/gpu/test_packing_gpu.py (its shared-prompt tests), the
#                                                   passes on $MODEL with groups of 8 samples a prompt, whole rows
#                                                   against shared prompts in the order whole, shared, shared,
#                                                   whole, then the workload's bench with defaults (auto shares)
#                                                   and again with engine.share_prompts=false (no baseline).
#                                                   Look for: the update and log-prob pass shared against whole;
#                                                   step / vLLM alone against 1.3x; the same loss curve.
#                                                   Without vLLM installed it stops before the bench; BENCH_ONLY=1
#                                                   runs the bench alone (after 16 and 22).
# 30   (none)                                   8   the workload's bench with engine.share_prompts false, true, true,
#                                                   false (no baseline), each its own process: step 29's two benches
#                                                   ran in one order only. Look for: update and ref lp by sharing.
# Planned in the tenth session (its device time ran out before 31), run in the eleventh:
# 31   .gpu/dsw                                 2   scripts/gpu/host_overhead.py --update: the host's seconds for a
#                                                   call of torch's varlen_attn against the aten flash kernel it
#                                                   wraps (the profiler put 8.9 ms a call on it, itself inflating
#                                                   host times), and FSDP2's eager packed update with a unit per
#                                                   decoder layer against the whole model as one unit (random
#                                                   weights of SmolLM2's shape). Look for: enqueue seconds against
#                                                   the call's own; one unit faster on one GPU (then an option).
# 32   (none)                                   6   after 12, 13, 14: the SGLang pairing's bench (no baseline; 14 has
#                                                   SGLang alone) with the trainer's OpenMP threads passive
#                                                   (OMP_WAIT_POLICY=PASSIVE), with inductor's compile workers in
#                                                   process (TORCHINDUCTOR_COMPILE_THREADS=1), and with both: the
#                                                   suspects for what the trainer's process adds to SGLang's
#                                                   generate phase. Look for: generate against step 14's.
# 33   .gpu/ab_before                           6   after 11, 12 (and 16, 22 for the bench): the update and log-prob
#                                                   pass with nothing read from the GPU inside the micro-batch loop
#                                                   (the tenth session's change) against the code before it, in the
#                                                   order after, before, before, after (each a process), then the
#                                                   workload's bench with vLLM alone. Prepare the folder here first:
#                                                   mkdir -p .gpu/ab_before && for f in rlkit/engines/passes.py
#                                                   rlkit/trainer/losses.py rlkit/algorithms/policy_losses.py; do
#                                                   git show fd761ef:$f > .gpu/ab_before/$(basename $f); done
#                                                   Look for: the update of "after" below "before" on both ends.
# The eleventh session: 11, 12 (SKIP_PASSES=1), 16, 22, 33, 31, 13, 14, then 32 with both variables only. Next:
# 34   (none)                                   6   after 11, 12: whether later processes run slower because of
#                                                   inductor's on-disk cache (steps 26, 29, 30 and 33 each found the
#                                                   first process fastest: 33's log-prob pass 0.16 s, then 0.44-0.49):
#                                                   the compiled passes four times, each process with its own cache
#                                                   folder, fresh, then warm (the folder the run before wrote), fresh,
#                                                   warm; each run's line gives the host's mean clock and load. Look
#                                                   for: fresh fast and warm slow (the cache), or each run slower
#                                                   than the one before (the machine: the host's clock falling?).
# 35   (none)                                   3   after 12: engine.fsdp2.units and the weight stream on $MODEL,
#                                                   compiled: scripts/gpu/host_overhead.py --update --model, both
#                                                   engines in one process taking turns (AB, BA, ...: the machine's
#                                                   drift weighs on both), 20 rounds. Look for: model_over_layers of
#                                                   the update and log-prob pass below 1 (the last call of the
#                                                   eleventh session, random weights, separate turns: 0.36 against
#                                                   0.38 and 0.54 s), local_copy_over_full_tensor.
# 36   (none)                                   6   after 16, 22: the workload's bench with defaults (auto: one unit on
#                                                   one GPU) and vLLM alone, then with engine.fsdp2.units=layers (no
#                                                   baseline). Look for: step / vLLM alone against 1.3x.
# The twelfth session ran 11, 12 (SKIP_PASSES=1), 16, 22, 36, 13, 14, 35, then 36's and 14's default benches once
# more (docs/benchmarks.md, twelfth session); 34 did not fit. Next: the same order (34 last). In each bench's
# *_metrics.jsonl look at time/gc: the first step's now counts from the step's start, and the trainer freezes
# setup's heap before the steps (rlkit/heap.py); before, the SGLang pairing's second step carried a 0.52-0.69 s
# collection.
# 37   (none)                                   6   after 12 (and 16, 22 for the bench): AdamW fused (what rlkit builds
#                                                   since the thirteenth session) against foreach, on $MODEL,
#                                                   compiled, one unit, 20 turns (scripts/gpu/host_overhead.py
#                                                   --optimizer): the optimizer step alone and the whole update;
#                                                   then the workload's bench with defaults and vLLM alone. Look
#                                                   for: fused_over_foreach below 1; time/gc of steps 1-2.
# The thirteenth session ran 11, 12 (SKIP_PASSES=1), 16, 22, 37, 13, 14, then the default benches of vLLM and SGLang
# again, 13's test after its DeepSpeed fix, an exact-resume check, deepspeed x vllm and the vLLM bench a third time
# (docs/benchmarks.md, thirteenth session). Next: the same set-up (11, 12, 16, 22), then 37's bench for target 2,
# 13 and 14 for SGLang's target 3, and 34 if time is left.
# 38   (none)                                   3   after 12: prompts shared or whole and one micro-batch or two, on
#                                                   $MODEL, compiled, one unit, 32 prompts x 8 samples, four engines
#                                                   taking turns (scripts/gpu/host_overhead.py --batching). Look for:
#                                                   shared_over_whole of the update below 1 (the tenth session found
#                                                   sharing no faster, before the loop's reads and the unit went).
# 39   (none)                                   4   after 16, 22: scripts/gpu/vllm_generate_gap.py, where the trainer's
#                                                   generate phase loses time against vLLM alone (text, seeds, rlkit's
#                                                   call, a trainer step before the call). Look for: rlkit and
#                                                   after_step against no_text.
# The fourteenth session ran 11, 12 (SKIP_PASSES=1), 38, 16, 22, 39 and three benches on one machine, then 11, 12, 38,
# 16, 22, benches and tests/gpu/test_packing_gpu.py on a second (docs/benchmarks.md, fourteenth session).
# 40   (none)                                   4   after 12: the copies to the GPU without a stream sync (built after
#                                                   the fourteenth session's runs): host_overhead.py --transfers (one
#                                                   engine, pinned against plain .to(), 12 turns), then
#                                                   tests/gpu/test_packing_gpu.py (its sync count). Look for:
#                                                   pinned_over_blocking below 1; the test passing. Then 16, 22 and
#                                                   the workload's bench (target 2). From the fifteenth session
#                                                   also tests/gpu/test_memory_gpu.py: a packed step's peak against
#                                                   the activation estimate, eager and compiled.
# 41   (none)                                   6   after 16, 22 (SKIP_SEEDS=1 skips 22's seed script): the workload's
#                                                   bench with defaults (fifteenth session: the compiled estimate's
#                                                   budget, prompts shared where that saves a micro-batch) and vLLM
#                                                   alone, then with engine.share_prompts=false (no baseline). Look
#                                                   for: step / vLLM alone against 1.3x; the "runs with shared
#                                                   prompts" line; memory/peak_gb against the budget.
# The fifteenth session ran 11, 12 (SKIP_PASSES=1), 40, 16, 22 (SKIP_SEEDS=1), 41, 13 and 14 on one machine, then
# test_speed_defaults_gpu.py and the defaults bench once more (docs/benchmarks.md, fifteenth session); a second
# machine's 11, 12, 16, 22 and bench ran out of device time. Next: 11, 12, 16, 22 and 41's first bench on other
# machines (the target-2 ratio moves with the machine), 13 and 14 for SGLang.
set -uo pipefail
STEP=${1:?usage: scripts/gpu/speed_session.sh STEP (1-41)}
source scripts/gpu/common.sh
MODEL=${MODEL:-/tmp/speed/SmolLM2-135M-Instruct}
DATA=${DATA:-/tmp/speed/gsm8k/train.parquet}  # MODEL and DATA may come from smollm2.sh's /tmp/smol
SGLANG_SITE=/tmp/site_sglang
mkdir -p /tmp/speed
PASSES="python3 benchmarks/engine_passes.py --seqs 256 --prompt-len 128 --response-len 256 --repeats 2"
WORKLOAD="--model $MODEL --data $DATA --prompts 32 --n 8 --response-len 256 --steps 5 --warmup 1"
DS_SETTINGS=(--setting z3:deepspeed.zero_stage=3
             --setting z3_stock:deepspeed.zero_stage=3,ds.stage3_param_persistence_threshold=100000,leaf_layers=false
             --setting z2:deepspeed.zero_stage=2 --setting z1:deepspeed.zero_stage=1)
# The settings runs had before every speed option became auto (docs/speed_defaults.md), and the switches the issue
# picked by hand on top of them (its 5.13 s row); later overrides win.
FIXED="engine.pack_sequences=false engine.torch_compile=false engine.max_tokens_per_micro_batch=null
       engine.gradient_checkpointing=false rollout.return_logprobs=true algorithm.old_logprobs_from_update=false"
HAND_PICKED="rollout.return_logprobs=false engine.torch_compile=true engine.pack_sequences=true
             engine.max_tokens_per_micro_batch=16384"

need() { [ -e "$1" ] || { echo "missing $1: run the earlier steps first, back to back"; exit 3; }; }
log() { tee -a "$OUT/step$STEP.log"; }
bench() {  # bench NAME ARGS...: rlkit bench into /tmp/speed/NAME, table and json to $OUT
  local name=$1; shift
  echo "+ rlkit bench $* --out /tmp/speed/$name" | log
  python3 -m rlkit bench "$@" --out "/tmp/speed/$name" 2>&1 | grep --line-buffered -v "Loading\|it/s]" | log
  cp "/tmp/speed/$name/bench.json" "$OUT/$name.json" 2>/dev/null
  for run in "/tmp/speed/$name"/runs/*; do
    { grep "speed: \|runs with shared prompts" "$run/bench.log"; tail -n 30 "$run/bench.log"; } \
      > "$OUT/${name}_$(basename "$run").txt"
    cp "$run/metrics.jsonl" "$OUT/${name}_$(basename "$run")_metrics.jsonl" 2>/dev/null
  done
}
recipe() {  # recipe NAME ARGS...: configs/grpo_gsm8k.yaml as shipped, on $MODEL and the GSM8K file, 6 steps
  local name=$1; shift
  local dir=/tmp/speed/$name
  echo "+ rlkit train configs/grpo_gsm8k.yaml $* (paths, 6 steps, no validation or checkpoints)" | log
  python3 -m rlkit train configs/grpo_gsm8k.yaml "$@" model.path="$MODEL" "data.train_files=[$DATA]" \
    "data.val_files=[]" trainer.total_steps=6 trainer.val_before_train=false trainer.test_freq=0 \
    trainer.save_freq=0 trainer.save_at_end=false trainer.resume=disable trainer.progress_bar=false \
    "trainer.loggers=[console,jsonl]" trainer.output_dir="$dir" 2>&1 | grep --line-buffered -v "Loading\|it/s]" \
    > "$OUT/$name.log"
  grep "speed: \|error" "$OUT/$name.log" | log
  cp "$dir/metrics.jsonl" "$OUT/${name}_metrics.jsonl" 2>/dev/null
  python3 - "$dir/metrics.jsonl" <<'PY' 2>&1 | tee "$OUT/$name.txt" | log
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
steps = [r for r in records if r.get("step", 0) >= 2 and "time/step" in r]
print(f"{len(steps)} steps after the first; median seconds:")
for key in sorted({k for r in steps for k in r if k.startswith("time/")}):
    print(f"  {key}: {statistics.median(r[key] for r in steps if key in r):.3f}")
print(f"  first step: {records[0]['time/step']:.1f} s; memory/peak_gb max: "
      f"{max(r.get('memory/peak_gb', 0) for r in records):.1f}")
PY
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
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p1 | tail -1
  need /tmp/site_vllm/.installed
  python3 scripts/gpu/vllm_logprobs_cost.py --model /tmp/speed/passes05/cache/qwen2.5-0.5b-random-v2 2>&1 \
    | grep -v Warning | log
  mv "$OUT/vllm_logprobs_profile.txt" "$OUT/vllm_logprobs_profile_05b.txt"
  ;;
3)
  bash scripts/gpu/device_install.sh smollm .gpu/smollm_p0 | tail -1
  ;;
4)
  if [ ! -f "$MODEL/config.json" ]; then  # not imported yet by scripts/gpu/smollm2.sh c2
    bash scripts/gpu/device_install.sh smollm .gpu/smollm_p1 | tail -1
    need /tmp/site_smollm/.installed
    python3 -m rlkit model import /tmp/site_smollm/*.gguf "$MODEL" 2>&1 | tail -3 | log
  fi
  install_wheels .gpu/extra_small /tmp/site_extra
  [ -f "$DATA" ] || { mkdir -p "$(dirname "$DATA")" && cp .gpu/gsm8k/train.parquet "$DATA"; }
  need "$MODEL/config.json"
  bench default $WORKLOAD --engine fsdp2 --rollout vllm
  [ -n "${SKIP_LOGPROBS_COST:-}" ] || \
    python3 scripts/gpu/vllm_logprobs_cost.py --model "$MODEL" --data "$DATA" 2>&1 | grep -v Warning | log
  ;;
5)
  need "$MODEL/config.json"
  bench ds_default $WORKLOAD --engine deepspeed --rollout vllm --no-baseline --steps 4
  [ -n "${DS_ONLY:-}" ] || bench hand_picked $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline --steps 4 $FIXED $HAND_PICKED
  ;;
6)
  need "$MODEL/config.json"
  bench fixed $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline --steps 4 $FIXED
  $PASSES --engine deepspeed --model "$MODEL" --out /tmp/speed/passes_smollm "${DS_SETTINGS[@]}" \
    --setting z3_no_overlap:deepspeed.zero_stage=3,ds.overlap_comm=false \
    --setting z2_no_overlap:deepspeed.zero_stage=2,ds.overlap_comm=false 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_deepspeed.json"
  ;;
7)
  bash scripts/gpu/device_install.sh sglang .gpu/sglang_p0 | tail -1
  need "$MODEL/config.json"
  python3 -c "import transformers; print('transformers', transformers.__version__)" | log
  $PASSES --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_smollm --setting fsdp2: --repeats 3 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_fsdp2.json"
  ;;
8)
  bash "$0" 14 && bash "$0" 15
  ;;
9)
  need "$MODEL/config.json"
  timeout 240 python3 -m pytest tests/gpu/test_speed_defaults_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -15 | log
  recipe recipe_fsdp2
  ;;
10)
  need "$MODEL/config.json"
  recipe recipe_deepspeed --engine deepspeed
  ;;
11)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | log
  bash scripts/gpu/device_install.sh smollm .gpu/smollm_p0 | tail -1
  install_wheels .gpu/dsw /tmp/site_ds '(pydantic|typing_|annotated_types)'
  install_wheels .gpu/dsw /tmp/site_pyd '(deepspeed|hjson)'  # until a bundle brings its own pydantic
  install_wheels .gpu/extra_small /tmp/site_extra
  ;;
12)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  bash scripts/gpu/device_install.sh smollm .gpu/smollm_p1 | tail -1
  need /tmp/site_smollm/.installed
  python3 -m rlkit model import /tmp/site_smollm/*.gguf "$MODEL" 2>&1 | tail -3 | log
  mkdir -p "$(dirname "$DATA")" && cp .gpu/gsm8k/train.parquet "$DATA"
  need "$MODEL/config.json"
  [ -z "${SKIP_PASSES:-}" ] || exit 0
  PACKED=pack_sequences=true,micro_batch_size=256
  $PASSES --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_smollm --setting fsdp2: \
    --setting fsdp2_packed:$PACKED 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_fsdp2.json"
  $PASSES --engine deepspeed --model "$MODEL" --out /tmp/speed/passes_smollm --setting z3:deepspeed.zero_stage=3 \
    --setting z3_packed:deepspeed.zero_stage=3,$PACKED --setting z2:deepspeed.zero_stage=2 \
    --setting z2_packed:deepspeed.zero_stage=2,$PACKED 2>&1 | log
  cp /tmp/speed/passes_smollm/passes.json "$OUT/passes_smollm_deepspeed.json"
  ;;
13)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  bash scripts/gpu/device_install.sh sglang .gpu/sglang_p0 | tail -1
  timeout 300 python3 -m pytest tests/gpu/test_speed_defaults_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -15 | log
  ;;
14)
  bash scripts/gpu/device_install.sh sglang .gpu/sglang_p1 | tail -1
  need $SGLANG_SITE/.installed
  need "$MODEL/config.json"
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  bench sglang $WORKLOAD --engine fsdp2 --rollout sglang  # with the "SGLang alone" rows (and vLLM alone's)
  ;;
15)
  need $SGLANG_SITE/.installed
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  python3 scripts/gpu/sglang_contention.py --model "$MODEL" --data "$DATA" 2>&1 | grep -v Warning | log
  # the trainer's passes with the machine's transformers instead of the bundle's (SGLang itself not imported)
  mkdir -p /tmp/site_sglang_hidden
  mv $SGLANG_SITE/transformers $SGLANG_SITE/transformers-*.dist-info /tmp/site_sglang_hidden/ 2>/dev/null
  python3 -c "import transformers; print('transformers', transformers.__version__)" | log
  $PASSES --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_sglang_site --setting fsdp2_machine_tf: --repeats 3 \
    2>&1 | log
  mv /tmp/site_sglang_hidden/* $SGLANG_SITE/
  ;;
16)
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p0 | tail -1
  ;;
17)
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p1 | tail -1
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench vllm_z3 $WORKLOAD --engine fsdp2,deepspeed --rollout vllm engine.deepspeed.zero_stage=3
  ;;
18)
  need $SGLANG_SITE/.installed
  need "$MODEL/config.json"
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  python3 scripts/gpu/sglang_generate_gap.py --model "$MODEL" --data "$DATA" 2>&1 | grep '^{' | log
  ;;
19)
  need "$MODEL/config.json"
  RAGGED="--ragged --repeats 3 --out /tmp/speed/passes_compile"
  PACKED=pack_sequences=true,micro_batch_size=128
  Z3=deepspeed.zero_stage=3,$PACKED
  passes() {  # passes NAME ENGINE SETTING: one setting in a process of its own (dynamo's counts start at 0)
    [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]] || return 0  # ONLY="z3_eager fsdp2_compiled": just those
    TORCH_LOGS=recompiles $PASSES $RAGGED --engine "$2" --model "$MODEL" --setting "$1:$3" > "$OUT/passes_$1.log" 2>&1
    echo "$1: $(grep -c 'Recompiling function' "$OUT/passes_$1.log") recompiles," \
      "$(grep -c recompile_limit "$OUT/passes_$1.log") recompile_limit lines" | log
    grep '^{' "$OUT/passes_$1.log" | log
  }
  passes z3_eager deepspeed $Z3
  passes z3_compiled deepspeed $Z3,torch_compile=true
  passes z3_eager_efficient_linear deepspeed $Z3,ds.memory_efficient_linear=true
  passes z3_compiled_efficient_linear deepspeed $Z3,torch_compile=true,ds.memory_efficient_linear=true
  passes fsdp2_eager fsdp2 $PACKED
  passes fsdp2_compiled fsdp2 $PACKED,torch_compile=true
  ;;
20)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench vllm_z3_compiled $WORKLOAD --engine deepspeed --rollout vllm --no-baseline engine.deepspeed.zero_stage=3 \
    engine.torch_compile=true
  ;;
21)
  need $SGLANG_SITE/.installed
  need "$MODEL/config.json"
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  # where the processes spend a bench's steps (trainer, SGLang's scheduler, SGLang alone's): py-spy's collapsed
  # stacks, one line per stack with its process; skipped where py-spy cannot read the processes
  SPY=/tmp/site_extra/bin/py-spy
  [ -x $SPY ] && timeout 300 $SPY record --subprocesses --nonblocking --rate 50 --format raw \
    --output "$OUT/sglang_bench_stacks.txt" -- python3 -m rlkit bench $WORKLOAD --steps 3 --engine fsdp2 \
    --rollout sglang --out /tmp/speed/sglang_spy > "$OUT/sglang_spy.log" 2>&1
  echo "py-spy: rc=$? $(wc -l < "$OUT/sglang_bench_stacks.txt" 2>/dev/null) stacks" | log
  ;;
22)
  bash scripts/gpu/device_install.sh vllm .gpu/vllm_p1 | tail -1
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  [ ! -f scripts/gpu/vllm_seed_cost.py ] || [ -n "${SKIP_SEEDS:-}" ] || \
    python3 scripts/gpu/vllm_seed_cost.py --model "$MODEL" --data "$DATA" 2>&1 | grep '^{' | log
  ;;
23)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench vllm_defaults $WORKLOAD --engine fsdp2 --rollout vllm
  PACKED=pack_sequences=true,micro_batch_size=128,torch_compile=true
  $PASSES --ragged --repeats 3 --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_profile \
    --setting "fsdp2_compiled:$PACKED" --profile fsdp2_compiled 2>&1 | grep '^{' | log
  cp /tmp/speed/passes_profile/profile_fsdp2_compiled.txt "$OUT/" 2>/dev/null
  ;;
24)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  PACKED=pack_sequences=true,micro_batch_size=128,torch_compile=true
  $PASSES --ragged --repeats 3 --engine fsdp2 --model "$MODEL" --out /tmp/speed/passes_host \
    --setting "fsdp2_compiled:$PACKED" --setting "no_reshard:$PACKED,fsdp2.reshard_after_forward=false" \
    --setting "one_micro_batch:pack_sequences=true,micro_batch_size=256,torch_compile=true" \
    --setting "eager:pack_sequences=true,micro_batch_size=128" --profile fsdp2_compiled 2>&1 | grep '^{' | log
  cp /tmp/speed/passes_host/profile_fsdp2_compiled.txt "$OUT/" 2>/dev/null
  ;;
25)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  PACKED=pack_sequences=true,torch_compile=true
  TORCH_LOGS=graph_breaks,recompiles $PASSES --ragged --repeats 3 --engine fsdp2 --model "$MODEL" \
    --out /tmp/speed/passes_traced --setting "fsdp2_compiled:$PACKED,micro_batch_size=128" \
    --setting "one_micro_batch:$PACKED,micro_batch_size=256" --profile fsdp2_compiled > "$OUT/step25_raw.log" 2>&1
  echo "graph breaks: $(grep -c 'Graph break' "$OUT/step25_raw.log"), recompiles: $(grep -c 'Recompiling' \
    "$OUT/step25_raw.log")" | log
  grep '^{' "$OUT/step25_raw.log" | log
  cp /tmp/speed/passes_traced/profile_fsdp2_compiled.txt "$OUT/" 2>/dev/null
  ;;
26)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  ATTENTION=rlkit/engines/varlen_attention.py
  cp $ATTENTION /tmp/speed/attention_traced.py
  sed 's/^def varlen_causal_attention(/@torch.compiler.disable\ndef varlen_causal_attention(/' $ATTENTION \
    > /tmp/speed/attention_broken.py
  for code in traced broken broken traced; do
    cp /tmp/speed/attention_$code.py $ATTENTION
    TORCH_LOGS=graph_breaks,recompiles $PASSES --ragged --repeats 5 --engine fsdp2 --model "$MODEL" \
      --out /tmp/speed/ab_$code --setting "$code:pack_sequences=true,torch_compile=true,micro_batch_size=128" \
      > "$OUT/ab_$code.log" 2>&1
    echo "$code: $(grep -c 'Graph break' "$OUT/ab_$code.log") graph breaks" | log
    grep '^{' "$OUT/ab_$code.log" | log
  done
  cp /tmp/speed/attention_traced.py $ATTENTION
  [ -n "${NO_BENCH:-}" ] || [ ! -f /tmp/site_vllm/.installed ] || bench ab_bench $WORKLOAD --engine fsdp2 --rollout vllm
  ;;
27)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench defaults $WORKLOAD --engine fsdp2 --rollout vllm
  bench one_micro_batch $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline engine.max_tokens_per_micro_batch=262144
  ;;
28)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  SPY=/tmp/site_extra/bin/py-spy
  [ -x $SPY ] && timeout 300 $SPY record --subprocesses --nonblocking --rate 50 --format raw \
    --output "$OUT/vllm_bench_stacks.txt" -- python3 -m rlkit bench $WORKLOAD --steps 4 --engine fsdp2 \
    --rollout vllm --no-baseline --out /tmp/speed/vllm_spy > "$OUT/vllm_spy.log" 2>&1
  echo "py-spy: rc=$? $(wc -l < "$OUT/vllm_bench_stacks.txt" 2>/dev/null) stacks" | log
  cp /tmp/speed/vllm_spy/runs/*/metrics.jsonl "$OUT/vllm_spy_metrics.jsonl" 2>/dev/null
  timeout 240 python3 -m pytest tests/gpu/test_packing_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -15 | log
  ;;
29)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  [ -n "${BENCH_ONLY:-}" ] || timeout 150 python3 -m pytest tests/gpu/test_packing_gpu.py -m gpu -q -p no:cacheprovider \
    -k "shared or longer_keys" 2>&1 | tail -5 | log
  PACKED=pack_sequences=true,torch_compile=true,micro_batch_size=128
  [ -n "${BENCH_ONLY:-}" ] || for sharing in false true true false; do
    $PASSES --ragged --group 8 --engine fsdp2 --model "$MODEL" --out /tmp/speed/shared_$sharing \
      --setting "shared_$sharing:$PACKED,share_prompts=$sharing" 2>&1 | grep '^{' | log
  done
  [ -f /tmp/site_vllm/.installed ] || exit 0
  bench shared $WORKLOAD --engine fsdp2 --rollout vllm
  bench whole $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline engine.share_prompts=false
  ;;
30)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  run=0
  for sharing in false true true false; do
    run=$((run + 1))
    echo "+ rlkit bench (run $run) engine.share_prompts=$sharing" | log
    python3 -m rlkit bench $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline engine.share_prompts=$sharing \
      --out /tmp/speed/ab$run 2>&1 | grep "fsdp2 x vllm  *│\|ran with" | log
    cp /tmp/speed/ab$run/runs/*/metrics.jsonl "$OUT/ab${run}_metrics.jsonl" 2>/dev/null
  done
  ;;
31)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  timeout 300 python3 scripts/gpu/host_overhead.py --update 2>&1 | grep '^{' | log
  ;;
32)
  need $SGLANG_SITE/.installed
  need "$MODEL/config.json"
  export PYTHONPATH="$SGLANG_SITE:$PWD:/tmp/site_extra:/tmp/site_ds" TOKENIZERS_PARALLELISM=false
  run=0
  for variant in OMP_WAIT_POLICY=PASSIVE TORCHINDUCTOR_COMPILE_THREADS=1 \
                 "OMP_WAIT_POLICY=PASSIVE TORCHINDUCTOR_COMPILE_THREADS=1"; do
    run=$((run + 1))
    echo "+ $variant rlkit bench fsdp2 x sglang (no baseline)" | log
    env $variant python3 -m rlkit bench $WORKLOAD --engine fsdp2 --rollout sglang --no-baseline \
      --out /tmp/speed/sglang_env$run 2>&1 | grep "fsdp2 x sglang  *│" | log
  done
  ;;
33)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  need .gpu/ab_before/passes.py
  CHANGED="rlkit/engines/passes.py rlkit/trainer/losses.py rlkit/algorithms/policy_losses.py"
  mkdir -p /tmp/speed/ab_after && for f in $CHANGED; do cp $f /tmp/speed/ab_after/; done
  cp -r .gpu/ab_before /tmp/speed/
  for code in after before before after; do
    for f in $CHANGED; do cp /tmp/speed/ab_$code/$(basename $f) $f; done
    $PASSES --ragged --repeats 5 --engine fsdp2 --model "$MODEL" --out /tmp/speed/reads_$code \
      --setting "$code:pack_sequences=true,torch_compile=true,micro_batch_size=128" 2>&1 | grep '^{' | log
  done
  for f in $CHANGED; do cp /tmp/speed/ab_after/$(basename $f) $f; done
  [ ! -f /tmp/site_vllm/.installed ] || bench reads_bench $WORKLOAD --engine fsdp2 --rollout vllm
  ;;
34)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  run=0
  for cache in fresh warm fresh warm; do
    run=$((run + 1))
    folder=/tmp/speed/inductor_$run
    [ $cache = fresh ] || folder=/tmp/speed/inductor_$((run - 1))
    echo "+ run $run: inductor cache $cache ($folder); host MHz $(awk '/MHz/ {sum += $4; n++} END {printf "%.0f", sum / n}' \
      /proc/cpuinfo), load $(cut -d' ' -f1 /proc/loadavg)" | log
    TORCHINDUCTOR_CACHE_DIR=$folder $PASSES --ragged --repeats 5 --engine fsdp2 --model "$MODEL" \
      --out /tmp/speed/cache_$run --setting "$cache:pack_sequences=true,torch_compile=true,micro_batch_size=128" \
      2>&1 | grep '^{' | log
  done
  ;;
35)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  timeout 400 python3 scripts/gpu/host_overhead.py --update --compile --no-attention --model "$MODEL" --repeats 20 \
    2>&1 | grep '^{' | log
  ;;
36)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench units_model $WORKLOAD --engine fsdp2 --rollout vllm
  bench units_layers $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline engine.fsdp2.units=layers
  ;;
37)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  timeout 300 python3 scripts/gpu/host_overhead.py --optimizer --compile --no-attention --model "$MODEL" \
    --repeats 20 2>&1 | grep '^{' | log
  [ -f /tmp/site_vllm/.installed ] || exit 0
  bench fused $WORKLOAD --engine fsdp2 --rollout vllm
  ;;
38)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  timeout 400 python3 scripts/gpu/host_overhead.py --batching --compile --no-attention --model "$MODEL" \
    --repeats 12 2>&1 | grep '^{' | log
  ;;
39)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  timeout 400 python3 scripts/gpu/vllm_generate_gap.py --model "$MODEL" --data "$DATA" --rounds 5 2>&1 | \
    grep '^{' | log
  ;;
40)
  export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
  need "$MODEL/config.json"
  timeout 300 python3 scripts/gpu/host_overhead.py --transfers --compile --no-attention --model "$MODEL" \
    --repeats 12 2>&1 | grep '^{' | log
  timeout 250 python3 -m pytest tests/gpu/test_packing_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -5 | log
  [ -f tests/gpu/test_memory_gpu.py ] || exit 0
  timeout 250 python3 -m pytest tests/gpu/test_memory_gpu.py -m gpu -q -s -p no:cacheprovider 2>&1 | \
    grep "peak\|passed\|failed\|Error" | log
  ;;
41)
  need /tmp/site_vllm/.installed
  need "$MODEL/config.json"
  bench defaults $WORKLOAD --engine fsdp2 --rollout vllm
  bench whole $WORKLOAD --engine fsdp2 --rollout vllm --no-baseline engine.share_prompts=false
  ;;
*)
  echo "unknown step $STEP (1-41)"; exit 2
  ;;
esac
