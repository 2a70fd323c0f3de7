"""A small contrastive audio–text model (CLAP-style): audio tower, text projection, learnable temperature.

The audio tower turns a waveform into a log-mel spectrogram, standardises each band with batch normalisation
(PANNs' `bn0`, Kong et al., 2020), runs a 1D residual convolution stack over time (mel bands as channels), pools
the frames by their mean and maximum (PANNs' global pooling) and projects to `embed_dim`. The text side is a
trainable two-layer MLP on the mean-pooled states of a frozen sentence encoder (MiniLM by default), which lives
outside this module (see `audiodiff.conditioning.text.TextEncoder`). Both embeddings are L2-normalised; their dot
product, scaled by a learnable inverse temperature, gives the logits of the symmetric InfoNCE loss of CLIP
(Radford et al., 2021) as used for audio by CLAP (Elizalde et al., ICASSP 2023; Wu et al., ICASSP 2023).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.audio.mel import MelSpectrogram, log_compress


@dataclass(frozen=True)
class ContrastiveConfig:
    """Sizes and audio front end of a :class:`ContrastiveModel` (the `model` node of conf/embedder.yaml)."""

    sample_rate: int = 16000          # Hz of the audio the tower reads
    segment_seconds: float = 4.0      # training clip length; inference pads or windows audio to it
    n_fft: int = 1024
    hop_length: int = 256             # 62.5 frames per second at 16 kHz
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = 8000.0
    log_floor: float = 1e-5           # natural log of max(mel power, floor)
    channels: tuple[int, ...] = (128, 192, 256)  # one residual stage each; every stage halves the frame rate
    stem_kernel: int = 5              # frames seen by the first convolution
    embed_dim: int = 256              # E, the joint space
    text_hidden: int = 512            # hidden width of the text projection MLP
    init_temperature: float = 0.07    # CLIP's initial softmax temperature
    max_logit_scale: float = 100.0    # CLIP's clamp on 1 / temperature

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"ContrastiveConfig.channels: expected one or more positive widths, got {self.channels}")
        if self.segment_seconds <= 0 or self.sample_rate <= 0:
            raise ValueError(f"ContrastiveConfig: sample_rate and segment_seconds must be > 0, got "
                             f"{self.sample_rate} Hz and {self.segment_seconds} s")
        if not (self.init_temperature > 0 and 1 / self.init_temperature <= self.max_logit_scale):
            raise ValueError(f"ContrastiveConfig: init_temperature must be >= 1 / max_logit_scale, got "
                             f"{self.init_temperature} with max_logit_scale={self.max_logit_scale}")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"ContrastiveConfig.stem_kernel: expected an odd positive size, got {self.stem_kernel}")

    @property
    def segment_samples(self) -> int:
        """Samples in one training segment, `round(segment_seconds * sample_rate)`."""
        return round(self.segment_seconds * self.sample_rate)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model config") -> ContrastiveConfig:
        """Build from a plain mapping, naming unknown keys (a typo must not silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown ContrastiveConfig fields {unknown}; expected a subset of "
                             f"{sorted(known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), for YAML and checkpoints."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out


class _ResBlock1d(nn.Module):
    """conv3 → BN → GELU → conv3 → BN, plus a (strided 1×1 conv + BN) shortcut, then GELU (He et al., 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.bn1(self.conv1(x)))
        return F.gelu(self.bn2(self.conv2(h)) + self.skip(x))


class AudioTower(nn.Module):
    """Mono waveform [B, T] at `sample_rate` Hz → unit audio embedding [B, E].

    Every frame of the input counts in the pooling, so a clip's embedding depends on how much silence pads it;
    training clips shorter than the segment are zero-padded to it, and so is inference audio
    (:class:`audiodiff.evaluation.embedders.contrastive.embedder.ContrastiveEmbedder`).
    """

    def __init__(self, config: ContrastiveConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = MelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, n_mels=config.n_mels,
                                  f_min=config.f_min, f_max=config.f_max)
        self.bn0 = nn.BatchNorm1d(config.n_mels)
        width = config.channels[0]
        self.stem = nn.Sequential(
            nn.Conv1d(config.n_mels, width, config.stem_kernel, padding=config.stem_kernel // 2, bias=False),
            nn.BatchNorm1d(width), nn.GELU())
        stages = []
        for out in config.channels:
            stages.append(_ResBlock1d(width, out, stride=2))
            width = out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.GELU(), nn.Linear(2 * width, config.embed_dim))

    def log_mel(self, wav: Tensor) -> Tensor:
        """wav [B, T] → natural-log mel power [B, n_mels, frames] (frames = 1 + T // hop_length)."""
        return log_compress(self.mel(wav), self.config.log_floor)

    def forward(self, wav: Tensor) -> Tensor:
        """wav [B, T] (mono, at `sample_rate` Hz) → unit embeddings [B, E]."""
        if wav.ndim != 2:
            raise ValueError(f"AudioTower: expected mono audio [B, T], got shape {tuple(wav.shape)}")
        h = self.stages(self.stem(self.bn0(self.log_mel(wav))))  # [B, C, frames / 2^stages]
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)
        return F.normalize(self.head(pooled), dim=-1)


class TextProjection(nn.Module):
    """Pooled sentence-encoder states [B, D] → unit text embedding [B, E] (Linear → GELU → Linear)."""

    def __init__(self, text_dim: int, config: ContrastiveConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_dim, config.text_hidden), nn.GELU(),
                                 nn.Linear(config.text_hidden, config.embed_dim))

    def forward(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.net(pooled), dim=-1)


class ContrastiveModel(nn.Module):
    """Audio tower, text projection and the learnable log inverse temperature `logit_scale` (CLIP).

    text_dim: width D of the frozen text encoder's pooled states (384 for MiniLM).
    """

    def __init__(self, config: ContrastiveConfig, text_dim: int) -> None:
        super().__init__()
        if text_dim < 1:
            raise ValueError(f"ContrastiveModel: text_dim must be >= 1, got {text_dim}")
        self.config = config
        self.text_dim = text_dim
        self.audio = AudioTower(config)
        self.text = TextProjection(text_dim, config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    def scale(self) -> Tensor:
        """1 / temperature: exp(logit_scale) clamped at `max_logit_scale` (CLIP's clamp at 100)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def forward(self, wav: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """wav [B, T], pooled text states [B, D] → (audio embeddings [B, E], text embeddings [B, E]), unit rows."""
        return self.audio(wav), self.text(pooled)


def info_nce(audio_emb: Tensor, text_emb: Tensor, scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al., 2021, Fig. 3; CLAP, Elizalde et al., 2023, eq. 2).

    audio_emb, text_emb: [B, E] unit rows, row i of each from the same pair. With logits L = scale · A Tᵀ [B, B],
    the loss is ½ (CE(L, diag) + CE(Lᵀ, diag)): mean cross-entropy of picking the right caption for each clip and
    the right clip for each caption among the B in the batch. Returns a scalar; log B at chance.
    """
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError(f"info_nce: expected audio and text embeddings of one shape [B, E], got "
                         f"{tuple(audio_emb.shape)} and {tuple(text_emb.shape)}")
    logits = scale * audio_emb @ text_emb.T
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
