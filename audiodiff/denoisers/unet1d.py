"""1D U-Net denoiser over latent sequences `x: [B, D, L]` with text cross-attention.

Follows the denoiser contract `F(x [B, D, L], noise_level [B], cond) -> [B, D, L]`: a pure network with no
schedule math; the diffusion objective decides what `noise_level` means (flow time in [0, 1], log-sigma / 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers.checks import check_latents, check_noise_level, global_inputs, text_context
from audiodiff.nn.attention import CrossAttention1d, SelfAttention1d
from audiodiff.nn.blocks import Downsample1d, ResBlock1d, Upsample1d, group_norm, zero_module
from audiodiff.nn.embeddings import TimestepEmbedding


class _Stage(nn.Module):
    """`n_blocks` x ResBlock1d at one resolution, then optionally SelfAttention1d [-> CrossAttention1d]."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, emb_dim: int, dropout: float, attention: bool,
                 heads: int, context_dim: int, cross_attention: bool, rope_base: float | None) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock1d(in_ch if j == 0 else out_ch, out_ch, emb_dim, dropout)
                                 for j in range(n_blocks))
        self.self_attn = SelfAttention1d(out_ch, heads, rope_base) if attention else None
        self.cross_attn = (CrossAttention1d(out_ch, context_dim, heads) if attention and cross_attention
                           else None)

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, mask: Tensor | None,
                key_mask: Tensor | None) -> Tensor:
        for res in self.res:
            h = res(h, emb)
        if self.self_attn is not None:
            h = self.self_attn(h, key_mask)
        if self.cross_attn is not None:
            assert context is not None
            h = self.cross_attn(h, context, mask)
        return h


class _Middle(nn.Module):
    """ResBlock -> SelfAttention [-> CrossAttention] -> ResBlock at the coarsest resolution."""

    def __init__(self, ch: int, emb_dim: int, dropout: float, heads: int, context_dim: int,
                 cross_attention: bool, rope_base: float | None) -> None:
        super().__init__()
        self.res1 = ResBlock1d(ch, ch, emb_dim, dropout)
        self.self_attn = SelfAttention1d(ch, heads, rope_base)
        self.cross_attn = CrossAttention1d(ch, context_dim, heads) if cross_attention else None
        self.res2 = ResBlock1d(ch, ch, emb_dim, dropout)

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, mask: Tensor | None,
                key_mask: Tensor | None) -> Tensor:
        h = self.self_attn(self.res1(h, emb), key_mask)
        if self.cross_attn is not None:
            assert context is not None
            h = self.cross_attn(h, context, mask)
        return self.res2(h, emb)


