"""Audio embedders for evaluation: FAD (VGGish, PANNs, CLAP, EnCodec), CLAP score, and KL / IS (PANNs classifier).

Each embedder follows the `Embedder` protocol (`id`, `sample_rate`, `embedding_dim`, `embed(wavs, sample_rate)
→ [N, E]`); frame-level ones add `embed_frames` (`FrameEmbedder`), taggers add `classify` (`Classifier`). Their
`id` includes a hash of the weights, for `audiodiff.evaluation.embedding_cache.EmbeddingCache`.

No weights ship with audiodiff: `load_embedder(name, ...)` calls the named loader, which reads a checkpoint the
user has fetched (VGGish, PANNs) or a transformers folder or hub name (CLAP, EnCodec). Loaders are imported on
first use, so importing this package does not import transformers.

    load_embedder("vggish", "vggish-10086976.pth")
    load_embedder("panns", "Cnn14_mAP=0.431.pth")
    load_embedder("clap", "laion/clap-htsat-unfused")
    load_embedder("encodec", "facebook/encodec_24khz")
    load_embedder("logmel", seconds=4.0)   # no weights: a coarse log-mel map (the near-copy guard's default)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from audiodiff.evaluation.embedders.base import Classifier, Embedder, FrameEmbedder, WavBatch

EmbedderName = Literal["vggish", "panns", "clap", "encodec", "contrastive", "logmel"]

_LOADERS: dict[str, str] = {
    "vggish": "audiodiff.evaluation.embedders.vggish:load_vggish",
    "panns": "audiodiff.evaluation.embedders.panns:load_panns",
    "clap": "audiodiff.evaluation.embedders.clap:load_clap",
    "encodec": "audiodiff.evaluation.embedders.encodec:load_encodec",
    "contrastive": "audiodiff.evaluation.embedders.contrastive:load_embedder",  # trained here on a recipe's own data
    "logmel": "audiodiff.evaluation.embedders.logmel:load_logmel",  # fixed, parameter-free (near-copy guard)
}

def embedder_loader(name: EmbedderName) -> Callable[..., Embedder]:
    """The loader function registered under `name` (imports its module)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown embedder {name!r}; expected one of {sorted(_LOADERS)}")
    module, attribute = _LOADERS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def load_embedder(name: EmbedderName, *args: Any, **kwargs: Any) -> Embedder:
    """`embedder_loader(name)(*args, **kwargs)`: see `load_vggish`, `load_panns`, `load_clap`, `load_encodec`."""
    return embedder_loader(name)(*args, **kwargs)


__all__ = ["Classifier", "Embedder", "EmbedderName", "FrameEmbedder", "WavBatch", "embedder_loader", "load_embedder"]
