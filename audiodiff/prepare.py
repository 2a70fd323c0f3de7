"""`python -m audiodiff.prepare corpus=sfx [root=data seed=0 num_clips=... workers=2 force=false]`.

Builds a built-in corpus (see `audiodiff.benchmarks.CORPORA`) unless its manifest already exists, and prints
where it is and how long the build took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from audiodiff.benchmarks import CORPORA, corpus_module, ensure_corpus


def prepare(
    corpus: str,
    root: str | Path = "data",
    *,
    seed: int = 0,
    num_clips: int | None = None,
    workers: int = 2,
    force: bool = False,
) -> Path:
    """Manifest path of `corpus` under `root`, building it first if missing (or always, with `force`)."""
    if corpus not in CORPORA:
        raise ValueError(f"corpus: unknown built-in corpus {corpus!r}; expected one of {sorted(CORPORA)}")
    if force:
        return corpus_module(corpus).build(
            Path(root) / corpus, seed=seed, num_clips=num_clips, workers=workers
        )
    return ensure_corpus(corpus, root, seed=seed, num_clips=num_clips, workers=workers)


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Build the corpus `cfg` (conf/prepare.yaml) names and say where it is."""
    manifest = Path(cfg.root) / cfg.corpus / "manifest.jsonl"
    existed = manifest.exists() and not cfg.force
    start = time.perf_counter()
    path = prepare(
        cfg.corpus, cfg.root, seed=cfg.seed, num_clips=cfg.num_clips, workers=cfg.workers, force=cfg.force
    )
    if existed:
        print(f"{path}: already built (force=true rebuilds it)")
    else:
        print(f"{path}: built in {time.perf_counter() - start:.1f} s with {cfg.workers} worker(s)")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.prepare", "prepare", main, __doc__)
