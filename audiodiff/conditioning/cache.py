"""The caption-state cache: text-encoder states of a whole dataset's captions, computed once and stored in one file.

Every caption cache in the package is this one file format, read and written only here:

- tensors: `pooled` [N, E] float32, the pooled state of each of N distinct captions; and, in a file of token
  states, `tokens` [sum of N_i, E] float16 (each caption's N_i real token states, concatenated) with `offsets`
  [N + 1] int64 (caption i is `tokens[offsets[i]:offsets[i + 1]]`);
- metadata: `captions` (JSON list, in row order) and `signature` (JSON, keys sorted): :func:`encoder_signature`,
  plus `"content": "pooled"` (:func:`pooled_signature`) in a file that holds pooled states only.

A file whose signature differs from the encoder in use (or that holds pooled states where token states are asked
for) is stale: it is rebuilt, never silently reused. Writes are atomic with a temporary of each writer's own
(`audiodiff.utils.files.atomic_path`), so concurrent writers (one per rank) leave one complete file.

Users: the token-state files (:func:`cached_states`): diffusion training's dataset-wide text cache
(`task.text_cache_file`) and the latent cache's `text_states.safetensors`; the pooled-state file of the contrastive
embedder's training (`audiodiff.training.embedder.captions.PooledCaptions`, `text_pooled.safetensors`). Both kinds
are exactly the files earlier versions wrote, so existing caches keep being read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from audiodiff.conditioning.text import TextEncoder, TokenStates
from audiodiff.utils.files import atomic_path

log = logging.getLogger(__name__)


def encoder_signature(encoder: TextEncoder) -> dict[str, object]:
    """What makes two encoders' states interchangeable: source, truncation, pooling, width and numeral features
    (`numbers_pooled` named only when set, so that the caches written before it existed still match)."""
    signature: dict[str, object] = {"name_or_path": str(encoder.name_or_path), "max_length": encoder.max_length,
                                    "pooling": encoder.pooling, "dim": encoder.dim, "numbers": encoder.numbers}
    if encoder.numbers_pooled:
        signature["numbers_pooled"] = True
    return signature


def pooled_signature(encoder: TextEncoder) -> dict[str, object]:
    """The signature of a file holding `encoder`'s pooled states only."""
    return {**encoder_signature(encoder), "content": "pooled"}


def save_caption_states(path: str | Path, pooled: Mapping[str, Tensor], signature: Mapping[str, object],
                        tokens: Mapping[str, Tensor] | None = None) -> Path:
    """Write the caption-state file at `path` atomically: `pooled` ({caption: [E]}) and, when given, `tokens`
    ({caption: [N_i, E]}, same captions), under `signature`."""
    path = Path(path)
    captions = list(pooled)
    if not captions:
        raise ValueError("save_caption_states: no captions to store")
    tensors = {"pooled": torch.stack([pooled[c].to(torch.float32) for c in captions]).contiguous()}
    if tokens is not None:
        width = tensors["pooled"].shape[-1]
        lengths = torch.tensor([tokens[c].shape[0] for c in captions], dtype=torch.int64)
        tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        tensors["tokens"] = torch.cat([tokens[c].to(torch.float16).reshape(-1, width) for c in captions]).contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"captions": json.dumps(captions),
                                               "signature": json.dumps(signature, sort_keys=True)})
    return path


def load_caption_states(path: str | Path, signature: Mapping[str, object], *,
                        tokens: bool) -> tuple[dict[str, Tensor], dict[str, Tensor] | None] | None:
    """({caption: pooled [E]}, {caption: tokens [N_i, E]} when `tokens`, else None) from the file at `path`, or
    None when there is no file or it was made under another signature."""
    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("signature") != json.dumps(signature, sort_keys=True):
            log.info("caption-state cache %s was made by another encoder (%s); rebuilding", path,
                     meta.get("signature"))
            return None
        captions = json.loads(meta["captions"])
        pooled = f.get_tensor("pooled")
        token_states, offsets = (f.get_tensor("tokens"), f.get_tensor("offsets")) if tokens else (None, None)
    if pooled.shape[0] != len(captions) or (offsets is not None and offsets.shape[0] != len(captions) + 1):
        raise ValueError(f"{path}: caption-state cache holds {pooled.shape[0]} rows for {len(captions)} captions; "
                         "delete the file to rebuild it")
    by_caption = dict(zip(captions, pooled.unbind(0), strict=True))
    if token_states is None or offsets is None:
        return by_caption, None
    return by_caption, {c: token_states[offsets[i]:offsets[i + 1]] for i, c in enumerate(captions)}


def save_text_cache(path: str | Path, states: dict[str, TokenStates], signature: dict[str, object]) -> Path:
    """Write token states `states` ({caption: (tokens [N_i, E], pooled [E])}) atomically to `path`."""
    if not states:
        raise ValueError("save_text_cache: no captions to store")
    return save_caption_states(path, {c: p for c, (_, p) in states.items()}, signature,
                               tokens={c: t for c, (t, _) in states.items()})


def load_text_cache(path: str | Path, signature: dict[str, object]) -> dict[str, TokenStates] | None:
    """The cached token states at `path`, or None when there is no file or it was made by another encoder."""
    loaded = load_caption_states(path, signature, tokens=True)
    if loaded is None:
        return None
    pooled, tokens = loaded
    assert tokens is not None
    return {c: (tokens[c], pooled[c]) for c in pooled}


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
