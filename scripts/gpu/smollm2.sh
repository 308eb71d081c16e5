#!/usr/bin/env bash
# scripts/gpu/smollm2.sh STAGE -- runs ON THE GPU machine, from the repository root: one command of the GSM8K
# record of docs/results.md (SmolLM2-135M-Instruct: base -> SFT -> GRPO, with vLLM evaluations).
# Prepare the carried folders HERE first (scripts/gpu/smollm2_prepare.sh), then send, back to back (the machine
# keeps /tmp only while warm):
#   c1  carry .gpu/smol_c1  install DeepSpeed/pydantic/rich/gguf, store the GGUF's first piece, convert the
#                           tree's datasets/gsm8k to parquet
#   c2  carry .gpu/smol_c2  join the GGUF, `rlkit model import`, full SFT, export              (~5 min)
#   c3  carry .gpu/smol_c3  store vLLM's first piece; LoRA SFT, merged export                  (~4 min)
#   c4  carry .gpu/smol_c4  install vLLM; evaluate base, SFT and LoRA SFT on GSM8K test (~2.5 min; the bench
#                           of BENCH=1 adds ~5.5 min)
#   c5  carry .gpu/smol_c5  install matplotlib; GRPO (FSDP2 x vLLM) from SFT, evaluate, plot   (~9 min)
#   c6  carry .gpu/smol_c6  store SGLang's first piece; start the same GRPO with --engine deepspeed in the
#                           background (it runs on into c7)                                     (~0.5 min)
#   c7  carry .gpu/smol_c7  install SGLang; the same GRPO with --rollout sglang beside it; wait for both (~5 min)
#   test (after c5)         pytest tests/gpu/test_smollm2_gpu.py on the SFT model              (~4 min)
#   pair (after c4)         carry .gpu/smol_c5: two GRPO runs side by side from the SFT model, ARM_A's and ARM_B's
#                           settings on top of GRPO_OVERRIDES, until PAIR_SECONDS after this command starts; this
#                           command returns after PAIR_WAIT s (default 540) and the runs go on
#   pair_end                waits for them, evaluates both at their newest common checkpoint, plots both
# Each stage writes to $OUT: STAGE.log (what it printed), STAGE.tar.gz (logs, metrics.jsonl, curves, evaluation
# summaries and per-response files) and STAGE_summary.txt (the numbers docs/results.md records).
# Environment: GRPO_STEPS (c5, default 60), COMPARE_STEPS (c6, c7, default 20), GRPO_TIMEOUT (default 420 s);
# SFT_OVERRIDES / GRPO_OVERRIDES: more key=value settings for every SFT / GRPO run (trainer.total_epochs=1 to
# save time); SKIP_LORA=1 (c3 only stores the vLLM piece); SKIP_BASE=1 (c4 does not evaluate the base model);
# BENCH=1 (c4 then runs `rlkit bench` on issue 17's workload); PASS_K=16 (c4 then evaluates the SFT model's
# pass@16 at temperature 1); EVAL_ARGS (the rollout flags of `rlkit eval`);
# SMOL_DIR (default /tmp/smol). ARM_A, ARM_B, PAIR_SECONDS, PAIR_WAIT: the `pair` stage's.
set -uo pipefail
STAGE=${1:?usage: scripts/gpu/smollm2.sh c1|c2|c3|c4|c5|c6|c7|test}
source scripts/gpu/common.sh
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
W=${SMOL_DIR:-/tmp/smol}             # models, data and runs live here between commands
CARRY=.gpu/smol_$STAGE
[ "$STAGE" = pair ] && CARRY=.gpu/smol_c5
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
DATA="data.train_files=[$W/data/train.parquet] data.val_files=[$W/data/test.parquet]"
QUIET="trainer.loggers=[console,jsonl] trainer.progress_bar=false"
# vLLM for one-off evaluations: no CUDA-graph capture (saves ~30 s of start-up, costs little at 1,319 prompts)
EVAL_ARGS=${EVAL_ARGS:-"--rollout vllm rollout.vllm.gpu_memory_utilization=0.4 rollout.vllm.enforce_eager=true"}
mkdir -p "$W/models" "$W/runs" "$W/eval" "$W/logs"
LOG=$OUT/$STAGE.log
SUMMARY=$OUT/${STAGE}_summary.txt
exec > >(tee -a "$LOG") 2>&1

