#!/usr/bin/env bash
# GPU command 1 of a session: carry .gpu/vllm_p0, .gpu/dsw, .gpu/extra_small. Stores the first vLLM piece and
# installs DeepSpeed and rich (record_stage1.sh), runs the packing GPU test, then times the FSDP2 engine's
# passes (benchmarks/engine_passes.py) on responses of random lengths (--ragged) with and without packing.
set -uo pipefail
bash scripts/gpu/record_stage1.sh
source scripts/gpu/common.sh
# pydantic for this command only: the vLLM bundle, installed by the next command, brings its own
install_wheels .gpu/dsw /tmp/site_pyd '(deepspeed|hjson)'
export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
timeout 120 python3 -m pytest tests/gpu/test_packing_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/packing_gpu.log" | tail -5
PASSES="python3 benchmarks/engine_passes.py --seqs 256 --prompt-len 128 --response-len 256 --ragged --repeats 2"
# budgets: the padded size of the fixed micro-batch each row compares with (16 or 32 rows x 384 tokens)
$PASSES --shape 0.5b --out /tmp/ragged05 --setting base: --setting remove_padding:remove_padding=true \
  --setting packed:pack_sequences=true,max_tokens_per_micro_batch=6144 \
  --setting compile_mb64:torch_compile=true,micro_batch_size=64 \
  --setting compile_packed:torch_compile=true,pack_sequences=true,max_tokens_per_micro_batch=24576 \
  2>&1 | grep -v Loading | tee "$OUT/ragged05.log"
$PASSES --shape 1.5b --out /tmp/ragged15 --setting base:micro_batch_size=32 \
  --setting packed:pack_sequences=true,max_tokens_per_micro_batch=12288 \
  --setting compile:torch_compile=true,micro_batch_size=32 \
  --setting compile_packed:torch_compile=true,pack_sequences=true,max_tokens_per_micro_batch=12288 \
  2>&1 | grep -v Loading | tee "$OUT/ragged15.log"
