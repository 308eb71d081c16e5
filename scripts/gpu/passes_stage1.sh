#!/usr/bin/env bash
# GPU command 1 of a session: carry .gpu/vllm_p0, .gpu/dsw, .gpu/extra_small. Stores the first vLLM piece and
# installs DeepSpeed and rich (record_stage1.sh), then times the FSDP2 engine's passes alone
# (benchmarks/engine_passes.py) on the 1.5B and 0.5B shapes under the engine settings given as arguments
# (default: the sets recorded in docs/benchmarks.md).
set -uo pipefail
bash scripts/gpu/record_stage1.sh
source scripts/gpu/common.sh
# pydantic for this command only: the vLLM bundle, installed by the next command, brings its own
install_wheels .gpu/dsw /tmp/site_pyd '(deepspeed|hjson)'
export PYTHONPATH="$PYTHONPATH:/tmp/site_pyd"
PASSES="python3 benchmarks/engine_passes.py --seqs 256 --prompt-len 128 --response-len 256"
$PASSES --shape 1.5b --repeats 2 --out /tmp/passes15 --profile compile_mb32 --setting base: \
  --setting entropy_grad:entropy_grad=true --setting mb32:micro_batch_size=32 \
  --setting compile:torch_compile=true --setting compile_mb32:torch_compile=true,micro_batch_size=32 \
  2>&1 | grep -v Loading | tee "$OUT/passes15.log"
cp /tmp/passes15/profile_compile_mb32.txt "$OUT/profile15_compile_mb32.txt"
$PASSES --shape 0.5b --repeats 2 --out /tmp/passes05 --profile compile_mb64 --setting base: \
  --setting entropy_grad:entropy_grad=true --setting mb64:micro_batch_size=64 \
  --setting compile:torch_compile=true --setting compile_mb64:torch_compile=true,micro_batch_size=64 \
  2>&1 | grep -v Loading | tee "$OUT/passes05.log"
cp /tmp/passes05/profile_compile_mb64.txt "$OUT/profile05_compile_mb64.txt"
