"""Oobleck, Stable Audio Open's waveform VAE (Evans et al. 2024, "Stable Audio Open", Section 3.1), in inference form
(weight norm folded into plain convolution weights), to load the published weights and reproduce them exactly.

Encoder: conv7 → blocks (3 dilated residual units, snake, strided conv of kernel 2·stride) → snake → conv3 to
2 × latent_channels (mean and softplus scale of the posterior). Decoder: conv7 → blocks (snake, transposed conv of
kernel 2·stride, 3 residual units) → snake → conv7 without bias. The published model: stereo 44.1 kHz,
strides 2, 4, 4, 8, 8 (2048 samples per latent frame), channel multiples 1, 2, 4, 8, 16 of 128, 64 latent channels.

Snake-β (BigVGAN, Lee et al. 2023): x + sin²(α x) / (β + 1e-9) per channel with α = exp(log_alpha) and
β = exp(log_beta).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from audiodiff.autoencoders.base import DiagonalGaussian

OOBLECK_TARGET = "audiodiff.autoencoders.oobleck.Oobleck"
_DILATIONS = (1, 3, 9)


class SnakeBeta(nn.Module):
    """x + sin²(α x) / (β + 1e-9), α = exp(log_alpha), β = exp(log_beta) per channel. x: [B, C, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.log_beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.log_beta.exp() + 1e-9).reciprocal() * torch.sin(self.log_alpha.exp() * x).pow(2)


class ResidualUnit(nn.Module):
    """x + conv1×1(snake(conv7_dilated(snake(x)))); length and width kept. x: [B, C, T]."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(channels)
        self.conv1 = nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.act2 = SnakeBeta(channels)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class EncoderBlock(nn.Module):
    """Residual units at `c_in` channels, then snake and a strided conv: [B, c_in, T] → [B, c_out, T / stride]."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.residuals = nn.Sequential(*(ResidualUnit(c_in, d) for d in _DILATIONS))
        self.act = SnakeBeta(c_in)
        self.down = nn.Conv1d(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.residuals(x)))


class DecoderBlock(nn.Module):
    """Snake and a transposed strided conv, then residual units: [B, c_in, L] → [B, c_out, L · stride]."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.act = SnakeBeta(c_in)
        self.up = nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2))
        self.residuals = nn.Sequential(*(ResidualUnit(c_out, d) for d in _DILATIONS))

    def forward(self, x: Tensor) -> Tensor:
        return self.residuals(self.up(self.act(x)))


class Oobleck(nn.Module):
    """`encode(wav [B, audio_channels, T]) -> DiagonalGaussian` over z [B, latent_channels, T / hop];
    `decode(z) -> wav [B, audio_channels, L · hop]` (hop = product of `strides`; T must be a multiple of hop).

    sample_rate: Hz (recorded, not used by the network); channels: encoder width before the multiples;
    decoder_channels: decoder width before the multiples.
    """

    def __init__(self, audio_channels: int = 2, latent_channels: int = 64, channels: int = 128,
                 decoder_channels: int = 128, strides: Sequence[int] = (2, 4, 4, 8, 8),
                 channel_multiples: Sequence[int] = (1, 2, 4, 8, 16), sample_rate: int = 44100) -> None:
        super().__init__()
        if len(strides) != len(channel_multiples) or not strides:
            raise ValueError(f"Oobleck: strides and channel_multiples must have one entry per block, got "
                             f"{list(strides)} and {list(channel_multiples)}")
        self.audio_channels, self.latent_channels = audio_channels, latent_channels
        self.sample_rate = int(sample_rate)
        self.strides = [int(s) for s in strides]
        self.latent_hop = math.prod(self.strides)
        enc = [channels * m for m in (1, *channel_multiples)]
        self.encoder = nn.ModuleDict({
            "conv_in": nn.Conv1d(audio_channels, enc[0], 7, padding=3),
            "blocks": nn.Sequential(*(EncoderBlock(enc[i], enc[i + 1], s) for i, s in enumerate(self.strides))),
            "act_out": SnakeBeta(enc[-1]),
            "conv_out": nn.Conv1d(enc[-1], 2 * latent_channels, 3, padding=1),
        })
        dec = [decoder_channels * m for m in (1, *channel_multiples)][::-1]
        self.decoder = nn.ModuleDict({
            "conv_in": nn.Conv1d(latent_channels, dec[0], 7, padding=3),
            "blocks": nn.Sequential(*(DecoderBlock(dec[i], dec[i + 1], s)
                                      for i, s in enumerate(self.strides[::-1]))),
            "act_out": SnakeBeta(dec[-1]),
            "conv_out": nn.Conv1d(dec[-1], audio_channels, 7, padding=3, bias=False),
        })

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.latent_hop

    def encode(self, wav: Tensor) -> DiagonalGaussian:
        """wav [B, audio_channels, T] at sample_rate Hz (T a multiple of latent_hop) → q(z | wav), z [B, D, T / hop]."""
        if wav.ndim != 3 or wav.shape[1] != self.audio_channels or wav.shape[-1] % self.latent_hop:
            raise ValueError(f"Oobleck.encode: expected wav [B, {self.audio_channels}, T] with T a multiple of "
                             f"{self.latent_hop}, got {tuple(wav.shape)}")
        e = self.encoder
        return DiagonalGaussian.from_parameters(e.conv_out(e.act_out(e.blocks(e.conv_in(wav)))))

    def decode(self, z: Tensor) -> Tensor:
        """z [B, latent_channels, L] → wav [B, audio_channels, L · latent_hop]."""
        if z.ndim != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"Oobleck.decode: expected z [B, {self.latent_channels}, L], got {tuple(z.shape)}")
        d = self.decoder
        return d.conv_out(d.act_out(d.blocks(d.conv_in(z))))
