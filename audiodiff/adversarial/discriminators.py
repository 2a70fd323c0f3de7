"""GAN discriminators for waveform vocoders.

- :class:`MultiPeriodDiscriminator` and :class:`MultiScaleDiscriminator`: Kong, Kim & Bae (2020), "HiFi-GAN",
  Section 2.2-2.3.
- :class:`MultiResolutionSTFTDiscriminator`: Jang et al. (2021), "UnivNet", Section 2.3 (multi-resolution
  spectrogram discriminator).
- :class:`CombinedDiscriminator`: runs several of them on the same waveform and concatenates their outputs.

Every discriminator maps ``wav: [B, 1, T]`` (or ``[B, T]``) to ``(logits, feature_maps)``: ``logits`` is a list with
one ``[B, N_k]`` tensor per sub-discriminator ``k`` (per-patch scores, no sigmoid), ``feature_maps`` a list with one
list of intermediate activations per sub-discriminator, for :func:`audiodiff.adversarial.losses.feature_matching_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

DiscriminatorOutput = tuple[list[Tensor], list[list[Tensor]]]

_SLOPE = 0.1  # leaky ReLU slope of the HiFi-GAN discriminators


def _as_batch_channel_time(wav: Tensor, name: str) -> Tensor:
    """``[B, T]`` or ``[B, 1, T]`` -> ``[B, 1, T]``."""
    if wav.ndim == 2:
        return wav[:, None]
    if wav.ndim == 3 and wav.shape[1] == 1:
        return wav
    raise ValueError(f"{name}: expected a mono waveform [B, 1, T] or [B, T], got shape {tuple(wav.shape)}")


def _normed(module: nn.Module, spectral: bool = False) -> nn.Module:
    """``module`` under spectral norm (Miyato et al. 2018) or weight norm (Salimans & Kingma 2016)."""
    return parametrizations.spectral_norm(module) if spectral else parametrizations.weight_norm(module)


class PeriodDiscriminator(nn.Module):
    """One MPD branch (Kong et al. 2020, Section 2.2): the waveform folded to ``[B, 1, T / p, p]`` (reflect-padded to
    a multiple of ``p``) goes through 2-D convolutions with ``(5, 1)`` kernels, so each column of period ``p`` is
    judged independently.

    Logits: ``[B, H * p]`` with ``H = ceil^4(ceil(T / p) / 3)`` (four stride-3 layers). Feature maps: one per
    convolution plus the output layer.
    """

    def __init__(self, period: int, channels: Sequence[int] = (32, 128, 512, 1024, 1024), kernel_size: int = 5,
                 stride: int = 3) -> None:  # fmt: skip
        super().__init__()
        if period < 1:
            raise ValueError(f"PeriodDiscriminator: period must be >= 1, got {period}")
        self.period = period
        pad = (kernel_size - 1) // 2
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            _normed(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride if i < len(channels) - 1 else 1, 1), (pad, 0)))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.conv_post = _normed(nn.Conv2d(widths[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``wav: [B, 1, T]`` -> ``(logits [B, N], feature maps)``."""
        x = _as_batch_channel_time(wav, type(self).__name__)
        batch, channels, length = x.shape
        if length % self.period:
            x = nn.functional.pad(x, (0, self.period - length % self.period), mode="reflect")
        x = x.view(batch, channels, -1, self.period)
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), _SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiPeriodDiscriminator(nn.Module):
    """MPD: one :class:`PeriodDiscriminator` per period (Kong et al. 2020: 2, 3, 5, 7, 11, primes so that
    the branches see disjoint periodic structure)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024)) -> None:  # fmt: skip
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(int(p), channels) for p in periods)

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav: [B, 1, T]`` -> one logits tensor and one feature-map list per period."""
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class ScaleDiscriminator(nn.Module):
    """One MSD branch (Kong et al. 2020, Section 2.3, after MelGAN): strided, grouped 1-D convolutions.

    With the default strides ``(1, 2, 2, 4, 4, 1, 1)`` the logits are ``[B, ceil(ceil(ceil(ceil(T/2)/2)/4)/4)]``.
    Feature maps: one per convolution plus the output layer.
    """

    def __init__(
        self,
        channels: Sequence[int] = (128, 128, 256, 512, 1024, 1024, 1024),
        groups: Sequence[int] = (1, 4, 16, 16, 16, 16, 1),
        kernel_sizes: Sequence[int] = (15, 41, 41, 41, 41, 41, 5),
        strides: Sequence[int] = (1, 2, 2, 4, 4, 1, 1),
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if not len(channels) == len(groups) == len(kernel_sizes) == len(strides):
            raise ValueError(
                f"ScaleDiscriminator: channels, groups, kernel_sizes and strides need one entry per layer, got "
                f"{len(channels)}, {len(groups)}, {len(kernel_sizes)}, {len(strides)}"
            )
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            _normed(nn.Conv1d(c_in, c_out, k, s, groups=g, padding=(k - 1) // 2), spectral_norm)
            for c_in, c_out, k, s, g in zip(widths[:-1], widths[1:], kernel_sizes, strides, groups, strict=True)
        )
        self.conv_post = _normed(nn.Conv1d(widths[-1], 1, 3, 1, padding=1), spectral_norm)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``wav: [B, 1, T]`` -> ``(logits [B, N], feature maps)``."""
        x = _as_batch_channel_time(wav, type(self).__name__)
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), _SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiScaleDiscriminator(nn.Module):
    """MSD: ``num_scales`` :class:`ScaleDiscriminator` on the raw waveform and on ×2, ×4, ... average-pooled copies
    (``AvgPool1d(4, 2, padding=2)``: ``T -> T // 2 + 1``); the raw-scale branch uses spectral norm, the others weight
    norm (Kong et al. 2020, Section 2.3)."""

    def __init__(
        self,
        num_scales: int = 3,
        channels: Sequence[int] = (128, 128, 256, 512, 1024, 1024, 1024),
        groups: Sequence[int] = (1, 4, 16, 16, 16, 16, 1),
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"MultiScaleDiscriminator: num_scales must be >= 1, got {num_scales}")
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(channels, groups, spectral_norm=i == 0) for i in range(num_scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav: [B, 1, T]`` -> one logits tensor and one feature-map list per scale."""
        x = _as_batch_channel_time(wav, type(self).__name__)
        logits, features = [], []
        for i, discriminator in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x)
            score, fmap = discriminator(x)
            logits.append(score)
            features.append(fmap)
        return logits, features


class SpectrogramDiscriminator(nn.Module):
    """One branch of UnivNet's multi-resolution spectrogram discriminator (Jang et al. 2021, Section 2.3).

    Input: the linear STFT magnitude ``[B, 1, n_fft // 2 + 1, frames]`` of the waveform, reflect-padded by
    ``(n_fft - hop_length) // 2`` on both sides and framed without centring, so ``frames = (T + 2 * pad - n_fft)
    // hop_length + 1``. 2-D convolutions with ``(3, 9)`` kernels (frequency, time) and stride 2 along time in the
    middle three layers, leaky ReLU 0.2. UnivNet's code uses no analysis window; this uses a periodic Hann window.
    """

    window: Tensor

    def __init__(self, n_fft: int, hop_length: int, win_length: int, channels: int = 32) -> None:
        super().__init__()
        if not 0 < win_length <= n_fft or hop_length < 1:
            raise ValueError(
                f"SpectrogramDiscriminator: need 0 < win_length <= n_fft and hop_length >= 1, got {n_fft=}, "
                f"{hop_length=}, {win_length=}"
            )
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        layers = [(1, (3, 9), (1, 1))] + [(channels, (3, 9), (1, 2))] * 3 + [(channels, (3, 3), (1, 1))]
        self.convs = nn.ModuleList(
            _normed(nn.Conv2d(c_in, channels, k, s, padding=(k[0] // 2, k[1] // 2))) for c_in, k, s in layers
        )
        self.conv_post = _normed(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, wav: Tensor) -> Tensor:
        """``wav: [B, 1, T]`` -> STFT magnitude ``[B, 1, n_fft // 2 + 1, frames]``."""
        x = _as_batch_channel_time(wav, type(self).__name__)
        pad = (self.n_fft - self.hop_length) // 2
        x = nn.functional.pad(x, (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window.to(x.dtype), center=False,
                          return_complex=True)  # fmt: skip
        return spec.abs()[:, None]

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``wav: [B, 1, T]`` -> ``(logits [B, N], feature maps)``."""
        x = self.spectrogram(wav)
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.2)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class MultiResolutionSTFTDiscriminator(nn.Module):
    """MRD: one :class:`SpectrogramDiscriminator` per ``(n_fft, hop_length, win_length)`` resolution; defaults are
    UnivNet's (and Parallel WaveGAN's STFT-loss) resolutions."""

    def __init__(
        self,
        resolutions: Sequence[Sequence[int]] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240)),
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            SpectrogramDiscriminator(int(n), int(h), int(w), channels) for n, h, w in resolutions
        )

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav: [B, 1, T]`` -> one logits tensor and one feature-map list per resolution."""
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class CombinedDiscriminator(nn.Module):
    """Several multi-discriminators on the same waveform, outputs concatenated in order.

    HiFi-GAN is ``CombinedDiscriminator([MultiPeriodDiscriminator(), MultiScaleDiscriminator()])``: 5 + 3
    sub-discriminators whose losses are summed.
    """

    def __init__(self, discriminators: Sequence[nn.Module]) -> None:
        super().__init__()
        if not discriminators:
            raise ValueError("CombinedDiscriminator: needs at least one discriminator")
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav: [B, 1, T]`` -> logits and feature maps of every sub-discriminator."""
        logits: list[Tensor] = []
        features: list[list[Tensor]] = []
        for discriminator in self.discriminators:
            scores, fmaps = discriminator(wav)
            logits.extend(scores)
            features.extend(fmaps)
        return logits, features
