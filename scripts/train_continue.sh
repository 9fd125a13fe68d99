#!/usr/bin/env bash
# One more training stage for every shipped checkpoint, with the SAME recipe and the SAME extra budget per scale
# (x4: +MORE_X4 iterations, x2: +MORE_X2), so the README table keeps comparing methods at equal budget.
# Each run starts from the checkpoint it continues (--init-from; the recipe chain lands in the file's metadata),
# two 1-thread training lanes, one 1-thread evaluation lane (scripts/evaluate_runs.sh: Set5/Set14/B100/Urban100
# with bsr's protocol), which bundles each file and commits its manifest entry.
#
#   STAGE=s3 nohup scripts/train_continue.sh > runs/s3.log 2>&1 &
# Sources: FROM=bundled (default): the bundled bsr_cli/weights/<m>-x<s>.safetensors, else the stage-1 run
# runs/<m>-x<s>/final.safetensors; FROM=<stage>: runs/<m>-x<s>-<stage>/final.safetensors; FROM=stage1: the
# stage-1 run. Stage 1 itself is scripts/train_all.sh. How the shipped checkpoints were made:
#   stage 2: STAGE=s2 FROM=stage1 SEED=1 MORE_X4=1200 MORE_X2=600 LANES_B="ebsr-light:4 scales:4 \
#            abnn-both-spatial-se:4" LANES_A="bbcu-l:4 srresnet-fp:4 e2fif:4 ma2019-bwn:4"   (x2 not run)
#   stage 3: STAGE=s3 (defaults: FROM=bundled, SEED=2, +1200 at x4, +900 at x2 from stage 1)
#   stage 4: STAGE=s4 FROM=s3 SEED=3 MORE_X4=600 with x4 entries only in LANES_A/LANES_B and EVAL_ORDER
#   stage 5: STAGE=s5 FROM=s4 SEED=4 MORE_X4=1800 MORE_X2=0, x4 entries only (as stage 4)
#   stage 6: STAGE=s6 FROM=s5 SEED=5 MORE_X4=1800 MORE_X2=0, x4 entries only (as stage 4)
#   stage 7: STAGE=s7 FROM=s6 SEED=6 MORE_X4=3000 MORE_X2=0, x4 entries only (lane order changes no result)
#   stage 8: STAGE=s8 FROM=bundled SEED=7 MORE_X4=12000 MORE_X2=0 LR=2e-4 BETA2=0.999 EVAL=0 VAL_EVERY=1000
#            LANES_A="e2fif:4 ma2019-bwn:4 bbcu-l:4 srresnet-fp:4" LANES_B="ebsr-light:4 scales:4"
#            (first stage with the fixed hand-off: --init-from a packed file restores trainable latents, not ±1;
#            LOSS_RANGE=1 as every earlier stage; lane A was restarted after e2fif with the same settings)
# EVAL=0 skips the evaluation lane (run scripts/evaluate_runs.sh later); an interrupted run resumes from its
# state.safetensors (latents + Adam moments) when the script is started again with the same settings.
set -u
cd "$(dirname "$0")/.."
STAGE=${STAGE:-s3}
MORE_X4=${MORE_X4:-1200}
MORE_X2=${MORE_X2:-900}
FROM=${FROM:-bundled}
SEED=${SEED:-2}
LR=${LR:-5e-4}
BETA2=${BETA2:-0.99}
LOSS_RANGE=${LOSS_RANGE:-1}   # L1 on 0..1 as stages 1-8 (bsr train's own default is 255)
EVAL=${EVAL:-1}
VAL_EVERY=${VAL_EVERY:-600}
TRAIN_DIR=${BSR_TRAIN_DIR:-../shared/datasets/train/BSD400}
DATA_DIR=${BSR_DATA_DIR:-../shared/datasets/benchmark}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
log() { echo "$(date '+%F %T') [$LANE] $*"; }
source_of() {  # source_of MODEL SCALE -> checkpoint this stage continues from
  case "$FROM" in
    bundled) if [ -f "bsr_cli/weights/$1-x$2.safetensors" ]; then echo "bsr_cli/weights/$1-x$2.safetensors"
             else echo "runs/$1-x$2/final.safetensors"; fi ;;
    stage1)  echo "runs/$1-x$2/final.safetensors" ;;
    *)       echo "runs/$1-x$2-$FROM/final.safetensors" ;;
  esac
}

train_more() {  # train_more MODEL SCALE ITERS -> runs/<m>-x<s>-$STAGE/final.safetensors
  local model=$1 scale=$2 iters=$3 dir="runs/$1-x$2-$STAGE" src
  src=$(source_of "$model" "$scale")
  mkdir -p "$dir"
  [ -f "$dir/final.safetensors" ] && { log "$model-x$scale $STAGE already done"; return 0; }
  local resume=""; [ -f "$dir/state.safetensors" ] && resume="--resume"
  [ -f "$dir/source.safetensors" ] || cp "$src" "$dir/source.safetensors"
  log "train $model-x$scale: +$iters iterations from $src"
  bsr train --model "$model" --scale "$scale" --train-dir "$TRAIN_DIR" --data-dir "$DATA_DIR" --out "$dir" \
    --init-from "$dir/source.safetensors" --iters "$iters" --batch-size 8 --patch-size 16 --lr "$LR" \
    --beta2 "$BETA2" --loss-range "$LOSS_RANGE" --schedule cosine --warmup 50 --val-every "$VAL_EVERY" --save-every 100 --log-every 100 --precision bf16 \
    --threads 1 --seed "$SEED" $resume >> "$dir/stdout.log" 2>&1 || { log "FAILED $model-x$scale"; return 1; }
  log "done $model-x$scale: $(grep -h 'done:' "$dir/train.log" | tail -1)"
}



LANES_A=${LANES_A:-"bbcu-l:2 ebsr-light:2 bbcu-l:4 e2fif:4 ma2019-bwn:4 ebsr-light:4 srresnet-fp:4"}
LANES_B=${LANES_B:-"scales:2 scales:4 abnn-both-spatial-se:4"}
EVAL_ORDER=${EVAL_ORDER:-"bbcu-l-x2 scales-x2 ebsr-light-x2 bbcu-l-x4 e2fif-x4 scales-x4 ma2019-bwn-x4 ebsr-light-x4 abnn-both-spatial-se-x4 srresnet-fp-x4"}
run_lane() { local r; for r in $1; do
  local s=${r#*:}; train_more "${r%:*}" "$s" "$([ "$s" = 4 ] && echo "$MORE_X4" || echo "$MORE_X2")"; done; log "lane done"; }
(LANE=A; run_lane "$LANES_A") &
(LANE=B; run_lane "$LANES_B") &
[ "$EVAL" = 1 ] && (LANE=E; STAGE=$STAGE scripts/evaluate_runs.sh $EVAL_ORDER; log "lane done") &
wait
LANE=main; log "$STAGE done"
