#!/usr/bin/env bash
# Set up a fresh machine: Debian packages for the built-in music corpus (fluidsynth, a General MIDI soundfont) and
# for the web page's browser tests (chromium), then a virtual environment in .venv with audiodiff and its test tools.
# Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(fluidsynth timgm6mb-soundfont chromium)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed (needs root: sudo apt-get install ${missing[*]}); the music corpus needs" \
      "fluidsynth and the soundfont, the browser tests chromium" >&2
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned in pyproject.toml to the CPU build shipped on the reference machines.
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -c "import audiodiff, torch; print('audiodiff', audiodiff.__version__, 'torch', torch.__version__)"
