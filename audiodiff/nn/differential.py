"""Layers of Stable Audio 3's networks (its DiT, its SAME autoencoder and its duration embedding): RMS norm in
float32, exponentially spaced Fourier features, partial rotary positions and differential attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight over the last dimension, computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.float()).to(x.dtype)


def expo_frequencies(dim: int, min_freq: float = 0.5, max_freq: float = 10000.0) -> Tensor:
    """dim / 2 frequencies spaced evenly in log between min_freq and max_freq, float32 [dim / 2]."""
    ramp = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float32)
    return torch.exp(ramp * (math.log(max_freq) - math.log(min_freq)) + math.log(min_freq))


def expo_fourier(values: Tensor, frequencies: Tensor) -> Tensor:
    """[cos(2π v f), sin(2π v f)] for the frequencies f [F] of `expo_frequencies` (stable-audio-tools'
    `ExpoFourierFeatures`). values: [B] -> [B, 2F] float32."""
    phase = values.float()[:, None] * frequencies.to(values.device, torch.float32) * 2.0 * math.pi
    return torch.cat([phase.cos(), phase.sin()], dim=-1)


def rotate_partial(x: Tensor, angles: Tensor) -> Tensor:
    """Rotary positions (Su et al. 2021, halves convention) on the first R = angles.shape[-1] channels of
    x [B, H, N, Dh]; angles: [N, R] radians (each frequency twice). The rest pass through. Computed in float32."""
    r = angles.shape[-1]
    part = x[..., :r].float()
    a, b = part.unflatten(-1, (2, -1)).unbind(-2)
    rotated = part * angles.cos() + torch.cat([-b, a], dim=-1) * angles.sin()
    return torch.cat([rotated.to(x.dtype), x[..., r:]], dim=-1)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, H·Dh] -> [B, H, N, Dh]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def differential_attention(q: tuple[Tensor, ...], k: tuple[Tensor, ...], v: Tensor,
                           mask: Tensor | None = None) -> Tensor:
    """softmax(q1 k1ᵀ/√d) v - softmax(q2 k2ᵀ/√d) v (Ye et al. 2024, without their λ and group norm, as Stable
    Audio 3 uses it), or plain attention for one query/key pair. [B, H, N, Dh] each; mask: broadcastable to
    [B, H, N, M] (bool True = attend, or additive). Returns [B, N, H·Dh]."""
    out = F.scaled_dot_product_attention(q[0], k[0], v, attn_mask=mask)
    if len(q) == 2:
        out = out - F.scaled_dot_product_attention(q[1], k[1], v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)
