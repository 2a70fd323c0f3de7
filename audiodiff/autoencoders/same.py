"""SAME, Stable Audio 3's waveform autoencoder ("Semantically-Aligned Music Encoder"), in inference form (weight norm
folded into plain weights), to load the published weights and reproduce diffusers' `AutoencoderSAME` exactly.

encode: patch (P consecutive samples per channel become P · C channels, no weights) → transformer resampling blocks
(each groups S frames with one learned output token and keeps that token: S× down) → Linear to the latent width →
soft-norm bottleneck z = (x · scale + bias) / running_std. decode: z · running_std → Linear → resampling blocks in
reverse (one frame with S learned output tokens, the S tokens kept: S× up) → unpatch. Published SAME-S / SAME-L:
stereo 44.1 kHz, P = 256, one block of stride 16 (4096 samples per latent frame, ≈ 10.77 frames per second),
256 latent channels.

The transformers are pre-norm with Dynamic Tanh norms (Zhu et al. 2025: γ · tanh(α x) + β), differential self-
attention with DyT-normed queries and keys and rotary positions on half of each head, a GLU feed-forward (SiLU,
or sin(π ·) in the trailing `sinusoidal` layers), and a banded mask: a token sees `window · (S + 1)` tokens on
each side of the flattened segment sequence (computed segment by segment against the neighbouring segments, linear
in the length, where diffusers multiplies the whole sequence with a dense mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.nn.differential import rotate_partial

SAME_TARGET = "audiodiff.autoencoders.same.SAME"


class DynamicTanh(nn.Module):
    """γ · tanh(α x) + β (α a learned scalar, γ and β per channel over the last dimension)."""

    def __init__(self, dim: int, alpha: float = 4.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class SAMEAttention(nn.Module):
    """Differential (or plain) self-attention, fused [q1 | q2 | k1 | k2 | v] projection, DyT-normed queries and keys,
    rotary positions on the first half of each head."""

    def __init__(self, width: int, head_dim: int, differential: bool) -> None:
        super().__init__()
        self.heads, self.differential = width // head_dim, differential
        self.qkv = nn.Linear(width, width * (5 if differential else 3), bias=False)
        self.q_norm, self.k_norm = DynamicTanh(head_dim), DynamicTanh(head_dim)
        self.out = nn.Linear(width, width, bias=False)
        rotary = head_dim // 2
        self.register_buffer("rotary_frequencies", 1.0 / 10000 ** (torch.arange(0, rotary, 2).float() / rotary),
                             persistent=False)

    def forward(self, x: Tensor, segment: int, window: int) -> Tensor:
        """x: [B, N, W], N a multiple of `segment`; token i sees token j where |j - i| <= window · segment.
        Returns [B, N, W]."""
        positions = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        angles = torch.outer(positions, self.rotary_frequencies.float()).repeat(1, 2)
        n = 2 if self.differential else 1
        parts = [p.unflatten(-1, (self.heads, -1)).transpose(1, 2) for p in self.qkv(x).chunk(2 * n + 1, dim=-1)]
        q = tuple(rotate_partial(self.q_norm(p), angles) for p in parts[:n])
        k = tuple(rotate_partial(self.k_norm(p), angles) for p in parts[n:2 * n])
        return self.out(banded_attention(q, k, parts[-1], segment, window))


def banded_attention(q: tuple[Tensor, ...], k: tuple[Tensor, ...], v: Tensor, segment: int, window: int) -> Tensor:
    """`differential_attention` under the band |j - i| <= window · segment, computed segment by segment: the
    queries of segment s only meet the keys of segments s - window … s + window, which hold the whole band, so
    the cost is N · (2 window + 1) · segment rather than N² (the same result as the dense masked product).
    q, k: [B, H, N, Dh] each (N a multiple of segment); v: [B, H, N, Dh]. Returns [B, N, H·Dh]."""
    b, h, n, d = v.shape
    count, span = n // segment, (2 * window + 1) * segment

    def keys(t: Tensor) -> Tensor:  # [B, H, N, D] → [B, H, count, span, D]: each segment with its neighbours
        t = F.pad(t.reshape(b, h, count, segment, d), (0, 0, 0, 0, window, window))
        return torch.cat([t[:, :, i:i + count] for i in range(2 * window + 1)], dim=3)

    r = torch.arange(segment, device=v.device)[:, None]
    c = torch.arange(span, device=v.device)[None, :]
    band = (c - window * segment - r).abs() <= window * segment                                # [segment, span]
    source = torch.arange(count, device=v.device)[:, None] - window + c // segment             # [count, span]
    mask = band[None] & ((source >= 0) & (source < count))[:, None, :]                         # [count, seg, span]
    values = keys(v)
    out = F.scaled_dot_product_attention(q[0].reshape(b, h, count, segment, d), keys(k[0]), values, attn_mask=mask)
    if len(q) == 2:
        out = out - F.scaled_dot_product_attention(q[1].reshape(b, h, count, segment, d), keys(k[1]), values,
                                                   attn_mask=mask)
    return out.reshape(b, h, n, d).transpose(1, 2).flatten(2)


class GLU(nn.Module):
    """Linear(W → 2·hidden), a · act(gate), Linear(hidden → W), act = SiLU or sin(π ·)."""

    def __init__(self, width: int, mult: int, sinusoidal: bool) -> None:
        super().__init__()
        self.sinusoidal = sinusoidal
        self.proj_in = nn.Linear(width, 2 * width * mult)
        self.proj_out = nn.Linear(width * mult, width)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * (torch.sin(math.pi * gate) if self.sinusoidal else F.silu(gate)))


class SAMELayer(nn.Module):
    """Pre-norm (DyT) attention and feed-forward, each residual. x: [B, N, W]."""

    def __init__(self, width: int, head_dim: int, differential: bool, ff_mult: int, sinusoidal: bool) -> None:
        super().__init__()
        self.norm1 = DynamicTanh(width)
        self.attn = SAMEAttention(width, head_dim, differential)
        self.norm2 = DynamicTanh(width)
        self.ff = GLU(width, ff_mult, sinusoidal)

    def forward(self, x: Tensor, segment: int, window: int) -> Tensor:
        x = x + self.attn(self.norm1(x), segment, window)
        return x + self.ff(self.norm2(x))


class ResamplingBlock(nn.Module):
    """A transformer resampling block. down: [B, c_in, T] → [B, c_out, ceil(T / S)] (1×1 map to c_out, segments
    of S frames each with one learned token appended, the token kept); up: [B, c_in, T] → [B, c_out, T · S] (each
    frame with S copies of one learned token appended, the S tokens kept, then the 1×1 map)."""

    def __init__(self, c_in: int, c_out: int, stride: int, down: bool, depth: int, head_dim: int,
                 differential: bool, ff_mult: int, window: int, sinusoidal: int) -> None:
        super().__init__()
        self.stride, self.down, self.window = stride, down, window
        width = c_out if down else c_in
        self.width = width
        self.mapping = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self.layers = nn.ModuleList(SAMELayer(width, min(head_dim, width), differential, ff_mult,
                                              sinusoidal=(depth - i) < sinusoidal) for i in range(depth))
        self.token = nn.Parameter(1e-5 * torch.randn(1, 1, width))

    def _transform(self, x: Tensor, segment: int) -> Tensor:
        for layer in self.layers:
            x = layer(x, segment, self.window)
        return x

    def forward(self, x: Tensor) -> Tensor:
        b, _, length = x.shape
        s, w = self.stride, self.width
        if self.down:
            x = F.pad(x, (0, (-length) % s))
            if self.mapping is not None:
                x = self.mapping(x)
            n = x.shape[-1] // s
            x = torch.cat([x.transpose(1, 2).reshape(b * n, s, w), self.token.expand(b * n, 1, -1)], dim=1)
            x = self._transform(x.reshape(b, n * (s + 1), w), s + 1)
            x = x.reshape(b * n, s + 1, w)[:, -1].reshape(b, n, w).transpose(1, 2)
            return x[..., :-(-length // s)]
        x = torch.cat([x.transpose(1, 2).reshape(b * length, 1, w), self.token.expand(b * length, s, -1)], dim=1)
        x = self._transform(x.reshape(b, length * (s + 1), w), s + 1)
        x = x.reshape(b * length, s + 1, w)[:, -s:].reshape(b, length * s, w).transpose(1, 2)
        return x if self.mapping is None else self.mapping(x)


class SAME(nn.Module):
    """wav [B, C, T] at `sample_rate` Hz ↔ z [B, latent_channels, ceil(T / latent_hop)], latent_hop =
    patch_size · ∏ strides. The arguments are diffusers' `AutoencoderSAME` ones: channels · channel_multiples[i]
    is the width of level i, depths its transformer layers, head_dim the attention head size, window the band
    half-width in segments, sinusoidal_encoder / sinusoidal_decoder the trailing sin-gated layers per level (one
    value for all levels, or one each)."""

    def __init__(self, audio_channels: int = 2, patch_size: int = 256, channels: int = 128,
                 channel_multiples: Sequence[int] = (6,), strides: Sequence[int] = (16,),
                 depths: Sequence[int] = (6,), latent_channels: int = 256, differential: bool = True,
                 head_dim: int = 64, ff_mult: int = 3, window: int = 1,
                 sinusoidal_encoder: Sequence[int] = (0,), sinusoidal_decoder: Sequence[int] = (0,),
                 sample_rate: int = 44100) -> None:
        super().__init__()
        levels = len(strides)
        if not levels or len(channel_multiples) != levels or len(depths) != levels:
            raise ValueError(f"SAME: strides, channel_multiples and depths need one entry per level, got "
                             f"{list(strides)}, {list(channel_multiples)}, {list(depths)}")
        sin_enc, sin_dec = (list(v) * levels if len(v) == 1 else list(v)
                            for v in (sinusoidal_encoder, sinusoidal_decoder))
        if len(sin_enc) != levels or len(sin_dec) != levels:
            raise ValueError(f"SAME: sinusoidal_encoder / sinusoidal_decoder need 1 or {levels} entries")
        self.audio_channels, self.patch_size, self.latent_channels = audio_channels, patch_size, latent_channels
        self.sample_rate = sample_rate
        self.latent_hop = patch_size * math.prod(strides)
        self.frame_rate = sample_rate / self.latent_hop
        widths = [audio_channels * patch_size] + [channels * m for m in channel_multiples]
        common = dict(head_dim=head_dim, differential=differential, ff_mult=ff_mult, window=window)
        self.encoder = nn.ModuleList(ResamplingBlock(widths[i], widths[i + 1], strides[i], True, depths[i],
                                                     sinusoidal=sin_enc[i], **common) for i in range(levels))
        self.encoder_proj = nn.Linear(widths[-1], latent_channels)
        self.scale = nn.Parameter(torch.ones(1, latent_channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, latent_channels, 1))
        self.register_buffer("running_std", torch.ones(1))
        self.decoder_proj = nn.Linear(latent_channels, widths[-1])
        self.decoder = nn.ModuleList(ResamplingBlock(widths[i + 1], widths[i], strides[i], False, depths[i],
                                                     sinusoidal=sin_dec[i], **common)
                                     for i in reversed(range(levels)))

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → z [B, latent_channels, ceil(T / latent_hop)] (T zero-padded on the right)."""
        p = self.patch_size
        x = F.pad(wav, (0, (-wav.shape[-1]) % p))
        b, c, t = x.shape
        x = x.reshape(b, c, t // p, p).permute(0, 1, 3, 2).reshape(b, c * p, t // p)
        for block in self.encoder:
            x = block(x)
        x = self.encoder_proj(x.transpose(1, 2)).transpose(1, 2)
        return (x * self.scale + self.bias) / self.running_std

    def decode(self, z: Tensor) -> Tensor:
        """z [B, latent_channels, L] → wav [B, C, L · latent_hop]."""
        x = self.decoder_proj((z * self.running_std).transpose(1, 2)).transpose(1, 2)
        for block in self.decoder:
            x = block(x)
        b, cp, t = x.shape
        p = self.patch_size
        return x.reshape(b, cp // p, p, t).permute(0, 1, 3, 2).reshape(b, cp // p, t * p)
