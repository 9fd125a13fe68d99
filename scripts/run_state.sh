#!/usr/bin/env bash
# Hand training runs from one session to the next without losing latent weights or Adam moments.
#
#   scripts/run_state.sh save [RUN ...]     # runs/<RUN>/ -> training/state/<RUN>/ (tracked in git)
#   scripts/run_state.sh restore [RUN ...]  # training/state/<RUN>/ -> runs/<RUN>/, then `--resume` continues
#
# Without RUN names, every run under runs/ (save) or training/state/ (restore) that has a state.safetensors.
# Kept per run: state.safetensors (latents, Adam moments, step, RNG, history: the exact resume point),
# source.safetensors (what the stage started from; train_continue.sh copies it once), train.log and, for a
# finished run, summary.json. The packed final/best checkpoints are re-made by `bsr train --resume` on a
# finished run, so they are not kept. A restore never overwrites a newer state (higher step) in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}; shift || true
step_of() { python -c "import json,sys; from safetensors import safe_open
f=safe_open(sys.argv[1],'pt'); print(json.loads(f.metadata()['bsr_train_state'])['step'])" "$1"; }
case "$mode" in
  save)
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=($(ls runs 2>/dev/null))
    for run in "${names[@]}"; do
      src=runs/$run; [ -f "$src/state.safetensors" ] || continue
      dst=training/state/$run; mkdir -p "$dst"
      for f in state.safetensors source.safetensors train.log summary.json; do
        [ -f "$src/$f" ] && cp "$src/$f" "$dst/$f.tmp" && mv "$dst/$f.tmp" "$dst/$f"
      done
      echo "saved $run at step $(step_of "$dst/state.safetensors")"
    done ;;
  restore)
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=($(ls training/state 2>/dev/null))
    for run in "${names[@]}"; do
      src=training/state/$run dst=runs/$run; [ -f "$src/state.safetensors" ] || continue
      if [ -f "$dst/state.safetensors" ] && [ "$(step_of "$dst/state.safetensors")" -ge "$(step_of "$src/state.safetensors")" ]; then
        echo "kept $run: runs/ is at step $(step_of "$dst/state.safetensors")"; continue
      fi
      mkdir -p "$dst"
      for f in state.safetensors source.safetensors train.log summary.json; do
        [ -f "$src/$f" ] && cp "$src/$f" "$dst/$f"
      done
      echo "restored $run at step $(step_of "$dst/state.safetensors")"
    done ;;
  *) echo "usage: scripts/run_state.sh save|restore [RUN ...]" >&2; exit 2 ;;
esac
