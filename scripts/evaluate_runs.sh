#!/usr/bin/env bash
# Measure finished training runs with bsr's protocol and ship them: for each NAME (<model>-x<scale>), once
# runs/NAME-$STAGE/final.safetensors exists, scripts/add_to_manifest.py evaluates it on Set5/Set14/B100/Urban100
# (backend auto: bitpack for binary-activation models), bundles it and writes its manifest entry; the entry and
# the bundled file are committed. Several copies (lanes) can run side by side: each run is claimed with an atomic
# mkdir (runs/NAME-$STAGE/.claim), so no run is measured twice; `committed` marks a finished one.
#
#   STAGE=s3 nohup scripts/evaluate_runs.sh bbcu-l-x4 scales-x2 ... > runs/eval-s3.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
STAGE=${STAGE:-s3}
DATA_DIR=${BSR_DATA_DIR:-../shared/datasets/benchmark}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
log() { echo "$(date '+%F %T') [eval $$] $*"; }

commit_entry() {  # retry while another git command holds the index lock
  local name=$1 try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    git add bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" &&
      git commit -q -m "weights: $name ($STAGE: bsr train on BSD400, same budget for every model; metrics by bsr eval)" \
        -- bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" && return 0
    git diff --quiet HEAD -- bsr_cli/data/weights_manifest.json "bsr_cli/weights/$name.safetensors" && return 0
    sleep $((RANDOM % 10 + 5))
  done
  return 1
}

pending="$*"
while [ -n "$pending" ]; do
  left=""
  for name in $pending; do
    dir="runs/$name-$STAGE"
    [ -f "$dir/committed" ] && continue
    if [ ! -f "$dir/final.safetensors" ]; then left="$left $name"; continue; fi
    mkdir "$dir/.claim" 2>/dev/null || continue   # another lane has it
    log "evaluate $name"
    if python scripts/add_to_manifest.py "$dir/final.safetensors" --bundle --data-dir "$DATA_DIR" >> "$dir/manifest.log" 2>&1 \
        && commit_entry "$name"; then
      touch "$dir/committed"
      log "committed $name: $(python -c "import json;e=[e for e in json.load(open('bsr_cli/data/weights_manifest.json'))['checkpoints'] if e['name']=='$name'][0];print(e.get('metrics_backend'), {k:v['psnr'] for k,v in e['metrics'].items()})")"
    else
      log "FAILED $name (see $dir/manifest.log)"
    fi
  done
  pending=$left
  [ -n "$pending" ] && sleep 30
done
log "done"
