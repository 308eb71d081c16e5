#!/usr/bin/env bash
# GPU record, command 1 of 3: carry .gpu/vllm_p0, .gpu/dsw, .gpu/extra_small. Starts the machine, stores the
# first vLLM piece, installs DeepSpeed and the small pure-Python extras (rich).
set -uo pipefail
source scripts/gpu/common.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/machine.txt"
bash scripts/gpu/device_install.sh vllm .gpu/vllm_p0 | tail -1
# The vllm bundle brings pydantic; keep one copy of it.
install_wheels .gpu/dsw /tmp/site_ds '(pydantic|typing_|annotated_types)'
install_wheels .gpu/extra_small /tmp/site_extra
