#!/usr/bin/env bash
# Stage 2 of the shipped checkpoints: every stage-1 run (scripts/train_all.sh: 600 it at x4, 300 it at x2)
# continues from its final checkpoint with the SAME recipe and the same extra budget per scale
# (x4: +STAGE2_X4 iterations, x2: +STAGE2_X2), so the table still compares methods at equal budget.
# Two 1-thread training lanes + one evaluation lane that measures each finished run with bsr's protocol
# (scripts/add_to_manifest.py: Set5/Set14/B100/Urban100), bundles it and commits the manifest entry.
#
#   nohup scripts/train_stage2.sh > runs/stage2.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
STAGE2_X4=${STAGE2_X4:-1200}
STAGE2_X2=${STAGE2_X2:-600}
TRAIN_DIR=${BSR_TRAIN_DIR:-../shared/datasets/train/BSD400}
DATA_DIR=${BSR_DATA_DIR:-../shared/datasets/benchmark}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
log() { echo "$(date '+%F %T') [$LANE] $*"; }

train2() {  # train2 MODEL SCALE ITERS: runs/<m>-x<s>/final.safetensors -> runs/<m>-x<s>-s2/final.safetensors
  local model=$1 scale=$2 iters=$3 src="runs/$1-x$2" dir="runs/$1-x$2-s2"
  mkdir -p "$dir"
  [ -f "$dir/final.safetensors" ] && { log "$model-x$scale stage 2 already done"; return 0; }
  local resume=""; [ -f "$dir/state.safetensors" ] && resume="--resume"
  log "train $model-x$scale: +$iters iterations from $src/final.safetensors"
  bsr train --model "$model" --scale "$scale" --train-dir "$TRAIN_DIR" --data-dir "$DATA_DIR" --out "$dir" \
    --init-from "$src/final.safetensors" --iters "$iters" --batch-size 8 --patch-size 16 --lr 5e-4 \
    --schedule cosine --warmup 50 --val-every 600 --save-every 100 --log-every 100 --precision bf16 \
    --threads 1 --seed 1 $resume >> "$dir/stdout.log" 2>&1 || { log "FAILED $model-x$scale"; return 1; }
  log "done $model-x$scale: $(grep -h 'done:' "$dir/train.log" | tail -1)"
}

evaluate_all() {  # add every finished stage-2 run to the manifest (bundled), x4 first, and commit it
  local pending="$*" left name
  while [ -n "$pending" ]; do
    left=""
    for name in $pending; do
      local dir="runs/$name-s2"
      if [ -f "$dir/final.safetensors" ]; then
        log "evaluate $name"
        if python scripts/add_to_manifest.py "$dir/final.safetensors" --bundle --data-dir "$DATA_DIR" \
            >> "$dir/manifest.log" 2>&1; then
          git add bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" &&
            git commit -q -m "weights: $name (bsr train, stage 1+2 on BSD400; metrics measured by bsr eval)" \
              -- bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" &&
            log "committed $name: $(python -c "import json;e=[e for e in json.load(open('bsr_cli/data/weights_manifest.json'))['checkpoints'] if e['name']=='$name'][0];print({k:v['psnr'] for k,v in e['metrics'].items()})")"
        else
          log "evaluation failed for $name (see $dir/manifest.log)"
        fi
      else
        left="$left $name"
      fi
    done
    pending=$left
    [ -n "$pending" ] && sleep 30
  done
}

(LANE=A; for r in "bbcu-l 4" "srresnet-fp 4" "e2fif 4" "ma2019-bwn 4"; do train2 $r "$STAGE2_X4"; done
 train2 bbcu-l 2 "$STAGE2_X2"; log "lane done") &
(LANE=B; for r in "ebsr-light 4" "scales 4" "abnn-both-spatial-se 4"; do train2 $r "$STAGE2_X4"; done
 for r in "ebsr-light 2" "scales 2"; do train2 $r "$STAGE2_X2"; done; log "lane done") &
(LANE=E; evaluate_all bbcu-l-x4 srresnet-fp-x4 ebsr-light-x4 e2fif-x4 ma2019-bwn-x4 scales-x4 \
   abnn-both-spatial-se-x4 bbcu-l-x2 ebsr-light-x2 scales-x2; log "lane done") &
wait
LANE=main; log "stage 2 done"
