#!/usr/bin/env bash
# tools_record.sh MODEL_DIR GSM8K_DIR [ROLLOUT] -- issue 20's record, ON the GPU machine (one H200), from the
# repository root: the tool-call rate and the accuracy on GSM8K of MODEL_DIR (a Hugging Face folder, e.g.
# SmolLM2-135M-Instruct from `rlkit model import FILE.gguf OUT`) before and after a short GRPO run with the
# calculator tool (configs/grpo_gsm8k_tools.yaml: up to 4 turns, only the model's tokens trained).
#
#   MODEL_DIR   a Hugging Face folder with a chat template (SmolLM2's has no tool support: the fallback format)
#   GSM8K_DIR   `rlkit data gsm8k` output with train.parquet and test.parquet
#   ROLLOUT     vllm (default; install the vLLM bundle first, as record_stage1.sh/record_stage2.sh do), sglang or hf
# Environment: STEPS (30 training steps), PROMPTS (32 prompts x 8 samples a step), VAL (200 test prompts, greedy),
# LR (2e-6), REWARD (gsm8k; any reward name, e.g. a file.py:function that also reads `trajectory`).
# About 6-9 minutes with vLLM: two validations of VAL conversations and STEPS steps of PROMPTS x 8 conversations.
#
# Writes to $OUT: tools_record.log, metrics.jsonl, tools_summary.md (the table for docs/results.md).
# Look for: val/env/tool_call_rate and val/accuracy at step 0 against the last step (tools_summary.md's first
# table); env/tool_error_rate (malformed calls); env/turns/mean; time/step and time/generate.
set -uo pipefail
MODEL=${1:?usage: scripts/gpu/tools_record.sh MODEL_DIR GSM8K_DIR [vllm|sglang|hf]}
DATA=${2:?usage: scripts/gpu/tools_record.sh MODEL_DIR GSM8K_DIR [vllm|sglang|hf]}
ROLLOUT=${3:-vllm}
STEPS=${STEPS:-30} PROMPTS=${PROMPTS:-32} VAL=${VAL:-200} LR=${LR:-2e-6} REWARD=${REWARD:-gsm8k}
source scripts/gpu/common.sh
[ -f "$MODEL/config.json" ] || { echo "no Hugging Face model at $MODEL"; exit 3; }
for split in train test; do
  [ -f "$DATA/$split.parquet" ] || { echo "missing $DATA/$split.parquet: rlkit data gsm8k --input ... --output $DATA"; exit 3; }
done
RUN=/tmp/tools_record
rm -rf "$RUN"

set -x
python3 -m rlkit train configs/grpo_gsm8k_tools.yaml --rollout "$ROLLOUT" \
  "model.path=$MODEL" "data.train_files=[$DATA/train.parquet]" "data.val_files=[$DATA/test.parquet]" \
  "data.max_val_samples=$VAL" "data.train_batch_size=$PROMPTS" "algorithm.mini_batch_size=$PROMPTS" \
  "algorithm.micro_batch_size_per_device=32" "optim.lr=$LR" "reward.name=$REWARD" \
  "trainer.total_steps=$STEPS" "trainer.test_freq=$STEPS" "trainer.save_freq=0" "trainer.save_at_end=false" \
  "trainer.output_dir=$RUN" "trainer.progress_bar=false" "trainer.loggers=[console,jsonl]" \
  2>&1 | grep --line-buffered -v "Loading\|it/s]" | tee "$OUT/tools_record.log"
set +x
cp "$RUN/metrics.jsonl" "$OUT/metrics.jsonl" || exit 4

python3 - "$RUN/metrics.jsonl" "$MODEL" "$ROLLOUT" <<'PY' | tee "$OUT/tools_summary.md"
import json
import statistics
import sys

path, model, rollout = sys.argv[1:4]
records = [json.loads(line) for line in open(path)]
validations = [r for r in records if "val/accuracy" in r]
before, after = validations[0], validations[-1]
keys = [("val/accuracy", "accuracy (GSM8K test, greedy)"), ("val/env/tool_call_rate", "conversations with a tool call"),
        ("val/env/tool_calls/mean", "tool calls per conversation"), ("val/env/tool_error_rate", "tool calls that failed"),
        ("val/env/turns/mean", "model turns per conversation"), ("val/response_length/mean", "model tokens per conversation")]
print(f"{model} ({rollout} rollout), validation before (step {before['step']}) and after (step {after['step']}):\n")
print("| | before | after |\n|---|---|---|")
for key, label in keys:
    print(f"| {label} | {before.get(key, float('nan')):.3f} | {after.get(key, float('nan')):.3f} |")
steps = [r for r in records if r["step"] > 0 and "reward/mean" in r]
head, tail = steps[:5], steps[-5:]
print("\nTraining, mean of the first and the last five steps:\n")
print("| | first 5 | last 5 |\n|---|---|---|")
for key in ("reward/mean", "env/tool_call_rate", "env/tool_calls/mean", "env/tool_error_rate", "env/turns/mean",
            "response_length/mean", "response_length/clip_ratio"):
    mean = lambda rows: statistics.fmean(r[key] for r in rows if key in r) if rows else float("nan")  # noqa: E731
    print(f"| {key} | {mean(head):.3f} | {mean(tail):.3f} |")
times = sorted(r["time/step"] for r in steps if "time/step" in r)
generate = sorted(r["time/generate"] for r in steps if "time/generate" in r)
if times:
    print(f"\nmedian time/step {times[len(times) // 2]:.2f} s, time/generate {generate[len(generate) // 2]:.2f} s "
          f"over {len(steps)} steps")
PY
