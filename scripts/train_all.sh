#!/usr/bin/env bash
# Train the shipped checkpoints: one recipe and one budget (equal ITERATIONS) per scale, three lanes in parallel.
#
#   nohup scripts/train_all.sh > runs/train_all.log 2>&1 &
#
# Each training lane (A, B, C) is one process with ONE torch thread (on the shared 2-core dev box one 2-thread
# run was ~6x slower than a 1-thread run: threads that wait on busy cores stall every conv). Lane M (nice 10)
# waits for each run's final checkpoint, evaluates it on the 4 benchmarks, adds it to the manifest (bundled;
# ebsr-light is marked default) and commits the entry + file; training lanes that are done do the same
# (each run is claimed once by mkdir runs/<name>/.eval_claim). LANES="M M" starts two evaluators only.
# x2 runs start from their x4 checkpoint (--init-from: head/body copied). Re-running the script skips
# finished runs and resumes unfinished ones (bsr train --resume).
#
# Environment: ITERS_X4, ITERS_X2, BATCH, PATCH, LR, LANES="A B C M" (which lanes to run), NO_COMMIT=1,
# NO_MANIFEST=1.
set -u
cd "$(dirname "$0")/.."
ITERS_X4=${ITERS_X4:-600}
ITERS_X2=${ITERS_X2:-300}
BATCH=${BATCH:-8}
PATCH=${PATCH:-16}
LR=${LR:-5e-4}
TRAIN_DIR=${BSR_TRAIN_DIR:-../shared/datasets/train/BSD400}
DATA_DIR=${BSR_DATA_DIR:-../shared/datasets/benchmark}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs

log() { echo "$(date '+%F %T') [lane ${LANE:-?}] $*"; }

commit_entry() {  # commit the manifest + bundled file of <model>-x<scale>, retrying while the index is locked
  local name=$1 msg=$2
  [ "${NO_COMMIT:-0}" = 1 ] && return 0
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if git add bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" 2>/dev/null &&
       git commit -q -m "$msg" -- bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors"; then
      log "committed $name"; return 0
    fi
    sleep 7
  done
  log "could not commit $name (do it by hand)"
}

run() {  # run MODEL SCALE ITERS [extra bsr-train args...]
  local model=$1 scale=$2 iters=$3; shift 3
  local name="$model-x$scale" dir="runs/$model-x$scale"
  mkdir -p "$dir"
  if [ -f "$dir/final.safetensors" ] && grep -q "\"iterations\": $iters," "$dir/summary.json" 2>/dev/null; then
    log "$name already trained ($iters iterations)"
  else
    local resume=""
    [ -f "$dir/state.safetensors" ] && resume="--resume"
    log "train $name: $iters iterations"
    bsr train --model "$model" --scale "$scale" --train-dir "$TRAIN_DIR" --data-dir "$DATA_DIR" --out "$dir" \
      --iters "$iters" --batch-size "$BATCH" --patch-size "$PATCH" --lr "$LR" --schedule cosine --warmup 50 \
      --val-every 300 --save-every 100 --log-every 50 --precision bf16 --threads 1 --seed 0 $resume "$@" \
      >> "$dir/stdout.log" 2>&1 || { log "FAILED $name (see $dir/stdout.log)"; return 1; }
    log "trained $name: $(python -c "import json;r=json.load(open('$dir/summary.json'))['recipe'];print(r['best_set5_psnr'], 'dB best Set5 at', r['best_step'])")"
  fi
}

