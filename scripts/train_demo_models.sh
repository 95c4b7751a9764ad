#!/usr/bin/env bash
# Train the two bundled demo models (densepred_ros/demo_models/) from scratch on the CPU.
#
# 1. render 4800 generated scenes (seeds 0..4799, even indoor, odd outdoor) at 128×96,
#    one process per core;
# 2. train the shared miniature VAE on their RGB, depth, disparity, log-depth and normals
#    images (two threads, 12 minutes);
# 3. train a Lotus-D log-depth UNet and a Lotus-D normals UNet in parallel, one CPU thread
#    each (on a busy 2-core machine two threads per process ran ~10× slower);
# 4. copy the checkpoints (without the optimizer state) into the package and measure
#    them on 50 held-out scenes (seeds 2,000,000..2,000,049).
#
# Each stage's wall time is printed at the end. Scenes already in the cache are not
# rendered again (DENSEPRED_CACHE=DIR shares one).
#
# Usage: scripts/train_demo_models.sh [WORK_DIR]   (default /tmp/densepred_demo_train)
set -euo pipefail

WORK=${1:-/tmp/densepred_demo_train}
CACHE=${DENSEPRED_CACHE:-$WORK/cache}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
FRAMES=${FRAMES:-4800}
UNET_MINUTES=${UNET_MINUTES:-30}
TRAIN=("$PY" -m densepred_ros.training train --frames "$FRAMES" --cache "$CACHE")
UNET=(--variant d --vae "$WORK/vae" --steps 100000 --time-limit "$UNET_MINUTES"
      --batch-size 16 --lr 5e-4 --val-every 500 --threads 1)
mkdir -p "$WORK"
cd "$ROOT"
STAGES=()
START=$(date +%s)
LAST=$START
stage() {
    local now
    now=$(date +%s)
    STAGES+=("$1: $(( (now - LAST) / 60 )) min $(( (now - LAST) % 60 )) s")
    LAST=$now
}

for part in 0 1; do
    "$PY" -c 'import sys
from densepred_ros.training.dataset import render_synthetic
render_synthetic(sys.argv[1], range(int(sys.argv[2]), int(sys.argv[3]), 2), 96, 128)' \
        "$CACHE/synthetic_96x128" "$part" "$FRAMES" &
done
wait
stage 'render scenes'

"${TRAIN[@]}" --vae-only --output "$WORK/vae" --vae-steps 100000 --vae-time-limit 12 \
    --vae-lr 1e-3 --threads 2 2>&1 | tee "$WORK/vae.log"
stage 'VAE'

"${TRAIN[@]}" --output "$WORK/depth" --space log_depth "${UNET[@]}" > "$WORK/depth.log" 2>&1 &
DEPTH_PID=$!
"${TRAIN[@]}" --output "$WORK/normals" --space normals "${UNET[@]}" > "$WORK/normals.log" 2>&1 &
NORMALS_PID=$!
wait "$DEPTH_PID" "$NORMALS_PID"
stage 'UNets (in parallel)'

for name in depth normals; do
    target="$ROOT/densepred_ros/demo_models/lotus-$name-demo"
    rm -rf "$target"
    mkdir -p "$target"
    cp -r "$WORK/$name"/{unet,vae,text_encoder,tokenizer,scheduler} "$target/"
    cp "$WORK/$name"/{model_index.json,densepred.json} "$target/"
done
stage 'copy'
echo "training done in $(( (LAST - START) / 60 )) min $(( (LAST - START) % 60 )) s:"
printf '  %s\n' "${STAGES[@]}"

for name in depth normals; do
    "$PY" -m densepred_ros.training evaluate-model \
        "$ROOT/densepred_ros/demo_models/lotus-$name-demo" --scenes 50 --threads 1 \
        > "$WORK/eval_$name.log" 2>&1 &
done
wait
cat "$WORK"/eval_*.log
