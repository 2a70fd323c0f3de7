"""Stable Audio 3's conditioners: the T5Gemma token states (no projection) and one number embedding of the
requested duration (seconds_total), which serves both as the denoiser's global (adaptive-norm) vector and as an
extra cross-attention token after the text.

Matches diffusers' `StableAudio3DurationEmbedder` and how `StableAudio3Pipeline` assembles its inputs:
- the text is `text_tokens` (256) long with its mask passed on; the DiT replaces masked positions by a learned
  padding vector;
- the null caption of classifier-free guidance is the encoded empty string (the text encoder's `encode_empty`),
  not zeros, and keeps its duration token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiodiff.conditioning.types import Conditioning
from audiodiff.nn.differential import expo_fourier, expo_frequencies

STABLE_AUDIO3_CONDITIONING_TARGET = "audiodiff.conditioning.stable_audio3.StableAudio3Conditioning"


class DurationEmbedding(nn.Module):
    """Seconds in [min_seconds, max_seconds] (clamped) → [B, width]: v = (x - min) / (max - min), fixed
    exponentially spaced Fourier features of v (stable-audio-tools' `NumberConditioner` with
    fourier_features_type="expo"), then a Linear."""

    def __init__(self, width: int, min_seconds: float, max_seconds: float, features: int = 256) -> None:
        super().__init__()
        if features % 2 or max_seconds <= min_seconds:
            raise ValueError(f"DurationEmbedding: expected an even feature count and min_seconds < max_seconds, got "
                             f"{features}, {min_seconds}, {max_seconds}")
        self.min_seconds, self.max_seconds = float(min_seconds), float(max_seconds)
        self.register_buffer("frequencies", expo_frequencies(features))
        self.proj = nn.Linear(features, width)

    def forward(self, seconds: Tensor) -> Tensor:
        """seconds: [B] -> [B, width]."""
        v = (seconds.float().clamp(self.min_seconds, self.max_seconds) - self.min_seconds) / (
            self.max_seconds - self.min_seconds)
        return self.proj(expo_fourier(v, self.frequencies).to(self.proj.weight.dtype))


class StableAudio3Conditioning(nn.Module):
    """Text states and the requested duration → the cross-attention sequence and the global vector of Stable
    Audio 3's DiT.

    text_dim: width of the text encoder's states (T5Gemma-b: 768), which is also the token and global width;
    min_seconds / max_seconds: the duration embedding's range (published 0 and 384); text_tokens: the fixed text
    length (256); features: the duration's Fourier features.
    Attributes the model builder reads: `dim` (global width) and `token_dim` (cross-attention token width). The
    model samples the requested length itself rather than a fixed window (`fixed_window` False).
    """

    fixed_window = False

    def __init__(self, text_dim: int = 768, min_seconds: float = 0.0, max_seconds: float = 384.0,
                 text_tokens: int = 256, features: int = 256) -> None:
        super().__init__()
        self.text_tokens = text_tokens
        self.token_dim = text_dim
        self.max_seconds = float(max_seconds)
        self.seconds_total = DurationEmbedding(text_dim, min_seconds, max_seconds, features)

    @property
    def dim(self) -> int:
        """Width of the global vector (the duration embedding)."""
        return self.token_dim

    def condition(self, cond: Conditioning, seconds_start: Tensor, seconds_total: Tensor) -> Conditioning:
        """cond: text tokens [B, N ≤ text_tokens, text_dim] and mask [B, N]; seconds_total: [B] s (seconds_start is
        not used by this model). Returns tokens [B, text_tokens + 1, text_dim] (the text, zero-padded, then the
        duration token), mask [B, text_tokens + 1] (True where a token is real; the duration token always is) and
        globals_ [B, text_dim] (the duration embedding)."""
        if cond.tokens.shape[1] > self.text_tokens:
            raise ValueError(f"StableAudio3Conditioning: {cond.tokens.shape[1]} text tokens, expected at most "
                             f"{self.text_tokens} (the text encoder's max_length)")
        if seconds_total.shape != (cond.batch_size,):
            raise ValueError(f"StableAudio3Conditioning: seconds_total must be [B] = ({cond.batch_size},), got "
                             f"{tuple(seconds_total.shape)}")
        weight = self.seconds_total.proj.weight
        text = cond.pad_tokens(self.text_tokens)
        duration = self.seconds_total(seconds_total.to(weight.device))                    # [B, W]
        tokens = torch.cat([text.tokens.to(weight), duration[:, None]], dim=1)
        mask = torch.cat([text.mask.to(weight.device), text.mask.new_ones(cond.batch_size, 1).to(weight.device)],
                         dim=1)
        return Conditioning(tokens, mask, None, duration, cond.local)
