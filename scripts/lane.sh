#!/usr/bin/env bash
# One training lane: run stages one after another, each a resumable `bsr train` with the issue-12 recipe
# (lr 5e-4 cosine, β2 0.99, L1 on 0..255, batch 8, LR patch 16, bf16 + channels_last, 1 thread, Set5 every 1000).
#
#   nohup scripts/lane.sh RUN:FROM:MINUTES[:TEACHER[:WARMUP]] ... > runs/laneA.log 2>&1 &
#
# RUN is <model>-x<scale>-<stage> (the run folder under runs/); FROM is what --init-from gets (a training state
# keeps latents and Adam moments; a path that is a run name, e.g. e2fif-x4-s12, means that run's state once it
# finished; "none" or empty starts from a fresh init); TEACHER (optional) is a zoo name or file for --teacher. A run whose folder holds a state resumes
# exactly (--resume); a finished run (summary.json) is skipped. The stage ends at its time budget (the iteration
# cap is only a backstop: compiled steps reached the old cap of 40000 before 62 minutes). WARMUP defaults to 200 (x2/x3 from an x4 body; stage 10
# at x4 used 50); SEED (default 12) is the stage's seed; LR (default 5e-4) its peak learning rate; PATCH (default 16)
# its LR patch size.
set -u
cd "$(dirname "$0")/.."
TRAIN_DIR=${BSR_TRAIN_DIR:-../shared/datasets/train/BSD400}
DATA_DIR=${BSR_DATA_DIR:-../shared/datasets/benchmark}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
log() { echo "$(date '+%F %T') $*"; }
for entry in "$@"; do
  IFS=: read -r run from minutes teacher warmup <<< "$entry"
  dir=runs/$run; model=${run%-x*}; rest=${run##*-x}; scale=${rest%%-*}
  [ -f "$dir/summary.json" ] && { log "$run already finished"; continue; }
  [ -d "runs/$from" ] && from=runs/$from/state.safetensors
  mkdir -p "$dir"
  args=(); [ -n "$from" ] && [ "$from" != none ] && args=(--init-from "$from")
  [ -f "$dir/state.safetensors" ] && args=(--resume)
  [ -n "${teacher:-}" ] && args+=(--teacher "$teacher")
  log "train $run ($model x$scale) from $from for ${minutes} min ${teacher:+teacher $teacher}"
  bsr train --model "$model" --scale "$scale" --train-dir "$TRAIN_DIR" --data-dir "$DATA_DIR" --out "$dir" \
    --iters 1000000 --time-budget "${minutes}m" --batch-size 8 --patch-size "${PATCH:-16}" --lr "${LR:-5e-4}" --beta2 0.99 \
    --loss-range 255 --schedule cosine --warmup "${warmup:-200}" --val-every 1000 --save-every 100 \
    --log-every 100 --precision bf16 --threads 1 --seed "${SEED:-12}" "${args[@]}" >> "$dir/stdout.log" 2>&1 \
    || { log "FAILED $run (exit $?)"; exit 1; }
  log "done $run: $(grep -h 'done:' "$dir/train.log" | tail -1)"
done
log "lane done"
