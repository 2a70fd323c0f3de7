"""The near-copy guard: each generated clip is embedded and compared with the index of the training set stored with
the model (`audiodiff.guard.index`); at or above the index's calibrated threshold it is a near copy of its nearest
training clip, and the pipeline regenerates it with another seed or refuses it (`audiodiff.pipeline.near_copy`).

    guard = NearCopyGuard.from_export("runs/sfx/seed0/export", on_copy="regenerate", tries=3)
    pipe = AudioDiffusionPipeline.from_pretrained("runs/sfx/seed0/export", near_copy_guard=guard)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from audiodiff.evaluation.embedders import Embedder
from audiodiff.evaluation.memorization import nearest_neighbours
from audiodiff.guard.index import NearCopyIndex, build_embedder
from audiodiff.pipeline.near_copy import CopyVerdict, OnCopy

ON_COPY: tuple[OnCopy, ...] = ("regenerate", "refuse")


class NearCopyGuard:
    """Compares clips with `index` in `embedder`'s space (the one the index was built with); follows
    `audiodiff.pipeline.near_copy.OutputGuard`.

    on_copy: "regenerate" (another seed, up to `tries` more) or "refuse". threshold: overrides the index's.
    """

    def __init__(self, index: NearCopyIndex, embedder: Embedder, on_copy: OnCopy = "regenerate", tries: int = 3,
                 threshold: float | None = None) -> None:
        if on_copy not in ON_COPY:
            raise ValueError(f"guard.on_copy: expected one of {list(ON_COPY)}, got {on_copy!r}")
        if int(tries) < 0:
            raise ValueError(f"guard.tries: expected 0 or more seeds to try after a near copy, got {tries}")
        if index.embeddings.shape[1] != embedder.embedding_dim:
            raise ValueError(f"near-copy index: embeddings are {index.embeddings.shape[1]}-dimensional but the "
                             f"embedder gives {embedder.embedding_dim}")
        self.index, self.embedder = index, embedder
        self.on_copy: OnCopy = on_copy
        self.tries = int(tries)
        self.threshold = float(index.threshold if threshold is None else threshold)
        self.name = f"near_copy[{index.embedder.get('name')}, {len(index.clips)} clips, q={index.quantile}]"
        self._bank = index.embeddings.double().numpy()

    @classmethod
    def from_export(cls, folder: str | Path, on_copy: OnCopy = "regenerate", tries: int = 3,
                    threshold: float | None = None, device: str = "cpu") -> NearCopyGuard:
        """The guard of the index stored in an export folder (MissingIndexError, saying how to build it, when
        there is none)."""
        index = NearCopyIndex.load(folder)
        return cls(index, build_embedder(index.embedder, device), on_copy, tries, threshold)

    def similarities(self, audio: Tensor, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarity [B], index row [B]) of the nearest training clip to each clip audio [B, C, T] at
        `sample_rate` Hz; a silent clip (zero embedding) gets similarity 0 and row 0."""
        emb = self.embedder.embed(audio, sample_rate).double().numpy()
        sims, rows = np.zeros(len(emb)), np.zeros(len(emb), dtype=np.int64)
        audible = np.linalg.norm(emb, axis=1) > 0
        if audible.any():
            s, i = nearest_neighbours(emb[audible], self._bank, k=1)
            sims[audible], rows[audible] = s[:, 0], i[:, 0]
        return sims, rows

    def check(self, audio: Tensor, sample_rate: int) -> list[CopyVerdict]:
        """One verdict per clip of audio [B, C, T] at `sample_rate` Hz: its nearest training clip and similarity."""
        sims, rows = self.similarities(audio, sample_rate)
        verdicts = []
        for similarity, row in zip(sims, rows, strict=True):
            clip = self.index.clips[int(row)]
            verdicts.append(CopyVerdict(float(similarity), self.threshold, str(clip["audio"]), int(clip["line"]),
                                        str(clip.get("caption", ""))))
        return verdicts
