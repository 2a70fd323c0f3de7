"""What every audio embedder shares: the protocols, input preparation, batching and the identity string.

An embedder maps clips at any sample rate to one vector per clip. Input is either a sequence of tensors
[C, T_i] (clips of any length and channel count) or a batch tensor [B, C, T], all at `sample_rate` Hz; each
embedder downmixes to the channels its reference implementation uses and resamples to its own rate with soxr
(`audiodiff.audio.transforms.resample`), then runs its network under `torch.no_grad()` in batches.

Identity. `id` names everything that changes the output — model, frontend settings and a SHA-256 of the weights
(`weights_digest`) — so `audiodiff.evaluation.embedding_cache.EmbeddingCache` never mixes two checkpoints. The other
outputs of an embedder (per-frame embeddings, class probabilities) have ids of their own (`frames_id`,
`classify_id`), since one cache entry holds one kind of output.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from audiodiff.audio.transforms import resample, to_channels
from audiodiff.evaluation.classifier_scores import ProbabilityMode
from audiodiff.utils.hashing import WEIGHTS_HEADER, json_sha256, tensors_sha256

WavBatch = Tensor | Sequence[Tensor]  # [B, C, T], or B tensors [C, T_i] of any lengths


@runtime_checkable
class Embedder(Protocol):
    """One embedding per clip.

    id: identity string for caches (name, settings and weights hash).
    sample_rate: Hz the network runs at; inputs at other rates are resampled.
    embedding_dim: E.
    embed(wavs, sample_rate): clips (see `WavBatch`) at `sample_rate` Hz → [N, E] float32 on the CPU.
    """

    @property
    def id(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def embedding_dim(self) -> int: ...

    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor: ...


@runtime_checkable
class FrameEmbedder(Embedder, Protocol):
    """An embedder whose network produces a sequence of frame embeddings per clip (VGGish, EnCodec).

    embed_frames(wavs, sample_rate): list of N tensors [F_i, E]; `embed` is their mean over frames. The classic FAD
    (Kilgour et al., 2019) pools the frames of all clips into one set; cache them under `frames_id`.
    """

    @property
    def frames_id(self) -> str: ...

    def embed_frames(self, wavs: WavBatch, sample_rate: int) -> list[Tensor]: ...


@runtime_checkable
class Classifier(Embedder, Protocol):
    """An embedder that is also a tagger: class probabilities for Inception Score and KL.

    classify(wavs, sample_rate): [N, K] probabilities, rows summing to 1 when `probability_mode` is "softmax",
    independent per-class probabilities when it is "sigmoid" (see `audiodiff.evaluation.classifier_scores`).
    Cache them under `classify_id`.
    """

    @property
    def classify_id(self) -> str: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def probability_mode(self) -> ProbabilityMode: ...

    def classify(self, wavs: WavBatch, sample_rate: int) -> Tensor: ...


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 hex digest of `module`'s state dict: every entry's name, dtype, shape and bytes, in name order.

    Persistent buffers (batch-norm statistics, codebooks) count; non-persistent ones derive from the constructor
    arguments and belong in the settings part of an id instead.
    """
    return tensors_sha256(module.state_dict(), WEIGHTS_HEADER)


def settings_digest(settings: Mapping[str, object]) -> str:
    """Short SHA-256 (16 hex digits) of a JSON-serialisable settings mapping, keys sorted."""
    return json_sha256(settings)[:16]


def make_id(name: str, settings: Mapping[str, object], digest: str) -> str:
    """`name(key=value,...)@sha256:<first 16 hex digits of the weights digest>`, settings in key order."""
    listed = ",".join(f"{key}={settings[key]}" for key in sorted(settings))
    return f"{name}({listed})@sha256:{digest[:16]}"


def channel_handling(embedder: object) -> str:
    """How `embedder` treats multichannel audio, for report cards: "mean downmix to mono" (VGGish, PANNs, CLAP, the
    contrastive embedder, as their references do) or "N channels embedded together" (an embedder whose model takes
    N channels, such as a stereo EnCodec; a mono clip is duplicated into them)."""
    channels = int(getattr(embedder, "channels", 1))
    return "mean downmix to mono" if channels == 1 else f"{channels} channels embedded together"


def prepare_clips(wavs: WavBatch, sample_rate: int, target_rate: int, channels: int, caller: str) -> list[Tensor]:
    """Check clips, convert them to `channels` and resample them to `target_rate` Hz.

    Args:
        wavs: a batch tensor [B, C, T] or a sequence of tensors [C, T_i], floating point, finite, T_i >= 1.
        sample_rate: Hz of the input (> 0).
        target_rate: Hz of the output.
        channels: 1 downmixes by the channel mean (as the VGGish, PANNs and CLAP references do); a mono clip is
            duplicated to any count (`audiodiff.audio.transforms.to_channels`).
        caller: named in error messages.

    Returns:
        B float32 CPU tensors [channels, T_i'] at `target_rate` Hz (soxr HQ).
    """
    if sample_rate <= 0:
        raise ValueError(f"{caller}: sample_rate must be a positive number of Hz, got {sample_rate}")
    if isinstance(wavs, Tensor):
        if wavs.ndim != 3:
            raise ValueError(f"{caller}: a batch tensor must be [B, C, T], got shape {tuple(wavs.shape)}; "
                             "pass a list of [C, T] tensors for clips of different lengths")
        clips = list(wavs.unbind(0))
    else:
        clips = list(wavs)
    if not clips:
        raise ValueError(f"{caller}: got no clips")
    prepared = []
    for index, wav in enumerate(clips):
        if not isinstance(wav, Tensor) or wav.ndim != 2:
            shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
            raise ValueError(f"{caller}: clip {index} must be a tensor [C, T], got {shape}")
        if not torch.is_floating_point(wav):
            raise ValueError(f"{caller}: clip {index} must hold floating-point samples, got dtype {wav.dtype}")
        if wav.shape[-1] == 0 or wav.shape[0] == 0:
            raise ValueError(f"{caller}: clip {index} is empty, shape {tuple(wav.shape)}")
        wav = wav.detach().to(device="cpu", dtype=torch.float32)
        if not bool(torch.isfinite(wav).all()):
            raise ValueError(f"{caller}: clip {index} holds NaN or inf samples")
        wav = to_channels(wav, channels)
        if sample_rate != target_rate:
            wav = resample(wav, sample_rate, target_rate)
        prepared.append(wav.contiguous())
    return prepared


def batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices of clips grouped by equal length, in chunks of at most `batch_size`.

    For networks whose output depends on the input length (global pooling without a mask), only clips of equal
    length may share a batch; zero-padding would change their embeddings.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(length, []).append(index)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start: start + batch_size]


def pad_to(wav: Tensor, length: int) -> Tensor:
    """`wav` [..., T] zero-padded at the end to at least `length` samples."""
    if wav.shape[-1] >= length:
        return wav
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of `module`'s first parameter or buffer (CPU when it has none)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """`module` in eval mode with gradients off (dropout and batch-norm updates disabled)."""
    return module.eval().requires_grad_(False)
