"""The built-in benchmarks, synthesised locally: `sfx` (sound effects), `sfx_stereo` (the same, panned) and `music`
(General MIDI renders).

Each corpus is one package (`sfx/`, `music/`) holding its synthesis and captions (`corpus`, `captions`), the
extractors that read its attributes back from audio (`attributes`), their fitted weights (the .json / .npz beside
them) and the scripts that fit them (`fit`); `attributes.corpus_metrics` and `check` serve both. Each corpus module
exposes `build(out_dir, *, seed, num_clips, workers) -> Path` returning the manifest it wrote.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

CORPORA: dict[str, str] = {
    "sfx": "audiodiff.benchmarks.sfx.corpus",
    "sfx_stereo": "audiodiff.benchmarks.sfx.stereo",
    "music": "audiodiff.benchmarks.music.corpus",
}


def corpus_module(name: str):
    """The module that builds corpus `name`."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    return importlib.import_module(CORPORA[name])


def ensure_corpus(name: str, root: str | Path = "data", *, seed: int = 0, num_clips: int | None = None,
                  workers: int = 2) -> Path:
    """Path of corpus `name`'s manifest under `root`, building the corpus first if it is not there yet, or again
    when it was built by another version of its synthesiser (`VERSION` against `corpus.json`'s `version`)."""
    out_dir = Path(root) / name
    manifest = out_dir / "manifest.jsonl"
    module = corpus_module(name)
    if manifest.exists():
        built = built_version(out_dir)
        wanted = getattr(module, "VERSION", None)
        if wanted is None or built == wanted:
            return manifest
        print(f"{out_dir}: built by version {built} of the {name} synthesiser; rebuilding it with version {wanted}",
              file=sys.stderr)
    return module.build(out_dir, seed=seed, num_clips=num_clips, workers=workers)


def built_version(out_dir: Path) -> int | None:
    """The synthesiser version recorded in `out_dir/corpus.json` (None when absent or unreadable)."""
    try:
        return json.loads((out_dir / "corpus.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
