#!/usr/bin/env bash
# scripts/gpu/prepare_gpu_wheels.sh [OUTDIR] [vllm|sglang|deepspeed|all] -- runs HERE (a machine with pip and
# network), from the repository root: builds the offline bundles of the GPU packages that the GPU test machine
# lacks (it has Python 3.12.3, torch 2.11.0+cu130, triton 3.6.0, transformers 5.17.0 and no network; see
# docs/gpu_machine.md). Carry the pieces there and unpack them with scripts/gpu/device_install.sh.
#
#   OUTDIR: default .gpu (git-ignored, so it travels only where a command carries it); the bundle: default all.
#   env:   PIECE=45M   size of each piece (split -b). A command sent to the GPU machine carries at most 64 MiB
#                      INCLUDING the repository tree, so PIECE + tree + other carried paths must stay below 64 MiB.
#          TORCH_PY=/path/to/python   a python that has torch+setuptools+wheel, only needed to build the
#                      DeepSpeed wheel (DS_BUILD_OPS=0 gives a pure-python wheel; torch version does not matter).
#
# Output (per bundle):  OUTDIR/<name>/<name>.tar.xz.NN pieces, SHA256SUMS, wheels.txt (exact wheel list).
#   vllm bundle   : vllm 0.26.0 (trimmed) + 62 small deps, ~92 MiB xz  -> 2-3 pieces, unpacks to ~411 MiB
#   sglang bundle : sglang 0.5.17 + sglang-kernel 0.4.5 (trimmed) + flashinfer 0.6.15.post1 + 31 deps, ~85 MiB xz
#   deepspeed     : OUTDIR/dsw/*.whl (deepspeed 0.19.8 built locally + hjson + pydantic stack), ~5 MiB, no split
set -euo pipefail
OUTDIR=$(realpath -m "${1:-.gpu}")
WHAT=${2:-all}
PIECE=${PIECE:-45M}
WORK=$(mktemp -d /tmp/gpuwheels.XXXXXX)
mkdir -p "$OUTDIR"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp)
for n in 5 12 17 24 26 27 28 31 34 35; do PLAT+=(--platform "manylinux_2_${n}_x86_64"); done
PLAT+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
PIP="python3 -m pip"

dl() {  # dl DIR spec...
  local d=$1; shift
  $PIP download -q --no-deps "${PLAT[@]}" -d "$d" "$@"
}
pack() {  # pack NAME STAGEDIR
  local name=$1 stage=$2 od="$OUTDIR/$1"
  rm -rf "$od"; mkdir -p "$od"
  find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
  rm -rf "$stage/bin"
  tar -C "$stage" -cf - . | xz -6 -T0 > "$WORK/$name.tar.xz"
  (cd "$od" && split -b "$PIECE" -d "$WORK/$name.tar.xz" "$name.tar.xz." && sha256sum "$WORK/$name.tar.xz" | sed "s#$WORK/##" > SHA256SUMS)
  ls -la "$od"
}

