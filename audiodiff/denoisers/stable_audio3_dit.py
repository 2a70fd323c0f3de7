"""Stable Audio 3's diffusion transformer, written to load the published weights and reproduce them exactly (the
reference is diffusers' `StableAudio3DiTModel`, which restates stable-audio-tools' SA3 DiT).

Follows the denoiser contract `F(x [B, D, L], noise_level [B], cond) -> [B, D, L]` with
- noise_level: the flow time t ∈ [0, 1] (`audiodiff.diffusion.objectives.FlowMatching` with velocity targets);
  the network embeds `time_scale` · t (diffusers feeds the scheduler's timesteps, σ · num_train_timesteps) with
  exponentially spaced Fourier features;
- cond.tokens [B, N, context_dim] and cond.mask [B, N]: the text states and the duration token; positions whose
  mask is False are replaced by a learned padding vector (the published model then attends to every position);
- cond.globals_ [B, global_dim]: the duration embedding (adaptive-norm input);
- cond.local [B, local_dim, L] or None: the inpainting input (keep mask and masked known latents), added per block.

Differences from Stable Audio Open's DiT (`audiodiff.denoisers.stable_audio_dit`): `memory_tokens` learned tokens
are prepended instead of one global token; the global vector plus the time embedding drive adaptive layer norm
(shift, scale and a sigmoid gate, DiT-style, Peebles & Xie 2023) of self-attention and feed-forward; attention is
differential (Ye et al. 2024, "Differential Transformer": softmax(q1 k1) v - softmax(q2 k2) v) with RMS-normed
queries and keys; norms are RMS norms computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers.checks import check_latents, check_noise_level, global_inputs, text_context
from audiodiff.denoisers.stable_audio_dit import SwiGLU
from audiodiff.nn.differential import (
    RMSNorm,
    differential_attention,
    expo_fourier,
    expo_frequencies,
    rotate_partial,
    split_heads,
)

STABLE_AUDIO3_DIT_TARGET = "audiodiff.denoisers.stable_audio3_dit.StableAudio3DiT"


class DiffSelfAttention(nn.Module):
    """Self-attention with fused projections [q1 | q2 | k1 | k2 | v] (differential) or [q | k | v], RMS-normed
    queries and keys (one norm each, shared by both pairs), rotary positions on part of each head."""

    def __init__(self, width: int, head_dim: int, differential: bool = True) -> None:
        super().__init__()
        self.heads, self.differential = width // head_dim, differential
        self.qkv = nn.Linear(width, width * (5 if differential else 3), bias=False)
        self.q_norm, self.k_norm = RMSNorm(head_dim), RMSNorm(head_dim)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, angles: Tensor) -> Tensor:
        """x: [B, N, W]; angles: [N, R]. Returns [B, N, W]."""
        parts = [split_heads(p, self.heads) for p in self.qkv(x).chunk(5 if self.differential else 3, dim=-1)]
        n = 2 if self.differential else 1
        q = tuple(rotate_partial(self.q_norm(p), angles) for p in parts[:n])
        k = tuple(rotate_partial(self.k_norm(p), angles) for p in parts[n:2 * n])
        return self.out(differential_attention(q, k, parts[-1]))


class DiffCrossAttention(nn.Module):
    """Cross-attention with projections [q1 | q2] of x and [k1 | k2 | v] of the context (differential) or q and
    [k | v]; RMS-normed queries and keys; no positions."""

    def __init__(self, width: int, context_dim: int, head_dim: int, differential: bool = True) -> None:
        super().__init__()
        self.heads, self.differential = width // head_dim, differential
        self.q = nn.Linear(width, width * (2 if differential else 1), bias=False)
        self.kv = nn.Linear(context_dim, width * (3 if differential else 2), bias=False)
        self.q_norm, self.k_norm = RMSNorm(head_dim), RMSNorm(head_dim)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: [B, N, W]; context: [B, M, context_dim]. Returns [B, N, W]."""
        n = 2 if self.differential else 1
        q = tuple(self.q_norm(split_heads(p, self.heads)) for p in self.q(x).chunk(n, dim=-1))
        kv = [split_heads(p, self.heads) for p in self.kv(context).chunk(n + 1, dim=-1)]
        return self.out(differential_attention(q, tuple(self.k_norm(p) for p in kv[:n]), kv[-1]))


