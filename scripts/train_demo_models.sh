#!/usr/bin/env bash
# Train the two bundled demo models (densepred_ros/demo_models/) from scratch on the CPU.
#
# 1. render 1600 generated scenes (seeds 0..1599, even indoor, odd outdoor) at 128×96 and
#    train the shared miniature VAE on their RGB, depth, disparity and normals images;
# 2. train a Lotus-D disparity UNet and a Lotus-D normals UNet (in parallel, one CPU
#    thread each: on a busy 2-core machine two threads per process ran ~10× slower);
# 3. copy the checkpoints (without the optimizer state) into the package and measure
#    them on 50 held-out scenes (seeds 2,000,000..2,000,049).
#
# Usage: scripts/train_demo_models.sh [WORK_DIR]   (default /tmp/densepred_demo_train)
set -euo pipefail

WORK=${1:-/tmp/densepred_demo_train}
CACHE=${DENSEPRED_CACHE:-$WORK/cache}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
TRAIN=("$PY" -m densepred_ros.training train --frames 1600 --cache "$CACHE" --threads 1)
mkdir -p "$WORK"
cd "$ROOT"

"${TRAIN[@]}" --vae-only --output "$WORK/vae" --vae-steps 1200 --vae-time-limit 12 \
    --vae-lr 1e-3 2>&1 | tee "$WORK/vae.log"

"${TRAIN[@]}" --output "$WORK/depth" --space disparity --variant d --vae "$WORK/vae" \
    --steps 100000 --time-limit 28 --batch-size 16 --lr 5e-4 --val-every 500 \
    > "$WORK/depth.log" 2>&1 &
DEPTH_PID=$!
"${TRAIN[@]}" --output "$WORK/normals" --space normals --variant d --vae "$WORK/vae" \
    --steps 100000 --time-limit 28 --batch-size 16 --lr 5e-4 --val-every 500 \
    > "$WORK/normals.log" 2>&1 &
NORMALS_PID=$!
wait "$DEPTH_PID" "$NORMALS_PID"

for name in depth normals; do
    target="$ROOT/densepred_ros/demo_models/lotus-$name-demo"
    rm -rf "$target"
    mkdir -p "$target"
    cp -r "$WORK/$name"/{unet,vae,text_encoder,tokenizer,scheduler} "$target/"
    cp "$WORK/$name"/{model_index.json,densepred.json} "$target/"
    "$PY" -m densepred_ros.training evaluate-model "$target" --scenes 50
done
