"""A waveform VAE in the style of Stable Audio's Oobleck (Evans et al. 2024, "Stable Audio Open", Section 3.1) and
DAC (Kumar et al. 2023, "High-Fidelity Audio Compression with Improved RVQGAN"): strided 1D convolutions between
stacks of dilated residual units with snake activations, a VAE bottleneck instead of a quantiser, and a mirrored
decoder of transposed convolutions. Its continuous latents serve diffusion the way a codec's do.

Snake (Ziyin, Hartwig & Ueda 2020, "Neural Networks Fail to Learn Periodic Functions and How to Fix It"):
snake_α(x) = x + sin²(α x) / α, with a learnable α per channel (BigVGAN, Lee et al. 2023), kept as log α so it
stays positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from audiodiff.autoencoders.base import DiagonalGaussian, VariationalAutoencoder, ceil_div

WAVEFORM_VAE_TARGET = "audiodiff.autoencoders.waveform_vae.WaveformVAE"
OutputActivation = Literal["tanh", "clamp"]
_SNAKE_EPS = 1e-9  # BigVGAN's guard against α → 0
_DILATIONS = (1, 3, 9)  # of the residual units in every block (Oobleck, DAC)


class Snake(nn.Module):
    """snake(x) = x + sin²(α x) / (α + 1e-9) per channel, α = exp(log_alpha) (initially 1). x: [B, C, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.log_alpha.exp()
        return x + torch.sin(alpha * x).square() / (alpha + _SNAKE_EPS)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int = 0,
          bias: bool = True) -> nn.Module:
    """A weight-normed Conv1d (Salimans & Kingma 2016), as Oobleck's WNConv1d."""
    return parametrizations.weight_norm(nn.Conv1d(c_in, c_out, kernel, stride, padding, dilation, bias=bias))


class ResidualUnit(nn.Module):
    """x + conv1×1(snake(conv7_dilated(snake(x)))); length and width kept. x: [B, C, T]."""

    def __init__(self, channels: int, dilation: int, kernel: int = 7) -> None:
        super().__init__()
        self.layers = nn.Sequential(Snake(channels),
                                    _conv(channels, channels, kernel, dilation=dilation,
                                          padding=dilation * (kernel - 1) // 2),
                                    Snake(channels), _conv(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


def encoder_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Residual units (dilations 1, 3, 9) at c_in, snake, then a conv of kernel 2·stride, stride `stride`, padding
    ceil(stride / 2): T → T / stride for T a multiple of the stride."""
    return nn.Sequential(*(ResidualUnit(c_in, d) for d in _DILATIONS), Snake(c_in),
                         _conv(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))


def decoder_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Snake, a transposed conv of kernel 2·stride (padding ceil(stride / 2), output padding stride mod 2: exactly
    L → L · stride), then residual units (dilations 1, 3, 9) at c_out."""
    up = nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride, padding=math.ceil(stride / 2), output_padding=stride % 2)
    return nn.Sequential(Snake(c_in), parametrizations.weight_norm(up), *(ResidualUnit(c_out, d) for d in _DILATIONS))


class WaveformVAE(VariationalAutoencoder):
    """wav [B, 1, T] ↔ z [B, latent_channels, ceil(T / latent_hop)], latent_hop = prod(strides).

    Encoder (Oobleck): conv7 to `channels` → one encoder block per stride, widths channels · channel_mults[i] →
    snake → conv3 to 2·latent_channels (mean, softplus scale). Decoder: conv7 from latent_channels → decoder blocks
    in reverse → snake → conv7 to one channel (no bias) → `output`. Every convolution is weight-normed.

    Lengths: `encode` zero-pads T on the right to a multiple of latent_hop; `decode` gives exactly L · latent_hop
    samples (callers crop to the clip).

    Args:
        sample_rate: Hz.
        latent_channels: D.
        channels: width after the input convolution.
        channel_mults: width multiplier after each downsampling block (one per stride).
        strides: downsampling factor of each block, each >= 2: [2, 4, 4, 8] (hop 256) for a CPU-sized model,
            [2, 4, 4, 8, 8] (hop 2048) as Stable Audio Open.
        output: "tanh" bounds the decoded waveform smoothly; "clamp" passes it through and clips to [-1, 1] (Stable
            Audio Open decodes without tanh).
    """

    kind = "waveform_vae"

    def __init__(self, sample_rate: int = 16000, latent_channels: int = 64, channels: int = 128,
                 channel_mults: Sequence[int] = (1, 2, 4, 8, 16), strides: Sequence[int] = (2, 4, 4, 8, 8),
                 output: OutputActivation = "tanh") -> None:
        super().__init__()
        channel_mults, strides = [int(m) for m in channel_mults], [int(s) for s in strides]
        if len(channel_mults) != len(strides) or not strides:
            raise ValueError(f"WaveformVAE: need one channel multiplier per stride, got channel_mults={channel_mults}, "
                             f"strides={strides}")
        if any(s < 2 for s in strides) or any(m < 1 for m in channel_mults):
            raise ValueError(f"WaveformVAE: strides must be >= 2 and channel_mults >= 1, got strides={strides}, "
                             f"channel_mults={channel_mults}")
        if output not in ("tanh", "clamp"):
            raise ValueError(f"WaveformVAE: output must be 'tanh' or 'clamp', got {output!r}")
        self.sample_rate = sample_rate
        self.latent_channels = latent_channels
        self.channels = channels
        self.channel_mults = channel_mults
        self.strides = strides
        self.output = output
        self.latent_hop = math.prod(strides)

        widths = [channels] + [channels * m for m in channel_mults]
        self.encoder = nn.Sequential(
            _conv(1, widths[0], 7, padding=3),
            *(encoder_block(widths[i], widths[i + 1], s) for i, s in enumerate(strides)),
            Snake(widths[-1]), _conv(widths[-1], 2 * latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            _conv(latent_channels, widths[-1], 7, padding=3),
            *(decoder_block(widths[i + 1], widths[i], s) for i, s in reversed(list(enumerate(strides)))),
            Snake(widths[0]), _conv(widths[0], 1, 7, padding=3, bias=False))

    def num_latent_frames(self, samples: int) -> int:
        """ceil(samples / latent_hop)."""
        return ceil_div(samples, self.latent_hop)

    def encode(self, wav: Tensor) -> DiagonalGaussian:
        """wav [B, 1, T] in [-1, 1] → posterior over z [B, D, ceil(T / latent_hop)] (zero-padded on the right)."""
        self.check_input(wav)
        pad = -wav.shape[-1] % self.latent_hop
        return DiagonalGaussian.from_parameters(self.encoder(nn.functional.pad(wav, (0, pad))))

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → wav [B, 1, L · latent_hop] in [-1, 1]."""
        self.check_latents(z)
        wav = self.decoder(z)
        return torch.tanh(wav) if self.output == "tanh" else wav.clamp(-1.0, 1.0)

    def config(self) -> dict[str, Any]:
        return {"_target_": WAVEFORM_VAE_TARGET, "sample_rate": int(self.sample_rate),
                "latent_channels": int(self.latent_channels), "channels": int(self.channels),
                "channel_mults": list(self.channel_mults), "strides": list(self.strides), "output": str(self.output)}

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, strides={self.strides}, latent_hop={self.latent_hop}, "
                f"latent_channels={self.latent_channels}, output={self.output}")
