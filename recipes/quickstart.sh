#!/usr/bin/env bash
# Fresh machine → trained text-to-audio model → audio from a prompt, on CPU (about 20 minutes on 2 cores).
# 1. set up (Debian packages + .venv), 2. build the built-in sfx corpus, 3. train the CPU quick-start recipe
# (at most 15 minutes), 4. generate from a prompt into outputs/, 5. check what came out: the README's example
# prompts over 8 seeds, and adherence on 100 held-out prompts beside the README's numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup.sh
py=.venv/bin/python
$py -m audiodiff.prepare corpus=sfx
$py -m audiodiff.train recipe=sfx_quick
$py -m audiodiff.generate model=runs/sfx_quick/seed0/export prompt="three loud high-pitched beeps" seed=0 out=outputs
ls -l outputs
$py recipes/sfx/check_quickstart.py runs/sfx_quick/seed0/export
