"""Pooled caption states of the frozen text encoder, computed once per caption and kept in memory and on disk.

The contrastive model only reads the encoder's mean-pooled state [D] of each caption, so the file holds those alone
(float32, one row per caption; 1.5 kB per caption for MiniLM), with the captions and the encoder's signature in
its metadata. A file made by another encoder (other source, truncation or pooling) is rebuilt, never reused;
captions it lacks are encoded and added. Each writer fills a temporary file of its own beside the target and moves
it into place (`audiodiff.utils.files.atomic_path`), so concurrent writers (one per rank) leave one complete file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from audiodiff.conditioning.cache import encoder_signature
from audiodiff.conditioning.text import TextEncoder
from audiodiff.utils.files import atomic_path

log = logging.getLogger(__name__)


def _signature(encoder: TextEncoder) -> str:
    return json.dumps({**encoder_signature(encoder), "content": "pooled"}, sort_keys=True)


def _read(path: Path, signature: str) -> dict[str, Tensor]:
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("signature") != signature:
            log.info("pooled caption cache %s was made by another encoder (%s); rebuilding", path,
                     meta.get("signature"))
            return {}
        pooled = f.get_tensor("pooled")
    captions = json.loads(meta["captions"])
    if pooled.shape[0] != len(captions):
        raise ValueError(f"{path}: pooled caption cache holds {pooled.shape[0]} rows for {len(captions)} captions; "
                         "delete the file to rebuild it")
    return dict(zip(captions, pooled.unbind(0), strict=True))


def _write(path: Path, states: dict[str, Tensor], signature: str) -> None:
    with atomic_path(path) as tmp:  # a temporary of its own per writer
        save_file({"pooled": torch.stack(list(states.values())).contiguous()}, str(tmp),
                  metadata={"captions": json.dumps(list(states)), "signature": signature})


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
        self._signature = _signature(encoder)
        self._states: dict[str, Tensor] = {} if self.path is None else _read(self.path, self._signature)

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
                _write(self.path, self._states, self._signature)
        return len(missing)

    def __call__(self, captions: list[str]) -> Tensor:
        """captions: B strings → pooled states [B, D] float32 on the CPU (unseen captions are encoded first,
        kept in memory only; call :meth:`add` to persist a whole dataset's captions at once)."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._states]
        if missing:
            encoded = self.encoder.encode_unique(missing, batch_size=self.batch_size)
            self._states.update({c: encoded[c][1] for c in missing})
        return torch.stack([self._states[c] for c in captions])