add_entry() {  # evaluate (no lock, private manifest), then write the real manifest + bundle + commit under a lock
  local model=$1 scale=$2 iters=$3 dir=$4 name="$1-x$2" flags="--bundle"
  [ "$model" = ebsr-light ] && flags="$flags --default"
  log "evaluate $name on Set5/Set14/B100/Urban100"
  echo '{"checkpoints": []}' > "$dir/manifest.private.json"
  python scripts/add_to_manifest.py "$dir/final.safetensors" --data-dir "$DATA_DIR" \
    --manifest "$dir/manifest.private.json" >> "$dir/manifest.log" 2>&1 || { log "evaluation failed for $name"; return 1; }
  python - "$dir" "$model" "$scale" <<'PY' || return 1
import json, sys
d, model, scale = sys.argv[1], sys.argv[2], int(sys.argv[3])
entry = json.load(open(f"{d}/manifest.private.json"))["checkpoints"][0]
rows = [{"model": model, "scale": scale, "dataset": k, **v} for k, v in entry["metrics"].items()]
json.dump({"results": rows}, open(f"{d}/metrics.json", "w"), indent=2)
PY
  log "$name metrics: $(python -c "import json;print({r['dataset']: r['psnr'] for r in json.load(open('$dir/metrics.json'))['results']})")"
  (
    flock 9
    python scripts/add_to_manifest.py "$dir/final.safetensors" $flags --metrics-json "$dir/metrics.json" \
      >> "$dir/manifest.log" 2>&1 &&
      commit_entry "$name" "weights: $name trained by bsr train ($iters it, batch $BATCH, LR patch $PATCH, lr $LR cosine, bf16, BSD400)" ||
      log "add_to_manifest failed for $name (see $dir/manifest.log)"
  ) 9> runs/.manifest.lock
}

lane_A() {
  LANE=A
  run ebsr-light 4 "$ITERS_X4"
  run e2fif 4 "$ITERS_X4"
  run ebsr-light 2 "$ITERS_X2" --init-from runs/ebsr-light-x4/final.safetensors
  log "lane A training done"
  [ "${NO_MANIFEST:-0}" != 1 ] && [ -f scripts/add_to_manifest.py ] && eval_worker
  log "lane A done"
}

lane_B() {
  LANE=B
  run scales 4 "$ITERS_X4"
  run bbcu-l 4 "$ITERS_X4"
  run scales 2 "$ITERS_X2" --init-from runs/scales-x4/final.safetensors
  run bbcu-l 2 "$ITERS_X2" --init-from runs/bbcu-l-x4/final.safetensors
  log "lane B training done"
  [ "${NO_MANIFEST:-0}" != 1 ] && [ -f scripts/add_to_manifest.py ] && eval_worker
  log "lane B done"
}

lane_C() {
  LANE=C
  run abnn-both-spatial-se 4 "$ITERS_X4"
  run srresnet-fp 4 "$ITERS_X4"
  run ma2019-bwn 4 "$ITERS_X4"
  log "lane C training done"
  [ "${NO_MANIFEST:-0}" != 1 ] && [ -f scripts/add_to_manifest.py ] && eval_worker
  log "lane C done"
}

ALL_RUNS="ebsr-light-x4 scales-x4 abnn-both-spatial-se-x4 e2fif-x4 bbcu-l-x4 srresnet-fp-x4 ma2019-bwn-x4 ebsr-light-x2 scales-x2 bbcu-l-x2"

eval_worker() {  # evaluate + add + commit every finished run not yet claimed (mkdir claims: many workers may run)
  local pending="$ALL_RUNS" left name model scale iters
  while [ -n "$pending" ]; do
    left=""
    for name in $pending; do
      model=${name%-x*}; scale=${name##*-x}
      iters=$ITERS_X4; [ "$scale" = 2 ] && iters=$ITERS_X2
      if [ -f "runs/$name/.in_manifest" ] || [ -d "runs/$name/.eval_claim" ]; then
        continue
      elif [ -f "runs/$name/final.safetensors" ] && grep -q "\"iterations\": $iters," "runs/$name/summary.json" 2>/dev/null; then
        mkdir "runs/$name/.eval_claim" 2>/dev/null || continue
        add_entry "$model" "$scale" "$iters" "runs/$name" && touch "runs/$name/.in_manifest"
      else
        left="$left $name"
      fi
    done
    pending=$left
    [ -n "$pending" ] && sleep 60
  done
}

lane_M() {  # an evaluation worker at nice 10 (runs beside the training lanes, gets the CPU when they end)
  LANE=M
  eval_worker
  log "lane M done"
}

log "train_all: x4 $ITERS_X4 it, x2 $ITERS_X2 it, batch $BATCH, LR patch $PATCH, lr $LR cosine; lanes ${LANES:-A B C M}"
for lane in ${LANES:-A B C M}; do
  if [ "$lane" = M ]; then
    [ -f scripts/add_to_manifest.py ] && [ "${NO_MANIFEST:-0}" != 1 ] && (renice -n 10 -p $BASHPID >/dev/null; lane_M) &
  else
    "lane_$lane" &
  fi
done
wait
log "train_all: all lanes done"
