#!/usr/bin/env bash
# scripts/gpu/device_install.sh NAME PIECEDIR [SITE] -- runs ON THE GPU machine, inside a command sent there
# (the script travels with the repository tree; PIECEDIR is a carried folder of prepare_gpu_wheels.sh pieces).
# Copies PIECEDIR/NAME.tar.xz.* (and SHA256SUMS if present) to /tmp/parts_NAME, a place that survives between
# calls while the machine stays warm (30 s after each call). When the concatenated pieces match SHA256SUMS
# it unpacks them into SITE (default /tmp/site_NAME) and prints INSTALLED; otherwise prints WAITING.
# Then: export PYTHONPATH=SITE  (vLLM also needs VLLM_USE_FLASHINFER_SAMPLER=0, see docs/gpu_machine.md).
set -uo pipefail
NAME=$1; PIECEDIR=$2; SITE=${3:-/tmp/site_$NAME}; P=/tmp/parts_$NAME
if [ -f "$SITE/.installed" ]; then echo "INSTALLED (already) $SITE"; exit 0; fi
mkdir -p "$P"
cp "$PIECEDIR"/"$NAME".tar.xz.* "$P"/ 2>/dev/null
[ -f "$PIECEDIR/SHA256SUMS" ] && cp "$PIECEDIR/SHA256SUMS" "$P"/
ls -la "$P"
[ -f "$P/SHA256SUMS" ] || { echo "WAITING (no SHA256SUMS yet; carry it with the last piece)"; exit 0; }
want=$(awk '{print $1}' "$P/SHA256SUMS"); have=$(cat "$P"/"$NAME".tar.xz.* | sha256sum | awk '{print $1}')
[ "$want" = "$have" ] || { echo "WAITING (sha mismatch: pieces missing or machine was fresh)"; exit 0; }
mkdir -p "$SITE"; s=$(date +%s)
cat "$P"/"$NAME".tar.xz.* | xz -dc -T4 | tar -x -C "$SITE" && touch "$SITE/.installed" \
  && echo "INSTALLED $SITE in $(( $(date +%s)-s ))s ($(du -sh "$SITE" | cut -f1))"
