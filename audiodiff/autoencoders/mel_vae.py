"""A VAE over the normalised log-mel that compresses it r-fold in time (r = 4 or 8): a 1D convolutional ResNet.

The layout follows the autoencoder of latent diffusion (Rombach et al. 2022, Section 3.1 and Appendix G: ResNet
blocks with group norm and SiLU, strided downsampling, a KL-regularised bottleneck) in one dimension, with the mel
bands as input channels, as in AudioLDM's mel VAE (Liu et al. 2023) but compressing time only. Its own
:class:`~audiodiff.audio.mel.NormalisedLogMel` computes the normalised log-mel; that mel's
statistics are fitted once before training and stored with the weights. Waveforms come back through the mel
representation's vocoder (:class:`audiodiff.representations.autoencoder.AutoencoderRepresentation`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from audiodiff.audio.mel import DEFAULT_MEL, MelScale, NormalisedLogMel
from audiodiff.autoencoders.base import DiagonalGaussian, VariationalAutoencoder, ceil_div, is_power_of_two

MEL_VAE_TARGET = "audiodiff.autoencoders.mel_vae.MelVAE"


def _groups(channels: int) -> int:
    """Group-norm groups: 32 as in latent diffusion, fewer for narrow layers (a divisor of `channels`)."""
    return math.gcd(32, channels)


class ResBlock1d(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))) with a 1×1 skip when widths differ; kernel 3, length kept.
    x: [B, c_in, F] → [B, c_out, F]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class MelVAE(VariationalAutoencoder):
    """Normalised log-mel x [B, n_mels, F] ↔ z [B, latent_channels, ceil(F / downsample)].

    Encoder: conv → per level (num_res_blocks ResBlocks, then a stride-2 conv of kernel 4 that halves the frames and
    doubles the width) → ResBlocks → norm, SiLU, conv to 2·latent_channels (mean, softplus scale). The decoder mirrors
    it with stride-2 transposed convolutions (kernel 4, padding 1: exactly twice the frames) and ends in a conv to
    n_mels; its output is the normalised log-mel, unbounded. Widths: `channels` at the mel frame rate, doubled at each
    halving of the frame rate.

    Lengths: `encode_mel` pads the mel on the right with silent frames (log(log_floor), normalised) to a multiple of
    `downsample` (`pad_mel`), so F frames give L = ceil(F / downsample) latent frames; `decode` gives L · downsample
    frames, trained to reproduce the padded mel (the first F frames are the clip's, the rest silence). From a
    waveform of T samples (centred framing, F = T // hop_length + 1): L = ceil((T // hop_length + 1) / downsample);
    `latent_hop` = hop_length · downsample samples per latent frame.

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max, scale, log_floor: the log-mel (as
            :class:`~audiodiff.audio.mel.NormalisedLogMel`; a vocoder must match them).
        latent_channels: D.
        downsample: r, the time compression: a power of two (4 or 8 in the shipped configurations).
        channels: width at the mel frame rate.
        num_res_blocks: ResBlocks per level.
    """

    kind = "mel_vae"

    def __init__(self, sample_rate: int = DEFAULT_MEL.sample_rate, n_fft: int = DEFAULT_MEL.n_fft,
                 hop_length: int = DEFAULT_MEL.hop_length, n_mels: int = DEFAULT_MEL.n_mels,
                 f_min: float = DEFAULT_MEL.f_min, f_max: float | None = DEFAULT_MEL.f_max, scale: MelScale = "slaney",
                 log_floor: float = DEFAULT_MEL.log_floor, latent_channels: int = 32, downsample: int = 4,
                 channels: int = 128, num_res_blocks: int = 2) -> None:
        super().__init__()
        if not is_power_of_two(downsample) or downsample < 2:
            raise ValueError(f"MelVAE: downsample must be a power of two >= 2 (4 or 8), got {downsample}")
        if latent_channels < 1 or channels < 1 or num_res_blocks < 0:
            raise ValueError(f"MelVAE: need latent_channels >= 1, channels >= 1, num_res_blocks >= 0; got "
                             f"{latent_channels}, {channels}, {num_res_blocks}")
        self.mel = NormalisedLogMel(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                    f_min=f_min, f_max=f_max, scale=scale, log_floor=log_floor)
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.scale = scale
        self.log_floor = log_floor
        self.latent_channels = latent_channels
        self.downsample = downsample
        self.channels = channels
        self.num_res_blocks = num_res_blocks
        self.latent_hop = hop_length * downsample

        levels = int(math.log2(downsample))
        widths = [channels * 2**i for i in range(levels + 1)]
        encoder: list[nn.Module] = [nn.Conv1d(n_mels, widths[0], 3, padding=1)]
        for i in range(levels):
            encoder += [ResBlock1d(widths[i], widths[i]) for _ in range(num_res_blocks)]
            encoder.append(nn.Conv1d(widths[i], widths[i + 1], 4, stride=2, padding=1))
        encoder += [ResBlock1d(widths[-1], widths[-1]) for _ in range(num_res_blocks)]
        encoder += [nn.GroupNorm(_groups(widths[-1]), widths[-1]), nn.SiLU(),
                    nn.Conv1d(widths[-1], 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [nn.Conv1d(latent_channels, widths[-1], 3, padding=1)]
        decoder += [ResBlock1d(widths[-1], widths[-1]) for _ in range(num_res_blocks)]
        for i in reversed(range(levels)):
            decoder.append(nn.ConvTranspose1d(widths[i + 1], widths[i], 4, stride=2, padding=1))
            decoder += [ResBlock1d(widths[i], widths[i]) for _ in range(num_res_blocks)]
        decoder += [nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(), nn.Conv1d(widths[0], n_mels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    # ---- statistics of the input mel ------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether the log-mel statistics are set (they must be before training, and travel with the weights)."""
        return self.mel.is_fitted

    def fit_input_statistics(self, wavs: list[Tensor]) -> None:
        """Per-band log-mel mean and std from waveform batches [B, 1, T]."""
        self.mel.fit_statistics(wavs)

    def silence(self) -> Tensor:
        """The normalised log-mel of a silent frame, [n_mels]: (log(log_floor) − mean) / std."""
        return (math.log(self.log_floor) - self.mel.mean) / self.mel.std

    # ---- encoding and decoding ------------------------------------------------------------------------------
    def num_latent_frames(self, samples: int) -> int:
        """ceil((samples // hop_length + 1) / downsample)."""
        return ceil_div(samples // self.hop_length + 1, self.downsample)

    def pad_mel(self, x: Tensor) -> Tensor:
        """Normalised log-mel x [B, n_mels, F] → [B, n_mels, ceil(F / downsample) · downsample], silent frames
        appended: what the encoder sees, and what the decoder is trained to give back (padding included, so that
        decoding every frame of a latent gives silence past the clip, not whatever an untrained output holds)."""
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"MelVAE: expected a normalised log-mel [B, {self.n_mels}, F], got {tuple(x.shape)}")
        pad = -x.shape[-1] % self.downsample
        if not pad:
            return x
        silent = self.silence().to(x)[None, :, None].expand(x.shape[0], -1, pad)
        return torch.cat([x, silent], dim=-1)

    def encode_mel(self, x: Tensor) -> DiagonalGaussian:
        """Normalised log-mel x [B, n_mels, F] → posterior over z [B, D, ceil(F / downsample)] (`pad_mel` first)."""
        return DiagonalGaussian.from_parameters(self.encoder(self.pad_mel(x)))

    def encode(self, wav: Tensor) -> DiagonalGaussian:
        """wav [B, 1, T] → posterior over z [B, D, ceil((T // hop_length + 1) / downsample)]."""
        self.check_input(wav)
        return self.encode_mel(self.mel.encode(wav))

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → normalised log-mel [B, n_mels, L · downsample] (the frames past the clip decode to silence)."""
        self.check_latents(z)
        return self.decoder(z)

    def config(self) -> dict[str, Any]:
        return {"_target_": MEL_VAE_TARGET, "sample_rate": int(self.sample_rate), "n_fft": int(self.n_fft),
                "hop_length": int(self.hop_length), "n_mels": int(self.n_mels), "f_min": float(self.f_min),
                "f_max": None if self.f_max is None else float(self.f_max), "scale": str(self.scale),
                "log_floor": float(self.log_floor), "latent_channels": int(self.latent_channels),
                "downsample": int(self.downsample), "channels": int(self.channels),
                "num_res_blocks": int(self.num_res_blocks)}

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, hop_length={self.hop_length}, "
                f"downsample={self.downsample}, latent_channels={self.latent_channels}")
