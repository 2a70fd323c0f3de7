#!/usr/bin/env bash
# Reproduce the quick-start numbers in README.md: train recipe=sfx_quick (at most 15 min each on 2 CPU cores) with
# two seeds, then score 300 held-out prompts per model, unconditionally and at guidance 1, 3 and 5.
# RECIPE=sfx_long reproduces the 60-minute preset's numbers the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
recipe=${RECIPE:-sfx_quick}
for seed in ${SEEDS:-0 1}; do
  $py -m audiodiff.train recipe="$recipe" seed="$seed"
done
models=()
for seed in ${SEEDS:-0 1}; do models+=("runs/$recipe/seed$seed/export"); done
$py recipes/sfx/eval_adherence.py "${models[@]}" --n 300 --guidance 0 1 3 5 --out "runs/$recipe/adherence"
