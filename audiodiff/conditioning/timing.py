"""Timing conditioning (Stable Audio, Evans et al. 2024): where a training crop starts in its clip and how long the
clip is, so one model learns clips of any length up to its window and generates the length it is asked for.

Each of `seconds_start` and `seconds_total` is divided by `max_seconds` and expanded into Fourier features
[v, sin(2π k v), cos(2π k v)] for k = 1 … `harmonics`; the denoiser adds a Linear projection of them to its noise
embedding (`global_dim` = `dim`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from audiodiff.conditioning.types import Conditioning


class TimingConditioning:
    """Features of (seconds_start, seconds_total) for the denoiser's global input.

    max_seconds: the longest duration the features resolve (normally the training window); harmonics: Fourier
    frequencies per value.
    """

    def __init__(self, max_seconds: float, harmonics: int = 4) -> None:
        if max_seconds <= 0:
            raise ValueError(f"TimingConditioning.max_seconds: expected > 0, got {max_seconds}")
        if harmonics < 0:
            raise ValueError(f"TimingConditioning.harmonics: expected >= 0, got {harmonics}")
        self.max_seconds = float(max_seconds)
        self.harmonics = harmonics

    @property
    def dim(self) -> int:
        """Feature width: 2 values × (1 + 2 · harmonics)."""
        return 2 * (1 + 2 * self.harmonics)

    def features(self, seconds_start: Tensor, seconds_total: Tensor) -> Tensor:
        """seconds_start, seconds_total: [B] seconds -> [B, dim] float32."""
        if seconds_start.shape != seconds_total.shape or seconds_start.ndim != 1:
            raise ValueError(f"timing: seconds_start and seconds_total must both be [B], got "
                             f"{tuple(seconds_start.shape)} and {tuple(seconds_total.shape)}")
        v = torch.stack([seconds_start, seconds_total], dim=1).float() / self.max_seconds  # [B, 2]
        parts = [v]
        for k in range(1, self.harmonics + 1):
            parts += [torch.sin(2 * math.pi * k * v), torch.cos(2 * math.pi * k * v)]
        return torch.cat(parts, dim=1)

    def condition(self, cond: Conditioning, seconds_start: Tensor, seconds_total: Tensor) -> Conditioning:
        """cond with its global features set to `features(seconds_start, seconds_total)` ([B] seconds each)."""
        return replace(cond, globals_=self.features(seconds_start, seconds_total).to(cond.tokens.device))


def frame_mask(sample_mask: Tensor, frames: int) -> Tensor:
    """Latent-frame weights [B, 1, frames] from a waveform mask [B, T] (True on real audio): a frame counts if any
    of the samples it covers is real."""
    if sample_mask.ndim != 2:
        raise ValueError(f"frame_mask: expected a [B, T] sample mask, got {tuple(sample_mask.shape)}")
    return torch.nn.functional.adaptive_max_pool1d(sample_mask[:, None].float(), frames)
