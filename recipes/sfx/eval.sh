#!/usr/bin/env bash
# Evaluate a trained sfx model on 200 held-out prompts: attribute accuracy, and with the recipe's own contrastive
# embedder (trained first if missing, ~10 min on 2 CPU cores) FAD with a 95% interval, FAD-infinity, near copies of
# training clips and text scores. Usage: bash recipes/sfx/eval.sh runs/sfx_long/seed0/export [extra overrides]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
model=${1:?usage: bash recipes/sfx/eval.sh <model folder> [overrides]}
shift
embedder=runs/embedder_sfx/export
if [ ! -f "$embedder/export.json" ]; then
  $py -m audiodiff.training.embedder.run data=sfx text_cache_file=data/sfx/text_pooled.safetensors
fi
$py -m audiodiff.evaluate model="$model" recipe=sfx n=200 seed=0 embedders.contrastive="$embedder" \
  fad_infinity=true "$@"
