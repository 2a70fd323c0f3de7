"""Residual and resampling blocks over sequences `x: [B, C, L]` (L frames)."""

from __future__ import annotations

import math

from torch import Tensor, nn


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `max_groups` that divides `channels`."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero in place and return it (the block starts as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock1d(nn.Module):
    """GroupNorm -> SiLU -> Conv -> GroupNorm -> FiLM(emb) -> SiLU -> Dropout -> Conv (zero-init), plus skip.

    The conditioning embedding `emb: [B, emb_dim]` is projected to a per-channel scale and shift applied after
    the second norm, `h = norm(h) * (1 + scale) + shift` (adaptive GroupNorm; Dhariwal & Nichol 2021, sec. 3).
    The last convolution starts at zero, so a fresh block is the identity (or its 1x1 skip).

    x: [B, in_ch, L] -> [B, out_ch, L]; any L >= 1 (odd `kernel` keeps the length).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"ResBlock1d: kernel must be odd to keep the length, got {kernel}")
        pad = kernel // 2
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, padding=pad)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv1d(out_ch, out_ch, kernel, padding=pad))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv1d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: [B, in_ch, L], emb: [B, emb_dim] -> [B, out_ch, L]."""
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(nn.functional.silu(h)))
        return self.skip(x) + h


class Downsample1d(nn.Module):
    """Stride-2 convolution (kernel 3): [B, C, L] -> [B, out_ch, ceil(L / 2)]."""

    def __init__(self, channels: int, out_ch: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, out_ch or channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Nearest-neighbour x2 then a kernel-3 convolution: [B, C, L] -> [B, out_ch, 2 L]."""

    def __init__(self, channels: int, out_ch: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, out_ch or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
