"""CLAP audio and text embeddings (Wu et al., "Large-scale contrastive language-audio pretraining with feature
fusion and keyword-to-caption augmentation", ICASSP 2023) through transformers' `ClapModel`, and the CLAP score:
the cosine similarity between a generated clip and its prompt in CLAP's joint space.

Audio goes through the model's `ClapFeatureExtractor` (mono, 48 kHz for the released checkpoints, log-mel with the
extractor's settings, clips shorter than `max_length_s` repeated and padded). The extractor crops clips longer
than `max_length_s` at random; to stay deterministic a long clip is cut here into consecutive windows of
`max_length_s` (the last one shorter, repeat-padded by the extractor), each window is embedded, and the clip's
embedding is the duration-weighted mean of the window embeddings, renormalised to unit length. The extractor also
marks a random clip of each batch as "longer" when none is; `is_longer` is set from the true window lengths
instead (always False), so fused and unfused checkpoints give batch-independent embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor, PreTrainedTokenizerBase

from audiodiff.evaluation.embedders.base import (
    WavBatch,
    freeze,
    make_id,
    module_device,
    prepare_clips,
    settings_digest,
    weights_digest,
)

_VERSION = 1  # bump when windowing or pooling changes, so cached embeddings are recomputed


def _features(value: Any) -> Tensor:
    """The tensor of a `get_*_features` result: transformers 5 returns a model output whose `pooler_output` holds
    the normalised projection; older versions return the tensor itself."""
    return value if isinstance(value, Tensor) else value.pooler_output


class ClapEmbedder:
    """CLAP as an `audiodiff.evaluation.embedders.Embedder` of audio, with `embed_text` for prompts.

    Embeddings are unit-length [N, P] float32 on the CPU (P = `model.config.projection_dim`), so the dot product
    of an audio and a text embedding is their cosine similarity (`clap_score`).

    Args:
        model: a `ClapModel`; frozen (eval mode, no gradients) here.
        feature_extractor: the model's `ClapFeatureExtractor` (sets the sample rate and the window length).
        tokenizer: the model's tokenizer (RoBERTa for the released checkpoints).
        batch_size: audio windows or texts per forward pass.
    """

    def __init__(self, model: ClapModel, feature_extractor: ClapFeatureExtractor, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"ClapEmbedder: batch_size must be >= 1, got {batch_size}")
        audio_bands = model.config.audio_config.num_mel_bins
        if feature_extractor.feature_size != audio_bands:
            raise ValueError(f"ClapEmbedder: the feature extractor makes {feature_extractor.feature_size} mel bands, "
                             f"the model's audio_config.num_mel_bins is {audio_bands}")
        self.model = freeze(model)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.embedding_dim = int(model.config.projection_dim)
        self.window = int(feature_extractor.nb_max_samples)
        extractor = {key: value for key, value in feature_extractor.to_dict().items()
                     if not key.startswith("_") and key != "processor_class"}
        settings = {"version": _VERSION, "fusion": bool(model.config.audio_config.enable_fusion),
                    "features": settings_digest(extractor)}
        self.id = make_id("clap-audio", settings, weights_digest(model))

    def _windows(self, clips: list[Tensor]) -> tuple[list[np.ndarray], list[int], list[int]]:
        """Consecutive windows of at most `self.window` samples: (windows, owning clip index, window length)."""
        windows, owners, lengths = [], [], []
        for index, clip in enumerate(clips):
            samples = clip[0].numpy().astype(np.float64)
            for start in range(0, samples.shape[0], self.window):
                piece = samples[start: start + self.window]
                windows.append(piece)
                owners.append(index)
                lengths.append(piece.shape[0])
        return windows, owners, lengths

    def _audio_batch(self, windows: list[np.ndarray]) -> Tensor:
        """Unit embeddings [B, P] of windows no longer than `self.window`."""
        # The extractor draws from numpy's global generator (its random "longer" pick); keep the caller's state.
        state = np.random.get_state()
        try:
            inputs = self.feature_extractor(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        finally:
            np.random.set_state(state)
        device = module_device(self.model)
        is_longer = torch.zeros(len(windows), 1, dtype=torch.bool, device=device)
        features = inputs["input_features"].to(device=device, dtype=next(self.model.parameters()).dtype)
        return _features(self.model.get_audio_features(input_features=features, is_longer=is_longer))

    @torch.no_grad()
    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips at `sample_rate` Hz (downmixed to mono, resampled with soxr) → unit embeddings [N, P]."""
        clips = prepare_clips(wavs, sample_rate, self.sample_rate, 1, "ClapEmbedder")
        windows, owners, lengths = self._windows(clips)
        sums = torch.zeros(len(clips), self.embedding_dim, dtype=torch.float64)
        for start in range(0, len(windows), self.batch_size):
            embeddings = self._audio_batch(windows[start: start + self.batch_size]).double().cpu()
            for row, window in enumerate(range(start, start + embeddings.shape[0])):
                sums[owners[window]] += lengths[window] * embeddings[row]
        return F.normalize(sums, dim=-1).float()

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Prompts → unit text embeddings [N, P] float32 on the CPU."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"ClapEmbedder.embed_text: expected a non-empty sequence of strings, got {texts!r}")
        device = module_device(self.model)
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start: start + self.batch_size]), padding=True, truncation=True,
                                    return_tensors="pt")
            features = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                    attention_mask=tokens["attention_mask"].to(device))
            outputs.append(_features(features).float().cpu())
        return torch.cat(outputs)


def clap_score(audio_emb: Tensor, text_emb: Tensor) -> Tensor:
    """Cosine similarity per pair: `audio_emb` [N, P] and `text_emb` [N, P] (row i of each belongs to prompt i) →
    [N] in [-1, 1], computed in float64. The reported CLAP score is its mean over the evaluation prompts."""
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError(f"clap_score: expected audio and text embeddings of the same shape [N, P], got "
                         f"{tuple(audio_emb.shape)} and {tuple(text_emb.shape)}")
    audio = F.normalize(audio_emb.double(), dim=-1)
    text = F.normalize(text_emb.double(), dim=-1)
    return (audio * text).sum(dim=-1)


def load_clap(name_or_path: str | Path, batch_size: int = 16, device: str | torch.device = "cpu") -> ClapEmbedder:
    """CLAP embedder from a transformers checkpoint: a local folder holding `config.json`, the weights, the
    feature extractor and tokenizer files, or a hub name such as "laion/clap-htsat-unfused" or
    "laion/larger_clap_music_and_speech" (fetched by transformers into its cache; no weights ship with audiodiff)."""
    processor = ClapProcessor.from_pretrained(str(name_or_path))
    model = ClapModel.from_pretrained(str(name_or_path))
    return ClapEmbedder(model.to(device), processor.feature_extractor, processor.tokenizer, batch_size)