# ----------------------------------------------------------------------------------------------- vLLM
VLLM_PINS="vllm==0.26.0 annotated_types==0.8.0 apache_tvm_ffi==0.1.10 astor==0.8.1 blake3==1.0.11 cachetools==8.0.0
cbor2==6.2.1 compressed_tensors==0.17.0 depyf==0.20.0 dill==0.4.1 dnspython==2.9.2 docstring_parser==0.18.0
email_validator==2.4.0 fastapi==0.136.3 httpcore2==2.16.2 httptools==0.9.0 httpx2==2.16.2 ijson==3.6.0
interegular==0.3.3 jiter==0.19.0 jmespath==1.1.0 jsonschema==4.26.0 jsonschema_specifications==2025.9.1 lark==1.2.2
llguidance==1.7.6 lm_format_enforcer==0.11.3 loguru==0.7.3 mistral_common==1.13.1
model_hosting_container_standards==0.1.16 msgspec==0.22.0 nvtx==0.2.15 openai==3.52.0 openai_harmony==0.0.8
opentelemetry_api==1.45.2 opentelemetry_sdk==1.45.2 opentelemetry_semantic_conventions==0.66b2
opentelemetry_semantic_conventions_ai==0.5.1 outlines_core==0.2.14 partial_json_parser==0.2.1.1.post7
prometheus_fastapi_instrumentator==8.1.0 pybase64==1.5.1 pycountry==26.2.16 pydantic==2.14.3 pydantic_core==2.50.4
pydantic_extra_types==2.11.1 pydantic_settings==2.16.3 python_dotenv==1.2.4 python_json_logger==4.2.0
python_multipart==0.0.34 pyzmq==27.3.0 referencing==0.37.0 rich_toolkit==0.20.6 rpds_py==2026.9.1 setproctitle==1.3.8
sniffio==1.3.1 sse_starlette==3.7.0 starlette==1.10.0 typing_extensions==4.16.0 typing_inspection==0.4.5
uvicorn==0.54.0 watchfiles==1.3.0 websockets==17.4 xgrammar==0.2.7"
build_vllm() {
  local w="$WORK/vllm_whl" s="$WORK/vllm_site"; mkdir -p "$w" "$s"
  # shellcheck disable=SC2086
  dl "$w" $VLLM_PINS
  ls -la "$w" | awk 'NR>1{print $5, $9}' > "$WORK/vllm_wheels.txt"
  $PIP install -q --no-deps --no-compile "${PLAT[@]}" --target "$s" "$w"/*.whl
  # trim: FA2 kernels (Hopper uses FA3), MoE kernels (import is optional), Rust API-server binary, sm100/DeepGEMM headers
  rm -f "$s/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" "$s/vllm/_moe_C_stable_libtorch.abi3.so" "$s/vllm/vllm-rs"
  rm -rf "$s/vllm/third_party/deep_gemm" "$s/vllm/third_party/fmha_sm100"
  pack vllm "$s"; cp "$WORK/vllm_wheels.txt" "$OUTDIR/vllm/wheels.txt"
}

# --------------------------------------------------------------------------------------------- SGLang
SGL_PINS="sglang==0.5.17 flashinfer_python==0.6.15.post1 xgrammar==0.2.1 apache_tvm_ffi==0.1.11 transformers==5.12.1
tokenizers==0.22.2 openai==2.6.1 fastapi==0.165.0 starlette==1.10.0 opentelemetry_api==1.45.2 uvicorn==0.54.0
ipython==9.18.1 traitlets==5.16.1 compressed_tensors==0.20.0 gguf==0.19.0 loguru==0.7.3 dill==0.4.1 orjson==3.13.0
msgspec==0.22.0 pyzmq==27.3.0 partial_json_parser==0.2.1.1.post7 setproctitle==1.3.8 distro==1.9.0 sniffio==1.3.1
pybase64==1.5.1 pydantic==2.14.3 pydantic_core==2.50.4 annotated_types==0.8.0 typing_inspection==0.4.5
typing_extensions==4.16.0 torch_memory_saver==0.0.10 python_multipart==0.0.34 jiter==0.19.0"
build_sglang() {
  local w="$WORK/sgl_whl" s="$WORK/sgl_site"; mkdir -p "$w" "$s" "$WORK/sgk"
  # shellcheck disable=SC2086
  dl "$w" $SGL_PINS
  dl "$WORK/sgk" sglang-kernel==0.4.5          # 383 MB wheel; 342 MB of it is flash_ops (FA3), dropped below
  ls -la "$w" "$WORK/sgk" | awk 'NF>8{print $5, $9}' > "$WORK/sgl_wheels.txt"
  $PIP install -q --no-deps --no-compile "${PLAT[@]}" --target "$s" "$w"/*.whl
  # sglang-kernel without flash_ops (=> use attention_backend="triton") and without the sm100 build
  (cd "$s" && unzip -q "$WORK"/sgk/sglang_kernel-*.whl -x 'sgl_kernel/flash_ops.abi3.so' 'sgl_kernel/sm100/*')
  pack sglang "$s"; cp "$WORK/sgl_wheels.txt" "$OUTDIR/sglang/wheels.txt"
}

# ------------------------------------------------------------------------------------------ DeepSpeed
build_deepspeed() {
  local d="$OUTDIR/dsw" py=${TORCH_PY:-}
  rm -rf "$d"; mkdir -p "$d" "$WORK/ds"
  $PIP download -q --no-deps --no-binary=:all: -d "$WORK/ds" deepspeed==0.19.8
  if [ -z "$py" ]; then   # throwaway venv with a CPU torch (any version works for a DS_BUILD_OPS=0 build).
    # Pin a CPU build: a bare `pip install torch` pulls the CUDA build + GBs of nvidia-* wheels.
    # Here torch==2.13.0 resolves to a local CPU wheel where one is on disk; elsewhere use TORCH_CPU_SPEC, e.g.
    # TORCH_CPU_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
    python3 -m venv "$WORK/dsvenv" && py="$WORK/dsvenv/bin/python"
    # shellcheck disable=SC2086
    "$py" -m pip install -q --no-deps ${TORCH_CPU_SPEC:-torch==2.13.0} && "$py" -m pip install -q setuptools wheel \
      filelock typing_extensions sympy networkx jinja2 fsspec numpy packaging psutil py-cpuinfo pydantic hjson msgpack ninja tqdm einops
  fi
  DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$d" "$WORK"/ds/deepspeed-0.19.8.tar.gz
  dl "$d" hjson==3.1.0 pydantic==2.14.3 pydantic_core==2.50.4 annotated_types==0.8.0 typing_inspection==0.4.5 typing_extensions==4.16.0
  (cd "$d" && sha256sum ./*.whl > SHA256SUMS); ls -la "$d"
}

case $WHAT in
  vllm) build_vllm ;; sglang) build_sglang ;; deepspeed) build_deepspeed ;;
  all) build_vllm; build_sglang; build_deepspeed ;;
  *) echo "unknown target $WHAT"; exit 2 ;;
esac
rm -rf "$WORK"
echo "done -> $OUTDIR"
