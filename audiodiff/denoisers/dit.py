"""Diffusion transformer over time (Peebles & Xie 2023, adapted to 1D latents as in Stable Audio).

Follows the denoiser contract `F(x [B, D, L], noise_level [B], cond) -> [B, D, L]`, like `UNet1d`.

Each block: adaLN-zero self-attention with rotary positions, pre-norm cross-attention to the text tokens (masked),
adaLN-zero MLP. The noise level, the pooled caption embedding and global features (e.g. timing) are summed into
one conditioning vector that drives every block's shift, scale and gate. Attention runs through
`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels where the device has them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers.checks import check_latents, check_noise_level, global_inputs, text_context
from audiodiff.nn.attention import apply_rotary, merge_heads, rotary_tables, split_heads
from audiodiff.nn.embeddings import TimestepEmbedding


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """One transformer block on tokens h [B, N, W] with conditioning vector c [B, W]."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, cross_attention: bool = True,
                 qk_norm: bool = True) -> None:
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_out = nn.Linear(width, width)
        self.cross_attention = cross_attention
        if cross_attention:
            self.norm2 = nn.LayerNorm(width, eps=1e-6)
            self.cross_q = nn.Linear(width, width)
            self.cross_kv = nn.Linear(width, 2 * width)
            self.cross_out = nn.Linear(width, width)
            nn.init.zeros_(self.cross_out.weight)
            nn.init.zeros_(self.cross_out.bias)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, c: Tensor, rope: tuple[Tensor, Tensor], context: Tensor | None,
                mask: Tensor | None) -> Tensor:
        """h: [B, N, W]; c: [B, W]; rope: cos, sin [N, W / heads]; context: [B, T, W] or None;
        mask: [B, T] bool (True = real token) or None. Returns [B, N, W]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None, :].chunk(6, dim=-1)
        x = _modulate(self.norm1(h), shift1, scale1)
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = apply_rotary(self.q_norm(q), *rope), apply_rotary(self.k_norm(k), *rope)
        h = h + gate1 * self.attn_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        if self.cross_attention and context is not None and context.shape[1] > 0:
            h = h + self._cross(self.norm2(h), context, mask)
        return h + gate2 * self.mlp(_modulate(self.norm3(h), shift2, scale2))

    def _cross(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.cross_q(x), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.cross_kv(context).chunk(2, dim=-1))
        attn_mask = has_token = None
        if mask is not None:
            has_token = mask.any(dim=1)  # a row with no real token (dropped caption) must contribute nothing
            attn_mask = (mask | ~has_token[:, None])[:, None, None, :]
        out = self.cross_out(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))
        return out if has_token is None else out.masked_fill(~has_token[:, None, None], 0.0)


class DiT1d(nn.Module):
    """Diffusion transformer on latent sequences.

    x [B, D, L] is cut into L / patch tokens of D·patch values (zero-padded on the right to a multiple of
    `patch`, cropped back at the end), projected to `width`, run through `depth` blocks and projected back.
    Text tokens [B, T, context_dim] are projected to `width` once and shared by every block's cross-attention.
    The output projection and every block's modulation start at zero, so a fresh network outputs zeros.

    Sizes (parameters with context_dim 384, D = 64, patch 1): width 256 / depth 8 / heads 4: 12 M;
    width 1536 / depth 24 / heads 24 (Stable Audio Open's shape): 1.2 B.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, width: int = 256, depth: int = 8,
                 heads: int = 4, mlp_ratio: float = 4.0, patch: int = 1, context_dim: int = 384,
                 pooled_dim: int | None = None, global_dim: int | None = None, cross_attention: bool = True,
                 qk_norm: bool = True, rope_base: float = 10000.0, gradient_checkpointing: bool = False,
                 noise_level_scale: float = 1000.0, time_features: int = 256) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 1 or patch < 1:
            raise ValueError(f"DiT1d: in_channels, width, depth and patch must be >= 1, got {in_channels}, "
                             f"{width}, {depth}, {patch}")
        if heads < 1 or width % heads or (width // heads) % 2:
            raise ValueError(f"DiT1d: heads must divide width into even head sizes, got width={width}, heads={heads}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.patch = patch
        self.heads = heads
        self.width = width
        self.context_dim = context_dim
        self.pooled_dim = pooled_dim
        self.global_dim = global_dim
        self.rope_base = rope_base
        self.cross_attention = cross_attention
        self.gradient_checkpointing = gradient_checkpointing
        self.proj_in = nn.Linear(in_channels * patch, width)
        self.time_embed = TimestepEmbedding(time_features, width, scale=noise_level_scale)
        self.pooled_proj = nn.Linear(pooled_dim, width) if pooled_dim else None
        self.global_proj = nn.Linear(global_dim, width) if global_dim else None
        self.context_proj = nn.Linear(context_dim, width) if cross_attention else None
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio, cross_attention, qk_norm)
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, self.out_channels * patch)
        for layer in (self.final_ada[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def length_multiple(self) -> int:
        """Frame counts are padded internally to a multiple of this."""
        return self.patch

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _conditioning(self, noise_level: Tensor, cond: Conditioning | None, batch: int) -> Tensor:
        check_noise_level("DiT1d", noise_level, batch)
        c = self.time_embed(noise_level)
        pooled, globals_ = global_inputs("DiT1d", cond, batch, self.pooled_dim, self.global_dim)
        if self.pooled_proj is not None:
            c = c + self.pooled_proj(pooled.to(c.dtype))
        if self.global_proj is not None:
            c = c + self.global_proj(globals_.to(c.dtype))
        return c

    def forward(self, x: Tensor, noise_level: Tensor, cond: Conditioning | None = None) -> Tensor:
        """Denoiser output for noisy latents.

        x: [B, in_channels, L]; noise_level: [B] float; cond: tokens [B, N, context_dim] and mask [B, N] bool
        (when cross_attention), pooled [B, pooled_dim] and globals_ [B, global_dim] (when configured).
        Returns [B, out_channels, L].
        """
        check_latents("DiT1d", x, self.in_channels)
        b, d, length = x.shape
        c = self._conditioning(noise_level, cond, b)
        context = mask = None
        if self.cross_attention:
            tokens, mask = text_context("DiT1d", cond, b, self.context_dim)
            mask = mask.to(device=x.device, dtype=torch.bool)
        pad = (-length) % self.patch
        tokens_in = F.pad(x, (0, pad)).view(b, d, -1, self.patch).permute(0, 2, 1, 3).reshape(b, -1, d * self.patch)
        h = self.proj_in(tokens_in)
        if self.cross_attention:
            context = self.context_proj(tokens.to(h.dtype))
        rope = rotary_tables(h.shape[1], self.width // self.heads, self.rope_base, h.device)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, rope, context, mask, use_reentrant=False)
            else:
                h = block(h, c, rope, context, mask)
        shift, scale = self.final_ada(c)[:, None, :].chunk(2, dim=-1)
        out = self.proj_out(_modulate(self.final_norm(h), shift, scale))  # [B, N, out·patch]
        out = out.view(b, -1, self.out_channels, self.patch).permute(0, 2, 1, 3).reshape(b, self.out_channels, -1)
        return out[..., :length]
