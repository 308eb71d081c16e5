#!/usr/bin/env bash
# scripts/gpu/pieces.sh -- move a file bigger than one command may carry (64 MiB with the tree) to the GPU machine.
#
#   HERE:  scripts/gpu/pieces.sh split FILE OUTDIR [PIECE]     (PIECE default 45M, as `split -b` reads it)
#          writes OUTDIR/NAME.00, NAME.01, ... and OUTDIR/NAME.sha256 (the whole file's checksum); spread the
#          pieces over carried folders, the .sha256 with the last one.
#   THERE: scripts/gpu/pieces.sh gather NAME PIECEDIR DEST
#          copies PIECEDIR's pieces of NAME to /tmp/parts_NAME (which lives as long as the machine stays warm,
#          so send the pieces in back-to-back commands); once the checksum has come and the pieces joined
#          match it, writes DEST and prints ASSEMBLED, else prints WAITING and what it holds. Exit code 0 both
#          ways; test for DEST.
set -euo pipefail
usage() { sed -n '2,12p' "$0"; exit 2; }

split_file() {
  local file=$1 outdir=$2 piece=${3:-45M} name
  name=$(basename "$file")
  mkdir -p "$outdir"
  split -b "$piece" -d "$file" "$outdir/$name."
  (cd "$(dirname "$file")" && sha256sum "$name") > "$outdir/$name.sha256"
  ls -la "$outdir"/"$name".*
}

gather() {
  local name=$1 piecedir=$2 dest=$3 parts=/tmp/parts_$1 want have
  if [ -f "$dest" ]; then echo "ASSEMBLED (already) $dest"; return 0; fi
  mkdir -p "$parts"
  cp "$piecedir"/"$name".[0-9][0-9] "$parts"/ 2>/dev/null || true
  cp "$piecedir/$name.sha256" "$parts"/ 2>/dev/null || true
  if [ ! -f "$parts/$name.sha256" ]; then
    echo "WAITING for $name.sha256 (it comes with the last piece); have: $(cd "$parts" && ls | tr '\n' ' ')"
    return 0
  fi
  want=$(awk '{print $1}' "$parts/$name.sha256")
  have=$(cat "$parts"/"$name".[0-9][0-9] | sha256sum | awk '{print $1}')
  if [ "$want" != "$have" ]; then
    echo "WAITING: the pieces of $name do not match its checksum yet (a piece is missing, or the machine was fresh);" \
         "have: $(cd "$parts" && ls | tr '\n' ' ')"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  cat "$parts"/"$name".[0-9][0-9] > "$dest.part" && mv "$dest.part" "$dest"
  echo "ASSEMBLED $dest ($(du -h "$dest" | cut -f1), sha256 $have)"
}

case ${1:-} in
  split) [ $# -ge 3 ] || usage; split_file "$2" "$3" "${4:-45M}" ;;
  gather) [ $# -eq 4 ] || usage; gather "$2" "$3" "$4" ;;
  *) usage ;;
esac