class UNet1d(nn.Module):
    """1D U-Net with FiLM noise-level conditioning, self-attention and text cross-attention.

    Level i works at `channels * channel_mults[i]` channels and `L / (patch * 2**i)` frames; each level has
    `blocks_per_level` residual blocks in the encoder and in the decoder, joined by one skip connection per
    level. Levels listed in `attn_levels` and the middle block add self-attention over frames and
    cross-attention to the text tokens (once per level, after its residual blocks). The noise level goes
    through sinusoidal features (times `noise_level_scale`) and an MLP into an `emb_dim`-wide embedding
    (default `channels`); Linear projections of the pooled text embedding (`pooled_dim`) and of global
    features (`global_dim`) are added to it, and every residual block reads it as a scale and shift.
    The input is zero-padded on the right to a multiple of `patch * 2**(levels - 1)` (padding frames are
    masked out of self-attention) and the output cropped back, so any L >= 1 works. With `rotary`, self-attention
    adds rotary positions (base `rope_base`), so it can attend by distance in frames, e.g. one beat back.

    Worked example, defaults with in_channels=64 (64-band log-mel), 2 s at 125 frames/s (L = 250), batch 32,
    MiniLM tokens (context_dim 384): 8.38 M parameters (8.43 M with pooled_dim=384).
        x [32, 64, 250] -> pad to 252 (multiple of 4) -> input conv [32, 128, 252]
        encoder  level 0: [32, 128, 252] (skip 0) -> down [32, 128, 126]
                 level 1: [32, 256, 126] (skip 1) -> down [32, 256, 63]
                 level 2: [32, 256, 63] + attention (skip 2); middle: [32, 256, 63] + attention
        decoder  level 2: cat skip 2 [32, 512, 63] -> [32, 256, 63] + attention -> up [32, 256, 126]
                 level 1: cat skip 1 [32, 512, 126] -> [32, 256, 126] -> up [32, 256, 252]
                 level 0: cat skip 0 [32, 384, 252] -> [32, 128, 252]
        output conv [32, 64, 252] -> crop -> [32, 64, 250]
    With patch=2 the input pads to 256 and the levels run on 128, 64 and 32 frames, about half the cost.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2),
        blocks_per_level: int = 2,
        attn_levels: Sequence[int] = (2,),
        heads: int = 4,
        context_dim: int = 384,
        pooled_dim: int | None = None,
        global_dim: int | None = None,
        dropout: float = 0.0,
        cross_attention: bool = True,
        patch: int = 1,
        gradient_checkpointing: bool = False,
        emb_dim: int | None = None,
        noise_level_scale: float = 1000.0,
        rotary: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        attn = tuple(int(a) for a in attn_levels)
        if in_channels < 1 or channels < 1 or blocks_per_level < 1 or patch < 1 or not mults:
            raise ValueError("UNet1d: in_channels, channels, blocks_per_level, patch must be >= 1 and "
                             f"channel_mults non-empty, got {in_channels}, {channels}, {blocks_per_level}, "
                             f"{patch}, {mults}")
        if any(a < 0 or a >= len(mults) for a in attn):
            raise ValueError(f"UNet1d: attn_levels must lie in [0, {len(mults) - 1}], got {attn}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch = patch
        self.levels = len(mults)
        self.context_dim = context_dim
        self.pooled_dim = pooled_dim
        self.global_dim = global_dim
        self.cross_attention = cross_attention
        self.gradient_checkpointing = gradient_checkpointing
        widths = [channels * m for m in mults]
        emb_dim = emb_dim or channels

        self.time_embed = TimestepEmbedding(channels, emb_dim, scale=noise_level_scale)
        self.pooled_proj = nn.Linear(pooled_dim, emb_dim) if pooled_dim else None
        self.global_proj = nn.Linear(global_dim, emb_dim) if global_dim else None

        if patch == 1:
            self.input = nn.Conv1d(in_channels, widths[0], 3, padding=1)
        else:
            self.input = nn.Conv1d(in_channels, widths[0], patch, stride=patch)

        stage_args = dict(emb_dim=emb_dim, dropout=dropout, heads=heads, context_dim=context_dim,
                          cross_attention=cross_attention, rope_base=rope_base if rotary else None)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = widths[0]
        for i, width in enumerate(widths):
            self.down.append(_Stage(prev, width, blocks_per_level, attention=i in attn, **stage_args))
            if i < self.levels - 1:
                self.downsample.append(Downsample1d(width))
            prev = width
        self.middle = _Middle(prev, **stage_args)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                self.upsample.append(Upsample1d(prev))
            self.up.append(_Stage(prev + widths[i], widths[i], blocks_per_level, attention=i in attn,
                                  **stage_args))
            prev = widths[i]
        self.out_norm = group_norm(widths[0])
        self.out_conv = zero_module(nn.Conv1d(widths[0], self.out_channels * patch, 3, padding=1))

    @property
    def length_multiple(self) -> int:
        """Frame counts are padded internally to a multiple of this."""
        return self.patch * 2 ** (self.levels - 1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with requires_grad when `trainable_only`)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _embed(self, noise_level: Tensor, cond: Conditioning | None, batch: int) -> Tensor:
        check_noise_level("UNet1d", noise_level, batch)
        emb = self.time_embed(noise_level)
        pooled, globals_ = global_inputs("UNet1d", cond, batch, self.pooled_dim, self.global_dim)
        if self.pooled_proj is not None:
            emb = emb + self.pooled_proj(pooled.to(emb.dtype))
        if self.global_proj is not None:
            emb = emb + self.global_proj(globals_.to(emb.dtype))
        return emb

    def _context(self, cond: Conditioning | None, batch: int) -> tuple[Tensor | None, Tensor | None]:
        if not self.cross_attention:
            return None, None
        return text_context("UNet1d", cond, batch, self.context_dim)

    def _run(self, module: nn.Module, *args: Tensor | None) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Conditioning | None = None) -> Tensor:
        """Denoiser output for noisy latents.

        x: [B, in_channels, L]; noise_level: [B] float; cond: tokens [B, N, context_dim] and mask [B, N] bool
        (when cross_attention), pooled [B, pooled_dim] and globals_ [B, global_dim] (when configured).
        Returns [B, out_channels, L].
        """
        check_latents("UNet1d", x, self.in_channels)
        batch, _, length = x.shape
        emb = self._embed(noise_level, cond, batch)
        context, mask = self._context(cond, batch)

        pad = -length % self.length_multiple
        h = self.input(nn.functional.pad(x, (0, pad)) if pad else x)
        valid = -(-length // self.patch)                                   # real frames at level 0

        def key_mask(frames: int, level: int) -> Tensor | None:
            if not pad:
                return None
            real = -(-valid // 2**level)
            return torch.arange(frames, device=x.device) < real

        skips = []
        for i, stage in enumerate(self.down):
            h = self._run(stage, h, emb, context, mask, key_mask(h.shape[-1], i))
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        h = self._run(self.middle, h, emb, context, mask, key_mask(h.shape[-1], self.levels - 1))
        for k, stage in enumerate(self.up):
            i = self.levels - 1 - k
            if i < self.levels - 1:
                h = self.upsample[k - 1](h)
            h = torch.cat([h, skips[i]], dim=1)
            h = self._run(stage, h, emb, context, mask, key_mask(h.shape[-1], i))
        h = self.out_conv(nn.functional.silu(self.out_norm(h)))           # [B, out * patch, L' / patch]
        if self.patch > 1:
            b, _, frames = h.shape
            h = h.view(b, self.out_channels, self.patch, frames).transpose(2, 3)
            h = h.reshape(b, self.out_channels, frames * self.patch)
        return h[..., :length]
