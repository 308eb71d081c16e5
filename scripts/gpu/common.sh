# Sourced by the record scripts on the GPU machine: paths and environment for rlkit with carried wheels.
# /tmp survives between commands only while the machine stays warm (30 s after each command).
export PYTHONPATH="$PWD:/tmp/site_extra:/tmp/site_ds:/tmp/site_vllm${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"

install_wheels() {  # install_wheels DIR TARGET [skip-regex]: pure unpack of carried wheels, no deps resolved
  local dir=$1 target=$2 skip=${3:-'^$'}
  [ -d "$dir" ] || return 0
  local wheels=$(ls "$dir"/*.whl | grep -Ev "$skip")
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" $wheels \
    && echo "installed $(echo "$wheels" | wc -w) wheels into $target"
}