class StableAudio3Block(nn.Module):
    """Adaptive-norm self-attention (gated by sigmoid(1 - gate)), plain RMS-normed cross-attention, the optional
    per-frame local input (projected, added to the audio positions), adaptive-norm SwiGLU. h: [B, M + L, W]."""

    def __init__(self, width: int, head_dim: int, differential: bool, ff_mult: float, local_dim: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.self_attn = DiffSelfAttention(width, head_dim, differential)
        self.norm2 = RMSNorm(width)
        self.cross_attn = DiffCrossAttention(width, width, head_dim, differential)
        self.norm3 = RMSNorm(width)
        self.ff = SwiGLU(width, int(width * ff_mult))
        self.modulation = nn.Parameter(torch.randn(6 * width) / width**0.5)  # added to the shared modulation
        self.local_proj = nn.Sequential(nn.Linear(local_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: Tensor, context: Tensor, modulation: Tensor, angles: Tensor, local: Tensor | None,
                memory: int) -> Tensor:
        """modulation: [B, 6W]; local: [B, L, local_dim] or None; memory: the leading positions local skips."""
        scale1, shift1, gate1, scale2, shift2, gate2 = (modulation + self.modulation).chunk(6, dim=-1)
        x = self.norm1(h) * (1 + scale1[:, None]) + shift1[:, None]
        h = h + self.self_attn(x, angles) * torch.sigmoid(1 - gate1)[:, None]
        h = h + self.cross_attn(self.norm2(h), context)
        if local is not None:
            h = torch.cat([h[:, :memory], h[:, memory:] + self.local_proj(local)], dim=1)
        x = self.norm3(h) * (1 + scale2[:, None]) + shift2[:, None]
        return h + self.ff(x) * torch.sigmoid(1 - gate2)[:, None]


class StableAudio3DiT(nn.Module):
    """Stable Audio 3's DiT (published Medium: width 1536 = 24 heads × 64, depth 24, 256 latent channels, context and
    global width 768, 64 memory tokens).

    in_channels: latent channels D; width: heads × head size; depth: blocks; heads: attention heads (self and
    cross); context_dim: width of cond.tokens; global_dim: width of cond.globals_; time_features: Fourier
    features of the time; time_scale: the time the network sees per unit of flow time (diffusers' scheduler
    num_train_timesteps); memory_tokens: learned tokens prepended to the sequence; differential: differential
    attention; ff_mult: feed-forward expansion; local_dim: channels of cond.local (1 + D: mask and latents).
    `pooled_dim` is accepted for the model builder and must be None.
    """

    takes_local = True  # reads cond.local: inpainting uses the trained mask input

    def __init__(self, in_channels: int = 256, width: int = 1536, depth: int = 24, heads: int = 24,
                 context_dim: int = 768, global_dim: int | None = 768, time_features: int = 256,
                 time_scale: float = 1.0, memory_tokens: int = 64, differential: bool = True, ff_mult: float = 4.0,
                 local_dim: int | None = None, out_channels: int | None = None,
                 pooled_dim: int | None = None) -> None:
        super().__init__()
        if heads < 1 or width % heads or (width // heads) % 4:
            raise ValueError(f"StableAudio3DiT: heads must divide width into head sizes that are multiples of 4 "
                             f"(rotary positions on half of each head), got width={width}, heads={heads}")
        if pooled_dim:
            raise ValueError(f"StableAudio3DiT takes no pooled text embedding, got pooled_dim={pooled_dim} (set the "
                             f"denoiser's pooled_text: false)")
        if not global_dim:
            raise ValueError("StableAudio3DiT: global_dim is needed (the duration embedding)")
        if out_channels not in (None, in_channels):
            raise ValueError(f"StableAudio3DiT: out_channels must equal in_channels ({in_channels}), got "
                             f"{out_channels}")
        head_dim = width // heads
        self.in_channels = self.out_channels = in_channels
        self.width, self.heads = width, heads
        self.context_dim, self.global_dim, self.pooled_dim = context_dim, global_dim, None
        self.time_features, self.time_scale = time_features, float(time_scale)
        self.memory_tokens = memory_tokens
        self.local_dim = local_dim or in_channels + 1
        self.time_proj = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))
        self.padding_token = nn.Parameter(torch.zeros(context_dim))
        self.context_proj = nn.Sequential(nn.Linear(context_dim, width, bias=False), nn.SiLU(),
                                          nn.Linear(width, width, bias=False))
        self.global_proj = nn.Sequential(nn.Linear(global_dim, width, bias=False), nn.SiLU(),
                                         nn.Linear(width, width, bias=False))
        self.modulation = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 6 * width))
        self.conv_in = nn.Conv1d(in_channels, in_channels, 1, bias=False)
        self.proj_in = nn.Linear(in_channels, width, bias=False)
        self.memory = nn.Parameter(torch.randn(memory_tokens, width) * 0.02) if memory_tokens else None
        rotary = head_dim // 2  # channels rotated per head; each frequency covers two of them
        self.register_buffer("rotary_frequencies", 1.0 / 10000 ** (torch.arange(0, rotary, 2).float() / rotary))
        self.blocks = nn.ModuleList(StableAudio3Block(width, head_dim, differential, ff_mult, self.local_dim)
                                    for _ in range(depth))
        self.proj_out = nn.Linear(width, in_channels, bias=False)
        self.conv_out = nn.Conv1d(in_channels, in_channels, 1, bias=False)

    @property
    def length_multiple(self) -> int:
        return 1

    def forward(self, x: Tensor, noise_level: Tensor, cond: Conditioning | None = None) -> Tensor:
        """x: [B, in_channels, L]; noise_level: flow time t [B]; cond: tokens [B, N, context_dim] with mask [B, N],
        globals_ [B, global_dim], local [B, local_dim, L] or None. Returns the velocity [B, in_channels, L]."""
        check_latents("StableAudio3DiT", x, self.in_channels)
        b, _, length = x.shape
        check_noise_level("StableAudio3DiT", noise_level, b)
        tokens, mask = text_context("StableAudio3DiT", cond, b, self.context_dim)
        _, globals_ = global_inputs("StableAudio3DiT", cond, b, None, self.global_dim)
        assert cond is not None and globals_ is not None
        local = cond.local
        if local is not None and tuple(local.shape) != (b, self.local_dim, length):
            raise ValueError(f"StableAudio3DiT: cond.local must be [B, local_dim, L] = {(b, self.local_dim, length)}, "
                             f"got {tuple(local.shape)}")
        tokens = torch.where(mask.to(x.device)[..., None], tokens.to(x.dtype), self.padding_token.to(x.dtype))
        context = self.context_proj(tokens)
        time = expo_fourier(noise_level.to(torch.float32) * self.time_scale,
                            expo_frequencies(self.time_features)).to(x.dtype)
        modulation = self.modulation(self.global_proj(globals_.to(x.dtype)) + self.time_proj(time))   # [B, 6W]
        h = self.proj_in((self.conv_in(x) + x).transpose(1, 2))                                      # [B, L, W]
        if self.memory is not None:
            h = torch.cat([self.memory.to(h.dtype)[None].expand(b, -1, -1), h], dim=1)
        positions = torch.arange(h.shape[1], device=x.device, dtype=torch.float32)
        angles = torch.outer(positions, self.rotary_frequencies.float()).repeat(1, 2)              # [M + L, R]
        local_seq = None if local is None else local.to(x.dtype).transpose(1, 2)
        for block in self.blocks:
            h = block(h, context, modulation, angles, local_seq, self.memory_tokens)
        out = self.proj_out(h[:, self.memory_tokens:]).transpose(1, 2)                           # [B, D, L]
        return self.conv_out(out) + out
