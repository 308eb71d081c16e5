#!/usr/bin/env bash
# GPU record, command 3 of 3: carry .gpu/extra_plot (matplotlib wheels and gsm8k/ from `rlkit data gsm8k`). The
# same GRPO workload on DeepSpeed ZeRO-3 x vLLM, then LoRA SFT of the 0.5B shape on GSM8K (activation
# checkpointing, bf16). The bench model's tokenizer is rlkit's tiny byte-level BPE, so GSM8K samples are
# longer in tokens than with Qwen's own tokenizer.
set -uo pipefail
source scripts/gpu/common.sh
install_wheels .gpu/extra_plot /tmp/site_extra
[ -f /tmp/site_vllm/.installed ] || { echo "vLLM bundle missing: run stages 1 and 2 first, back to back"; exit 3; }
BENCH="--shape 0.5b --prompts 32 --n 8 --prompt-len 128 --response-len 256 --steps 3 --warmup 1 --out /tmp/bench05_ds"
mkdir -p /tmp/bench05_ds && cp -r /tmp/bench05/cache /tmp/bench05_ds/ 2>/dev/null
echo "+ rlkit bench $BENCH --engine deepspeed --rollout vllm engine.deepspeed.zero_stage=3" | tee "$OUT/bench_deepspeed.log"
python3 -m rlkit bench $BENCH --engine deepspeed --rollout vllm engine.deepspeed.zero_stage=3 2>&1 | tee -a "$OUT/bench_deepspeed.log"
cp /tmp/bench05_ds/bench.json "$OUT/bench_deepspeed.json"; cp /tmp/bench05_ds/bench.png "$OUT/bench_deepspeed.png" 2>/dev/null
for run in /tmp/bench05_ds/runs/*; do tail -n 30 "$run/bench.log" > "$OUT/log_$(basename "$run").txt"; done
SFT="model.path=/tmp/bench05/cache/qwen2.5-0.5b-random-v1 model.lora.rank=16 engine.gradient_checkpointing=true
     trainer.output_dir=/tmp/sft05 trainer.total_steps=20 trainer.loggers=[jsonl,console] trainer.progress_bar=false"
DATA="data.train_files=[.gpu/extra_plot/gsm8k/train.parquet] data.val_files=[] data.truncation=right"
echo "+ rlkit sft configs/sft_gsm8k_lora.yaml $DATA $SFT" | tee "$OUT/sft_lora.log"
python3 -m rlkit sft configs/sft_gsm8k_lora.yaml $DATA $SFT 2>&1 \
  | tail -n 25 | tee -a "$OUT/sft_lora.log"
cp /tmp/sft05/metrics.jsonl "$OUT/sft_lora_metrics.jsonl" 2>/dev/null