timed() {  # timed NAME COMMAND...: run, log to $W/logs/NAME.log, record the wall time in the summary
  local name=$1 start rc
  shift
  echo "+ $*"
  start=$(date +%s)
  "$@" > "$W/logs/$name.log" 2>&1
  rc=$?
  grep -v "Loading\|it/s]\|Warning" "$W/logs/$name.log" | tail -n 8
  echo "$name: exit $rc, $(( $(date +%s) - start )) s" | tee -a "$SUMMARY"
  return $rc
}

evaluate() {  # evaluate NAME MODEL: all 1,319 GSM8K test questions, greedy, strict reward, vLLM
  timed "eval_$1" python3 -m rlkit eval "$2" --data "$W/data/test.parquet" --reward gsm8k --max-new-tokens 512 \
    --output "$W/eval/$1.jsonl" --summary "$W/eval/$1.json" $EVAL_ARGS
  python3 -c "import json, sys; s = json.load(open(sys.argv[1])); low, high = s['accuracy_ci95']
print(f\"eval {sys.argv[2]}: accuracy {s['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}) over {s['num_prompts']}, \"
      f\"reward {s['reward_mean']:.4f}, length {s['response_length_mean']:.1f}, truncated {s['truncation_rate']:.3f}, \"
      f\"{s['seconds']:.0f} s ({s['generate_seconds']:.0f} s sampling)\")" "$W/eval/$1.json" "$1" | tee -a "$SUMMARY"
}

background() {  # background NAME COMMAND...: start in its own session (it outlives this command), log to
  # $W/logs/NAME.log, exit status to $W/logs/NAME.rc; `await NAME...` waits for them
  local name=$1
  shift
  rm -f "$W/logs/$name.rc"
  echo "+ (background) $*"
  setsid nohup bash -c 'start=$(date +%s); "$@"; rc=$?; echo "$rc $(( $(date +%s) - start ))" > "'"$W/logs/$name.rc"'"' \
    _ "$@" > "$W/logs/$name.log" 2>&1 < /dev/null &
}

await() {  # await NAME...: wait for background runs, then record their exit status and wall time in the summary
  local name rc seconds
  for name in "$@"; do
    while [ ! -f "$W/logs/$name.rc" ]; do sleep 5; done
    read -r rc seconds < "$W/logs/$name.rc"
    grep -v "Loading\|it/s]\|Warning" "$W/logs/$name.log" | tail -n 8
    echo "$name: exit $rc, $seconds s" | tee -a "$SUMMARY"
  done
}

peak_memory() {  # the largest memory/peak_gb of a run's metrics.jsonl
  python3 -c "import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; \
print('peak GPU memory %.1f GB' % max(r.get('memory/peak_gb', 0) for r in m))" "$1/metrics.jsonl" \
    | sed "s/^/$(basename "$1"): /" | tee -a "$SUMMARY"
}

plot() {  # plot NAME RUN... : one PNG of one or several runs (needs matplotlib from c5)
  local name=$1
  shift
  python3 -m rlkit plot "$@" --out "$W/plots/$name.png" 2>&1 | tail -n 1
}

pack() {  # the stage's logs, metrics, evaluations and plots, small files only
  local files=(logs eval plots)
  for run in "$W"/runs/*; do
    [ -f "$run/metrics.jsonl" ] && files+=("runs/$(basename "$run")/metrics.jsonl")
  done
  tar -C "$W" -czf "$OUT/$STAGE.tar.gz" --ignore-failed-read "${files[@]}" 2>/dev/null
  ls -la "$OUT"
}

grpo() {  # grpo NAME STEPS [FLAGS...]: configs/grpo_gsm8k_smollm2.yaml from the SFT export, seed 1
  local name=$1 steps=$2
  shift 2
  timed "$name" timeout "${GRPO_TIMEOUT:-420}" python3 -m rlkit train configs/grpo_gsm8k_smollm2.yaml "$@" \
    model.path="$W/models/sft" $DATA trainer.total_steps="$steps" trainer.output_dir="$W/runs/$name" $QUIET \
    ${GRPO_OVERRIDES:-}
  peak_memory "$W/runs/$name"
}

# Two runs on one GPU: each rollout engine at 0.2 of the memory, awake, and a fixed micro-batch budget, since
# what `auto` measures as free would count the other run's memory as free too. Checkpoints every 5 steps, four
# kept, so that both runs have one of the same step at the end.
PAIR_SETTINGS="rollout.vllm.gpu_memory_utilization=0.2 rollout.sleep=false engine.max_tokens_per_micro_batch=16384
  engine.gradient_checkpointing=false trainer.save_freq=5 trainer.keep_last=4"

start_arm() {  # start_arm NAME SETTINGS: one GRPO run of the pair, in the background until the pair's deadline
  local name=$1 settings=$2
  background "$name" timeout "$(( $(cat "$W/pair_deadline") - $(date +%s) ))" python3 -m rlkit train \
    configs/grpo_gsm8k_smollm2.yaml model.path="$W/models/sft" $DATA trainer.total_steps="${GRPO_STEPS:-200}" \
    trainer.output_dir="$W/runs/$name" $QUIET $PAIR_SETTINGS ${GRPO_OVERRIDES:-} $settings
}

steps_logged() {  # steps_logged NAME: the steps a run has logged
  local n=0
  [ -f "$W/runs/$1/metrics.jsonl" ] && n=$(grep -c '"time/step"' "$W/runs/$1/metrics.jsonl")
  echo "${n:-0}"
}

case $STAGE in
  c1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$SUMMARY"
    install_wheels "$CARRY/dsw" /tmp/site_ds
    install_wheels "$CARRY/extra" /tmp/site_extra
    python3 -m rlkit data gsm8k --input datasets/gsm8k --output "$W/data"  # in the tree: not carried
    bash scripts/gpu/pieces.sh gather "$GGUF_NAME" "$CARRY" "$W/$GGUF_NAME"
    python3 -c 'import torch, transformers, pydantic, rlkit; from importlib.metadata import version; print("torch",
      torch.__version__, "transformers", transformers.__version__, "gguf", version("gguf"))' | tee -a "$SUMMARY"
    ;;
  c2)
    bash scripts/gpu/pieces.sh gather "$GGUF_NAME" "$CARRY" "$W/$GGUF_NAME"
    [ -f "$W/$GGUF_NAME" ] || { echo "the GGUF is not complete: run c1 first, back to back"; exit 3; }
    timed import python3 -m rlkit model import "$W/$GGUF_NAME" "$W/models/base" || exit 1
    python3 -m rlkit generate "$W/models/base" --prompt "What is 2+3?" --max-new-tokens 32 2>&1 | tail -n 2 \
      | tee -a "$SUMMARY"
    timed sft python3 -m rlkit sft configs/sft_gsm8k_smollm2.yaml model.path="$W/models/base" $DATA \
      trainer.output_dir="$W/runs/sft" $QUIET ${SFT_OVERRIDES:-}
    peak_memory "$W/runs/sft"
    timed export_sft python3 -m rlkit export "$W/runs/sft" "$W/models/sft"
    ;;
  c3)
    mkdir -p /tmp/parts_vllm && cp "$CARRY"/vllm.tar.xz.00 /tmp/parts_vllm/  # c4's device_install.sh joins it
    [ -n "${SKIP_LORA:-}" ] && { echo "SKIP_LORA: only the vLLM piece stored"; pack; exit 0; }
    timed sft_lora python3 -m rlkit sft configs/sft_gsm8k_smollm2_lora.yaml model.path="$W/models/base" $DATA \
      trainer.output_dir="$W/runs/sft_lora" $QUIET ${SFT_OVERRIDES:-}
    peak_memory "$W/runs/sft_lora"
    timed export_lora python3 -m rlkit export --merge-lora "$W/runs/sft_lora" "$W/models/sft_lora"
    ;;
  c4)
    bash scripts/gpu/device_install.sh vllm "$CARRY" | tail -n 1
    [ -f /tmp/site_vllm/.installed ] || { echo "vLLM is not installed: run c3 first, back to back"; exit 3; }
    # One after the other: run side by side (2026-12-02), vLLM's start-up profiling counted the other engines'
    # memory as its own and one of three found no room for its KV cache; and a bare `wait` here also waits for
    # the log's tee, which never ends.
    [ -n "${SKIP_BASE:-}" ] || evaluate base "$W/models/base"
    evaluate sft "$W/models/sft"
    [ -d "$W/models/sft_lora" ] && evaluate sft_lora "$W/models/sft_lora"
    if [ -n "${PASS_K:-}" ]; then  # the SFT model's headroom: pass@k at temperature 1 (docs/results.md)
      timed eval_sft_pass python3 -m rlkit eval "$W/models/sft" --data "$W/data/test.parquet" --reward gsm8k \
        --n "$PASS_K" --temperature 1.0 --max-new-tokens 512 --output "$W/eval/sft_pass.jsonl" \
        --summary "$W/eval/sft_pass.json" $EVAL_ARGS
      python3 -c "import json, sys; s = json.load(open(sys.argv[1]))
print('eval sft_pass: accuracy a sample %.4f, pass@k %s' % (s['accuracy'], s['pass_at_k']))" "$W/eval/sft_pass.json" \
        | tee -a "$SUMMARY"
    fi
    if [ -n "${BENCH:-}" ]; then  # issue 17's workload with every option auto, and vLLM alone beside it
      timed bench python3 -m rlkit bench --model "$W/models/base" --data "$W/data/train.parquet" --prompts 32 --n 8 \
        --response-len 256 --steps 5 --warmup 1 --engine fsdp2 --rollout vllm --out "$W/bench/auto"
      grep "speed: " "$W"/bench/auto/runs/*/bench.log | cut -c1-220 | tee -a "$SUMMARY"
      cp "$W/bench/auto/bench.json" "$OUT/bench_auto.json" 2>/dev/null
    fi
    ;;
  c5)
    install_wheels "$CARRY" /tmp/site_extra
    grpo grpo "${GRPO_STEPS:-60}"
    evaluate grpo "$W/runs/grpo"  # its newest complete checkpoint, even if the timeout cut the run short
    plot sft "$W/runs/sft"
    [ -d "$W/runs/sft_lora" ] && plot sft_lora_vs_full "$W/runs/sft" "$W/runs/sft_lora"
    plot grpo "$W/runs/grpo"
    ;;
  c6)
    mkdir -p /tmp/parts_sglang && cp "$CARRY"/sglang.tar.xz.00 /tmp/parts_sglang/  # c7's device_install.sh joins it
    # runs on into c7, beside the SGLang run (each rollout engine at 0.3 of the GPU): curves, not timings
    background grpo_deepspeed timeout "${GRPO_TIMEOUT:-420}" python3 -m rlkit train configs/grpo_gsm8k_smollm2.yaml \
      --engine deepspeed model.path="$W/models/sft" $DATA trainer.total_steps="${COMPARE_STEPS:-20}" \
      trainer.output_dir="$W/runs/grpo_deepspeed" rollout.vllm.gpu_memory_utilization=0.3 $QUIET ${GRPO_OVERRIDES:-}
    sleep 20  # the run's start, in this command's log
    tail -n 5 "$W/logs/grpo_deepspeed.log"
    ;;
  c7)
    bash scripts/gpu/device_install.sh sglang "$CARRY" | tail -n 1
    [ -f /tmp/site_sglang/.installed ] || { echo "SGLang is not installed: run c6 first, back to back"; exit 3; }
    # the SGLang bundle's own packages (transformers 5.12.1, its pydantic) come first, not the vLLM bundle's
    export PYTHONPATH="/tmp/site_sglang:$PWD:/tmp/site_extra:/tmp/site_ds"
    background grpo_sglang timeout "${GRPO_TIMEOUT:-420}" python3 -m rlkit train configs/grpo_gsm8k_smollm2.yaml \
      --rollout sglang model.path="$W/models/sft" $DATA trainer.total_steps="${COMPARE_STEPS:-20}" \
      trainer.output_dir="$W/runs/grpo_sglang" rollout.sglang.mem_fraction_static=0.3 $QUIET ${GRPO_OVERRIDES:-}
    await grpo_deepspeed grpo_sglang
    peak_memory "$W/runs/grpo_deepspeed"
    peak_memory "$W/runs/grpo_sglang"
    runs=("$W/runs/grpo" "$W/runs/grpo_sglang")
    [ -d "$W/runs/grpo_deepspeed" ] && runs+=("$W/runs/grpo_deepspeed")
    plot grpo_engines "${runs[@]}"
    ;;
  pair)
    install_wheels "$CARRY" /tmp/site_extra
    [ -d "$W/models/sft" ] || { echo "no SFT model: run c1-c4 first, back to back"; exit 3; }
    start=$(date +%s)
    echo $(( start + ${PAIR_SECONDS:?set PAIR_SECONDS, the wall seconds both runs may take} )) > "$W/pair_deadline"
    echo "arm grpo_a: ${ARM_A:-}" | tee -a "$SUMMARY"
    echo "arm grpo_b: ${ARM_B:-}" | tee -a "$SUMMARY"
    start_arm grpo_a "${ARM_A:-}"
    # The second run's vLLM sizes its cache from the memory it sees grow while it starts: start it once the
    # first run's memory has settled (its second step logged), not while that run is still allocating.
    until [ "$(steps_logged grpo_a)" -ge 2 ] || [ -f "$W/logs/grpo_a.rc" ] || [ $(( $(date +%s) - start )) -gt 240 ]; do
      sleep 5
    done
    echo "grpo_b starts $(( $(date +%s) - start )) s after grpo_a" | tee -a "$SUMMARY"
    start_arm grpo_b "${ARM_B:-}"
    until [ $(( $(date +%s) - start )) -ge "${PAIR_WAIT:-540}" ]; do
      sleep 30
      echo "$(( $(date +%s) - start )) s: grpo_a $(steps_logged grpo_a) steps, grpo_b $(steps_logged grpo_b) steps"
      [ -f "$W/logs/grpo_a.rc" ] && [ -f "$W/logs/grpo_b.rc" ] && break
    done
    tail -n 3 "$W/logs/grpo_a.log" "$W/logs/grpo_b.log"
    ;;
  pair_end)
    await grpo_a grpo_b
    peak_memory "$W/runs/grpo_a"
    peak_memory "$W/runs/grpo_b"
    common=$(comm -12 <(ls "$W"/runs/grpo_a/checkpoints/*/manifest.json 2>/dev/null | xargs -n1 dirname | xargs -n1 basename | sort) \
                      <(ls "$W"/runs/grpo_b/checkpoints/*/manifest.json 2>/dev/null | xargs -n1 dirname | xargs -n1 basename | sort) | tail -n 1)
    [ -n "$common" ] || { echo "the two runs share no complete checkpoint"; pack; exit 1; }
    echo "evaluated at the newest common checkpoint: $common" | tee -a "$SUMMARY"
    evaluate grpo_a "$W/runs/grpo_a/checkpoints/$common"
    evaluate grpo_b "$W/runs/grpo_b/checkpoints/$common"
    plot grpo_pair "$W/runs/grpo_a" "$W/runs/grpo_b"
    ;;
  test)
    export RLKIT_SMOLLM2_GGUF="$W/$GGUF_NAME" RLKIT_SMOLLM2_SFT="$W/models/sft" RLKIT_GSM8K="$W/data"
    timed gpu_test python3 -m pytest tests/gpu/test_smollm2_gpu.py -m gpu -q -s -p no:cacheprovider
    grep "smollm2-gpu\|passed\|failed" "$W/logs/gpu_test.log" | tee -a "$SUMMARY"
    ;;
  *) echo "unknown stage $STAGE"; exit 2 ;;
esac
pack
