#!/usr/bin/env bash
# Evaluate a trained music model on 200 held-out prompts: attribute accuracy, and with the recipe's own contrastive
# embedder (trained first if missing, ~10 min on 2 CPU cores) FAD with a 95% interval, FAD-infinity, near copies of
# training clips and text scores. Usage: bash recipes/music/eval.sh runs/music_long/seed0/export [extra overrides]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
model=${1:?usage: bash recipes/music/eval.sh <model folder> [overrides]}
shift
embedder=runs/embedder_music/export
if [ ! -f "$embedder/export.json" ]; then
  $py -m audiodiff.training.embedder.run data=music text_cache_file=data/music/text_pooled.safetensors
fi
$py -m audiodiff.evaluate model="$model" recipe=music n=200 seed=0 embedders.contrastive="$embedder" \
  fad_infinity=true "$@"
