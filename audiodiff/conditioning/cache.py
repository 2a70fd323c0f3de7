"""Text-encoder states of a whole dataset's captions, computed once and stored beside the data.

One safetensors file holds every distinct caption's real token states (float16, concatenated), their offsets and
pooled embeddings; its metadata holds the captions and the encoder's signature. A file whose signature differs
from the encoder in use is stale: it is rebuilt, never silently reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiodiff.conditioning.text import TextEncoder, TokenStates
from audiodiff.utils.files import atomic_path

log = logging.getLogger(__name__)


def encoder_signature(encoder: TextEncoder) -> dict[str, object]:
    """What makes two encoders' states interchangeable: source, truncation, pooling and width."""
    return {"name_or_path": str(encoder.name_or_path), "max_length": encoder.max_length,
            "pooling": encoder.pooling, "dim": encoder.dim, "numbers": encoder.numbers}


def save_text_cache(path: str | Path, states: dict[str, TokenStates], signature: dict[str, object]) -> Path:
    """Write `states` ({caption: (tokens [N_i, E], pooled [E])}) atomically to `path`."""
    path = Path(path)
    captions = list(states)
    if not captions:
        raise ValueError("save_text_cache: no captions to store")
    lengths = torch.tensor([states[c][0].shape[0] for c in captions], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    width = states[captions[0]][1].shape[-1]
    tokens = torch.cat([states[c][0].to(torch.float16).reshape(-1, width) for c in captions])
    pooled = torch.stack([states[c][1].to(torch.float32) for c in captions])
    with atomic_path(path) as tmp:
        save_file({"tokens": tokens.contiguous(), "offsets": offsets, "pooled": pooled.contiguous()}, str(tmp),
                  metadata={"captions": json.dumps(captions), "signature": json.dumps(signature, sort_keys=True)})
    return path


def load_text_cache(path: str | Path, signature: dict[str, object]) -> dict[str, TokenStates] | None:
    """The cached states at `path`, or None when there is no file or it was made by another encoder."""
    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("signature") != json.dumps(signature, sort_keys=True):
            log.info("text cache %s was made by another encoder (%s); rebuilding", path, meta.get("signature"))
            return None
        captions = json.loads(meta["captions"])
        tokens, offsets, pooled = f.get_tensor("tokens"), f.get_tensor("offsets"), f.get_tensor("pooled")
    return {c: (tokens[offsets[i]:offsets[i + 1]], pooled[i]) for i, c in enumerate(captions)}


def cached_states(path: str | Path, encoder: TextEncoder, captions: list[str],
                  batch_size: int = 256) -> dict[str, TokenStates]:
    """States for `captions` from the file at `path`, encoding (and storing) those it lacks."""
    signature = encoder_signature(encoder)
    states = load_text_cache(path, signature) or {}
    missing = [c for c in dict.fromkeys(captions) if c not in states]
    if missing:
        log.info("encoding %d captions into the text cache %s", len(missing), path)
        states.update(encoder.encode_unique(missing, batch_size=batch_size, dtype=torch.float16))
        save_text_cache(path, states, signature)
    return states
