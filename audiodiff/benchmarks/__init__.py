"""The built-in benchmarks, synthesised locally: `sfx` (sound effects) and `music` (General MIDI renders).

Each corpus is one package (`sfx/`, `music/`) holding its synthesis and captions (`corpus`, `captions`), the
extractors that read its attributes back from audio (`attributes`), their fitted weights (the .json / .npz beside
them) and the scripts that fit them (`fit`); `attributes.corpus_metrics` and `check` serve both. Each corpus module
exposes `build(out_dir, *, seed, num_clips, workers) -> Path` returning the manifest it wrote.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CORPORA: dict[str, str] = {
    "sfx": "audiodiff.benchmarks.sfx.corpus",
    "music": "audiodiff.benchmarks.music.corpus",
}


def corpus_module(name: str):
    """The module that builds corpus `name`."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    return importlib.import_module(CORPORA[name])


def ensure_corpus(name: str, root: str | Path = "data", *, seed: int = 0, num_clips: int | None = None,
                  workers: int = 2) -> Path:
    """Path of corpus `name`'s manifest under `root`, building the corpus first if it is not there yet.

    A corpus built by an older version of its synthesiser (`corpus.json`'s "version" below the module's
    `VERSION`) is rebuilt with the seed and clip count it was built with, unless `num_clips` says otherwise.
    """
    out_dir = Path(root) / name
    manifest = out_dir / "manifest.jsonl"
    module = corpus_module(name)
    if manifest.exists():
        built = _built_with(out_dir / "corpus.json")
        current = getattr(module, "VERSION", None)
        if current is None or built is None or built.get("version", current) >= current:
            return manifest
        log.warning("%s: built by %s synthesiser version %s; rebuilding it with version %s",
                    out_dir, name, built.get("version"), current)
        seed = int(built.get("seed", seed))
        num_clips = num_clips if num_clips is not None else built.get("num_clips")
    return module.build(out_dir, seed=seed, num_clips=num_clips, workers=workers)


def _built_with(summary: Path) -> dict | None:
    """The corpus's `corpus.json` as a dict, or None where it is missing or unreadable."""
    try:
        return json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
