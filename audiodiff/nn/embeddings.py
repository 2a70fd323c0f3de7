"""Embeddings of a scalar per sample (noise level, flow time) for conditioning a network."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal features of a scalar per sample (Vaswani et al. 2017; Ho et al. 2020).

    The input is multiplied by `scale` first, so with the default 1000 a value in [0, 1] spans the same
    frequencies as an integer DDPM step in [0, 1000]. Output: `[cos(s·t·f_k), sin(s·t·f_k)]` with
    f_k = 10000^(-k / (dim/2)), k = 0 … dim/2 - 1; an odd `dim` gets one trailing zero feature.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be >= 2, got {dim}")
        self.dim = dim
        self.scale = float(scale)
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """t: [B] float (any real value; `scale`·t is the phase unit) -> [B, dim] float32."""
        if t.ndim != 1:
            raise ValueError(f"SinusoidalEmbedding: expected t of shape [B], got {tuple(t.shape)}")
        args = (t.to(torch.float32) * self.scale)[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb


class TimestepEmbedding(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear -> SiLU: a learned embedding of the noise level.

    dim: width of the sinusoidal features; hidden: output width (the network's conditioning width).
    The output is already activated, so consumers apply a plain Linear to it.
    """

    def __init__(self, dim: int, hidden: int, scale: float = 1000.0) -> None:
        super().__init__()
        self.sinusoid = SinusoidalEmbedding(dim, scale=scale)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.out_dim = hidden

    def forward(self, t: Tensor) -> Tensor:
        """t: [B] noise level -> [B, hidden]."""
        return self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))
