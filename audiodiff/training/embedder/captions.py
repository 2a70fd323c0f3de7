"""Pooled caption states of the frozen text encoder, computed once per caption and kept in memory and on disk.

The contrastive model only reads the encoder's mean-pooled state [D] of each caption, so its file is the
caption-state cache (:mod:`audiodiff.conditioning.cache`) holding pooled states only (float32, one row per caption;
1.5 kB per caption for MiniLM), under :func:`~audiodiff.conditioning.cache.pooled_signature`. A file made by another
encoder (other source, truncation or pooling) is rebuilt, never reused; captions it lacks are encoded and added.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from audiodiff.conditioning.cache import load_caption_states, pooled_signature, save_caption_states
from audiodiff.conditioning.text import TextEncoder

log = logging.getLogger(__name__)


class PooledCaptions:
    """caption → pooled state [D] (float32, CPU) of `encoder`, encoding each distinct caption once.

    encoder: the frozen text encoder.
    path: optional safetensors file that persists the states between runs (see the module docstring).
    batch_size: captions per encoder pass.
    """

    def __init__(self, encoder: TextEncoder, path: str | Path | None = None, batch_size: int = 256) -> None:
        self.encoder = encoder
        self.path = None if path is None else Path(path)
        self.batch_size = batch_size
        self._signature = pooled_signature(encoder)
        loaded = None if self.path is None else load_caption_states(self.path, self._signature, tokens=False)
        self._states: dict[str, Tensor] = {} if loaded is None else loaded[0]

    def __len__(self) -> int:
        return len(self._states)

    def add(self, captions: Iterable[str]) -> int:
        """Encode the captions not seen yet (and store them in the file, if any); returns how many were new."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._states]
        if missing:
            if len(missing) > self.batch_size:
                log.info("encoding %d captions with %s", len(missing), self.encoder.name_or_path)
            encoded = self.encoder.encode_unique(missing, batch_size=self.batch_size)
            self._states.update({c: encoded[c][1] for c in missing})
            if self.path is not None:
                save_caption_states(self.path, self._states, self._signature)
        return len(missing)

    def __call__(self, captions: list[str]) -> Tensor:
        """captions: B strings → pooled states [B, D] float32 on the CPU (unseen captions are encoded first,
        kept in memory only; call :meth:`add` to persist a whole dataset's captions at once)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._states]
        if missing:
            encoded = self.encoder.encode_unique(missing, batch_size=self.batch_size)
            self._states.update({c: encoded[c][1] for c in missing})
        return torch.stack([self._states[c] for c in captions])
