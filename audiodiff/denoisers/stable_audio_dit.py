"""Stable Audio's diffusion transformer (Evans et al. 2024, "Stable Audio Open", Section 3.2), written to load the
published weights and reproduce them exactly (the reference is stable-audio-tools' `ContinuousTransformer` as
diffusers' `StableAudioDiTModel` restates it).

Follows the denoiser contract `F(x [B, D, L], noise_level [B], cond) -> [B, D, L]` with
- noise_level: the network's time input τ ∈ [0, 1] (`audiodiff.diffusion.objectives.VDiffusion` feeds
  τ = atan(σ) · 2 / π), embedded with fixed random Fourier features;
- cond.tokens [B, N, context_dim]: the cross-attention sequence (projected text and the two seconds tokens);
- cond.globals_ [B, global_dim]: the global vector (both seconds embeddings side by side).

Shape of the network: x gets a residual 1×1 convolution and a linear projection to `width`; one global token
(global vector projected + time embedding) is prepended at position 0; `depth` pre-norm blocks of self-attention
(rotary positions on the first half of each head's dimensions), cross-attention (grouped-query: `kv_heads` key/value
heads shared by `heads` query heads; no positions) and a SwiGLU feed-forward; the global token is dropped, and a
projection plus a residual 1×1 convolution give the output. The published model feeds no cross-attention mask
(padding tokens are zero vectors that still take part in the softmax); `context_mask=True` honours `cond.mask`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers.checks import check_latents, check_noise_level, global_inputs, text_context
from audiodiff.nn.attention import apply_rotary, merge_heads, rotary_tables, split_heads

STABLE_AUDIO_DIT_TARGET = "audiodiff.denoisers.stable_audio_dit.StableAudioDiT"


class FourierTimeEmbedding(nn.Module):
    """[cos(2π τ w), sin(2π τ w)] for fixed Gaussian frequencies w [dim / 2] (a buffer: part of the weights, not
    trained). τ: [B] -> [B, dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(dim // 2))

    def forward(self, tau: Tensor) -> Tensor:
        phase = 2 * math.pi * tau.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]
        return torch.cat([phase.cos(), phase.sin()], dim=-1)


class Attention(nn.Module):
    """Multi-head attention without biases; `kv_heads` < `heads` shares each key/value head among heads / kv_heads
    query heads (grouped-query attention, Ainslie et al. 2023). Rotary positions, when given, rotate the first
    `cos.shape[-1]` dimensions of each query and key head."""

    def __init__(self, width: int, heads: int, kv_heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        head_dim = width // heads
        self.heads, self.kv_heads = heads, kv_heads
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(context_dim or width, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(context_dim or width, kv_heads * head_dim, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, context: Tensor, rope: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None) -> Tensor:
        """x: [B, N, W]; context: [B, M, context_dim] (x itself for self-attention); rope: cos, sin [N, R] with
        M = N; mask: [B, M] bool (True = attend) or None. Returns [B, N, W]."""
        q = split_heads(self.q(x), self.heads)
        k, v = split_heads(self.k(context), self.kv_heads), split_heads(self.v(context), self.kv_heads)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if rope is not None:
            q, k = _rotate_part(q, rope), _rotate_part(k, rope)
        attn_mask = None if mask is None else mask[:, None, None, :]
        return self.out(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))


def _rotate_part(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotary positions on the first R = cos.shape[-1] dimensions of x [B, H, N, Dh]; the rest pass through."""
    r = rope[0].shape[-1]
    return torch.cat([apply_rotary(x[..., :r], *rope), x[..., r:]], dim=-1)


class SwiGLU(nn.Module):
    """Linear(W → 2·hidden), a · SiLU(gate), Linear(hidden → W), both with biases (Shazeer 2020)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(width, 2 * hidden)
        self.proj_out = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.silu(gate))


class StableAudioBlock(nn.Module):
    """Pre-norm self-attention (rotary), cross-attention (grouped-query) and SwiGLU, each residual. h: [B, N, W]."""

    def __init__(self, width: int, heads: int, kv_heads: int, context_dim: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=norm_eps)
        self.self_attn = Attention(width, heads, heads)
        self.norm2 = nn.LayerNorm(width, eps=norm_eps)
        self.cross_attn = Attention(width, heads, kv_heads, context_dim)
        self.norm3 = nn.LayerNorm(width, eps=norm_eps)
        self.ff = SwiGLU(width, 4 * width)

    def forward(self, h: Tensor, context: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        x = self.norm1(h)
        h = h + self.self_attn(x, x, rope=rope)
        h = h + self.cross_attn(self.norm2(h), context, mask=mask)
        return h + self.ff(self.norm3(h))


class StableAudioDiT(nn.Module):
    """Stable Audio Open's DiT (published size: width 1536 = 24 heads × 64, 12 key/value heads, depth 24,
    context_dim 768, global_dim 1536, 64 latent channels: 1.06 B parameters).

    in_channels: latent channels D; width: heads × head size; depth: blocks; heads / kv_heads: query and key/value
    heads of cross-attention (self-attention uses `heads` for both); context_dim: width E of cond.tokens (and of the
    cross-attention keys' input); global_dim: width of cond.globals_; time_features: Fourier features of τ;
    context_mask: honour cond.mask in cross-attention (the published model does not: False).
    gradient_checkpointing: in training, keep only each block's input and recompute the block in the backward pass
    (Chen et al. 2016): activation memory of one block instead of `depth`, for about one more forward pass.
    `pooled_dim` is accepted for the model builder and must be None (the model takes no pooled text).
    """

    def __init__(self, in_channels: int = 64, width: int = 1536, depth: int = 24, heads: int = 24,
                 kv_heads: int = 12, context_dim: int = 768, global_dim: int | None = 1536, time_features: int = 256,
                 context_mask: bool = False, out_channels: int | None = None, pooled_dim: int | None = None,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if heads < 1 or width % heads or (width // heads) % 4:
            raise ValueError(f"StableAudioDiT: heads must divide width into head sizes that are multiples of 4 "
                             f"(rotary positions on half of each head), got width={width}, heads={heads}")
        if kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"StableAudioDiT: kv_heads must divide heads, got heads={heads}, kv_heads={kv_heads}")
        if pooled_dim:
            raise ValueError(f"StableAudioDiT takes no pooled text embedding, got pooled_dim={pooled_dim} (set the "
                             f"denoiser's pooled_text: false)")
        if not global_dim:
            raise ValueError("StableAudioDiT: global_dim is needed (the seconds conditioning's global vector)")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.width, self.heads = width, heads
        self.context_dim, self.global_dim = context_dim, global_dim
        self.pooled_dim = None
        self.context_mask = context_mask
        self.gradient_checkpointing = gradient_checkpointing
        self.time_embed = FourierTimeEmbedding(time_features)
        self.time_proj = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))
        self.global_proj = nn.Sequential(nn.Linear(global_dim, width, bias=False), nn.SiLU(),
                                         nn.Linear(width, width, bias=False))
        self.context_proj = nn.Sequential(nn.Linear(context_dim, context_dim, bias=False), nn.SiLU(),
                                          nn.Linear(context_dim, context_dim, bias=False))
        self.conv_in = nn.Conv1d(in_channels, in_channels, 1, bias=False)
        self.proj_in = nn.Linear(in_channels, width, bias=False)
        self.blocks = nn.ModuleList(StableAudioBlock(width, heads, kv_heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(width, self.out_channels, bias=False)
        self.conv_out = nn.Conv1d(self.out_channels, self.out_channels, 1, bias=False)

    @property
    def length_multiple(self) -> int:
        return 1

    def forward(self, x: Tensor, noise_level: Tensor, cond: Conditioning | None = None) -> Tensor:
        """x: [B, in_channels, L]; noise_level: τ [B]; cond: tokens [B, N, context_dim] (mask [B, N] used only with
        context_mask) and globals_ [B, global_dim]. Returns [B, out_channels, L]."""
        check_latents("StableAudioDiT", x, self.in_channels)
        b, _, length = x.shape
        check_noise_level("StableAudioDiT", noise_level, b)
        tokens, mask = text_context("StableAudioDiT", cond, b, self.context_dim)
        _, globals_ = global_inputs("StableAudioDiT", cond, b, None, self.global_dim)
        context = self.context_proj(tokens.to(x.dtype))
        mask = mask.to(device=x.device, dtype=torch.bool) if self.context_mask else None
        global_token = self.global_proj(globals_.to(x.dtype)) + self.time_proj(self.time_embed(noise_level).to(x.dtype))
        h = self.proj_in((x + self.conv_in(x)).transpose(1, 2))                      # [B, L, W]
        h = torch.cat([global_token[:, None, :], h], dim=1)                          # position 0: the global token
        rope = rotary_tables(length + 1, self.width // self.heads // 2, 10000.0, x.device)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, context, rope, mask, use_reentrant=False)
            else:
                h = block(h, context, rope, mask)
        out = self.proj_out(h).transpose(1, 2)[:, :, 1:]                             # [B, out, L]
        return out + self.conv_out(out)
