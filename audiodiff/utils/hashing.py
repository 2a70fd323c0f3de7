"""Content hashes (SHA-256, hex): of a file's bytes, of a set of hashes, of JSON values, of named tensors.

Caches, run records and evaluation reports store these digests and compare them later, so each function's output
is part of a stored format: change none of them (a changed digest silently invalidates every cache and report that
holds the old one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

# Header hashed before each tensor's bytes by :func:`tensors_sha256`. The two spellings are both stored: latent
# cache signatures (`audiodiff.data.latent_cache.state_digest`) use STATE_HEADER, embedder ids and their embedding
# cache folders (`audiodiff.evaluation.embedders.base.weights_digest`) use WEIGHTS_HEADER.
STATE_HEADER = "{name}:{dtype}:{shape};"
WEIGHTS_HEADER = "{name}|{dtype}|{shape}|"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the bytes of the file at `path`."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def text_sha256(text: str) -> str:
    """SHA-256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode()).hexdigest()


def set_sha256(hashes: Iterable[str]) -> str:
    """One hash for a set of hashes (or other strings), independent of their order: SHA-256 of the sorted strings
    joined by newlines."""
    return text_sha256("\n".join(sorted(hashes)))


def json_sha256(value: object) -> str:
    """SHA-256 of `value` as JSON with sorted keys (json's default separators; values JSON cannot hold are written
    as their `str`)."""
    return text_sha256(json.dumps(value, sort_keys=True, default=str))


def tensors_sha256(tensors: Mapping[str, torch.Tensor], header: str = STATE_HEADER) -> str:
    """SHA-256 over named tensors in name order: for each, `header` (formatted with its name, dtype and shape) and
    then its raw bytes (CPU, contiguous). Two mappings hash alike only when every name, dtype, shape and value
    agrees bit for bit."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(header.format(name=name, dtype=tensor.dtype, shape=tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
