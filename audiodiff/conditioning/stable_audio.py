"""Stable Audio Open's conditioners (Evans et al. 2024, Section 3.3): the T5 token states, projected, and two learned
number embeddings of seconds_start and seconds_total, which serve both as extra cross-attention tokens and, side by
side, as the denoiser's global vector.

Matches diffusers' `StableAudioProjectionModel` and how `StableAudioPipeline` assembles its inputs:
- the text is always `text_tokens` (128) long: shorter captions are padded with zero states, because the DiT attends
  to the padding (it takes no cross-attention mask);
- a null caption (no real token: "" for classifier-free guidance) zeroes every cross-attention token, text and both
  seconds tokens, but keeps the global vector; a negative prompt is an ordinary caption and keeps its seconds tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from audiodiff.conditioning.types import Conditioning

STABLE_AUDIO_CONDITIONING_TARGET = "audiodiff.conditioning.stable_audio.StableAudioConditioning"


class NumberEmbedding(nn.Module):
    """A number in [min_value, max_value] (clamped) → [B, width]: v = (x - min) / (max - min), learned Fourier
    features [v, sin(2π v w), cos(2π v w)] (w: [features / 2], trained), then a Linear (stable-audio-tools'
    `NumberConditioner`)."""

    def __init__(self, width: int, min_value: float, max_value: float, features: int = 256) -> None:
        super().__init__()
        if features % 2 or max_value <= min_value:
            raise ValueError(f"NumberEmbedding: expected an even feature count and min_value < max_value, got "
                             f"{features}, {min_value}, {max_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.frequencies = nn.Parameter(torch.randn(features // 2))
        self.proj = nn.Linear(features + 1, width)

    def forward(self, values: Tensor) -> Tensor:
        """values: [B] (seconds) -> [B, width]."""
        v = (values.clamp(self.min_value, self.max_value) - self.min_value) / (self.max_value - self.min_value)
        v = v.to(self.frequencies.dtype)[:, None]
        phase = v * self.frequencies[None] * 2 * math.pi
        return self.proj(torch.cat([v, phase.sin(), phase.cos()], dim=-1))


class StableAudioConditioning(nn.Module):
    """Text states and seconds → the cross-attention sequence and the global vector of Stable Audio's DiT.

    text_dim: width of the text encoder's states (T5-base: 768); width: conditioning width (published 768; the text
    projection is the identity when the two are equal); min_seconds / max_seconds: the range the number embeddings
    resolve (published 0 and 512); text_tokens: the fixed text length (T5 padded to 128).
    Attributes the model builder reads: `dim` (the global vector's width, 2 · width) and `token_dim` (width).
    """

    def __init__(self, text_dim: int = 768, width: int = 768, min_seconds: float = 0.0, max_seconds: float = 512.0,
                 text_tokens: int = 128) -> None:
        super().__init__()
        self.text_tokens = text_tokens
        self.token_dim = width
        self.text_projection = nn.Identity() if text_dim == width else nn.Linear(text_dim, width)
        self.seconds_start = NumberEmbedding(width, min_seconds, max_seconds)
        self.seconds_total = NumberEmbedding(width, min_seconds, max_seconds)

    @property
    def dim(self) -> int:
        """Width of the global vector (seconds_start and seconds_total embeddings side by side)."""
        return 2 * self.token_dim

    def condition(self, cond: Conditioning, seconds_start: Tensor, seconds_total: Tensor) -> Conditioning:
        """cond: text tokens [B, N ≤ text_tokens, text_dim] and mask [B, N]; seconds_start, seconds_total: [B] s.
        Returns tokens [B, text_tokens + 2, width] (projected text zeroed at padding, then the two seconds tokens;
        all zero for a null caption), mask [B, text_tokens + 2] (True where a token is real) and globals_
        [B, 2 · width]."""
        if cond.tokens.shape[1] > self.text_tokens:
            raise ValueError(f"StableAudioConditioning: {cond.tokens.shape[1]} text tokens, expected at most "
                             f"{self.text_tokens} (the text encoder's max_length)")
        if seconds_start.shape != (cond.batch_size,) or seconds_total.shape != (cond.batch_size,):
            raise ValueError(f"StableAudioConditioning: seconds_start and seconds_total must be [B] = "
                             f"({cond.batch_size},), got {tuple(seconds_start.shape)}, {tuple(seconds_total.shape)}")
        text = cond.pad_tokens(self.text_tokens)
        weight = self.seconds_start.frequencies
        mask = text.mask.to(weight.device)
        tokens = self.text_projection(text.tokens.to(weight)) * mask[..., None].to(weight.dtype)
        start = self.seconds_start(seconds_start.to(weight.device))[:, None]             # [B, 1, W]
        total = self.seconds_total(seconds_total.to(weight.device))[:, None]
        real = mask.any(dim=1)                                                           # False: null caption
        tokens = torch.cat([tokens, start, total], dim=1) * real[:, None, None].to(weight.dtype)
        mask = torch.cat([mask, real[:, None].expand(-1, 2)], dim=1)
        return Conditioning(tokens, mask, None, torch.cat([start, total], dim=-1)[:, 0])
