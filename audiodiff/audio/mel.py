"""Mel filterbanks and mel spectrograms in torch.

The filterbank follows librosa's ``mel_frequencies`` / ``filters.mel`` formulas (Slaney's Auditory Toolbox
scale and area normalisation, or the HTK scale ``2595 log10(1 + f / 700)``), computed in float64 so the
result does not depend on the default dtype. :class:`MelSpectrogram` matches
``librosa.feature.melspectrogram`` (and ``torchaudio.transforms.MelSpectrogram`` with the same settings)
to float precision; it is batched, differentiable and moves with ``.to(device)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

MelScale = Literal["slaney", "htk"]
MelNorm = Literal["slaney"] | None
PadMode = Literal["reflect", "constant", "replicate", "circular"]

# Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class MelSettings:
    """The toolkit's default log-mel: 64 Slaney bands of a 1024-point STFT with hop 256 at 16 kHz, 0–8 kHz, natural
    log floored at 1e-5. Configurations take the same values from conf/mel/default.yaml (a test keeps the two equal);
    code defaults and the waveform metrics take them from :data:`DEFAULT_MEL`."""

    sample_rate: int = 16000  # Hz
    n_fft: int = 1024
    hop_length: int = 256  # samples: 62.5 frames per second at 16 kHz
    n_mels: int = 64
    f_min: float = 0.0  # Hz
    f_max: float | None = 8000.0  # Hz; None = sample_rate / 2
    log_floor: float = 1e-5


DEFAULT_MEL = MelSettings()


def _check_scale(scale: str) -> None:
    if scale not in ("slaney", "htk"):
        raise ValueError(f"scale must be 'slaney' or 'htk', got {scale!r}")


def hz_to_mel(freqs: Tensor, scale: MelScale = "slaney") -> Tensor:
    """Frequencies in Hz (any shape) to mels on the Slaney or HTK scale (librosa ``hz_to_mel``)."""
    _check_scale(scale)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freqs / 700.0)
    linear = freqs / _SLANEY_HZ_PER_MEL
    log = _SLANEY_LOG_START_MEL + torch.log(freqs.clamp_min(_SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ) / (
        _SLANEY_LOG_STEP
    )
    return torch.where(freqs >= _SLANEY_LOG_START_HZ, log, linear)


def mel_to_hz(mels: Tensor, scale: MelScale = "slaney") -> Tensor:
    """Mels on the Slaney or HTK scale (any shape) to Hz (librosa ``mel_to_hz``)."""
    _check_scale(scale)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    linear = _SLANEY_HZ_PER_MEL * mels
    log = _SLANEY_LOG_START_HZ * torch.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_LOG_START_MEL))
    return torch.where(mels >= _SLANEY_LOG_START_MEL, log, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "slaney",
    norm: MelNorm = "slaney",
) -> Tensor:
    """Triangular mel filterbank, as librosa's ``filters.mel``.

    Args:
        sample_rate: Hz.
        n_fft: FFT size; the filterbank acts on its ``n_fft // 2 + 1`` one-sided bins.
        n_mels: number of mel bands.
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz, ``sample_rate / 2`` when ``None``.
        scale: ``"slaney"`` (librosa's default) or ``"htk"`` mel scale.
        norm: ``"slaney"`` divides each triangle by its width in Hz (constant energy per band); ``None``
            leaves peak-1 triangles.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float64 weights.
    """
    _check_scale(scale)
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    if n_fft < 2 or n_mels < 1 or sample_rate <= 0:
        raise ValueError(
            f"need sample_rate > 0, n_fft >= 2, n_mels >= 1; got {sample_rate=}, {n_fft=}, {n_mels=}"
        )
    nyquist = sample_rate / 2.0
    f_max = nyquist if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(
            f"need 0 <= f_min < f_max <= {nyquist} Hz (Nyquist), got f_min={f_min}, f_max={f_max}"
        )

    dtype = torch.float64
    fft_freqs = torch.linspace(0.0, nyquist, n_fft // 2 + 1, dtype=dtype)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min, dtype=dtype), scale)),
        float(hz_to_mel(torch.tensor(f_max, dtype=dtype), scale)),
        n_mels + 2,
        dtype=dtype,
    )
    hz_edges = mel_to_hz(mel_edges, scale)  # [n_mels + 2]
    widths = hz_edges.diff()  # [n_mels + 1]
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, K]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    empty = (weights.amax(dim=1) <= 0) & (hz_edges[:-2] > 0)
    if bool(empty.any()):
        warnings.warn(
            f"mel filterbank has {int(empty.sum())} empty band(s) for sample_rate={sample_rate}, "
            f"n_fft={n_fft}, n_mels={n_mels}: raise n_fft or lower n_mels",
            stacklevel=2,
        )
    return weights


class MelSpectrogram(torch.nn.Module):
    """Mel spectrogram ``|STFT|^power`` projected on a mel filterbank (librosa ``feature.melspectrogram``).

    STFT with a periodic Hann window of ``win_length`` samples zero-padded to ``n_fft``; with ``center`` the
    signal is padded by ``n_fft // 2`` on both sides (``pad_mode``) so frame ``f`` is centred on sample
    ``f * hop_length``. The window and filterbank are non-persistent buffers: they follow ``.to()`` but
    stay out of checkpoints, since they derive from the constructor arguments.

    Args:
        sample_rate: Hz.
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins.
        hop_length: samples between frames; ``frame_rate = sample_rate / hop_length`` frames per second.
        win_length: window length in samples (<= n_fft), ``n_fft`` when ``None``.
        n_mels: mel bands.
        f_min, f_max: band edges in Hz (``f_max = sample_rate / 2`` when ``None``).
        power: exponent on the STFT magnitude: 2.0 = power, 1.0 = magnitude.
        scale, norm: see :func:`mel_filterbank`.
        center: pad so that frames are centred on ``f * hop_length``.
        pad_mode: padding for ``center`` (``"reflect"`` needs more than ``n_fft // 2`` samples).
    """

    window: Tensor
    filterbank: Tensor

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        scale: MelScale = "slaney",
        norm: MelNorm = "slaney",
        center: bool = True,
        pad_mode: PadMode = "reflect",
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must lie in [1, n_fft={n_fft}], got {win_length}")
        if hop_length < 1:
            raise ValueError(f"hop_length must be >= 1, got {hop_length}")
        if power <= 0:
            raise ValueError(f"power must be > 0 (1.0 magnitude, 2.0 power), got {power}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.power = power
        self.scale: MelScale = scale
        self.norm: MelNorm = norm
        self.center = center
        self.pad_mode: PadMode = pad_mode
        dtype = torch.get_default_dtype()
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.to(dtype), persistent=False)
        self.register_buffer(
            "filterbank",
            mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, scale, norm).to(dtype),
            persistent=False,
        )

    @property
    def n_freqs(self) -> int:
        """One-sided STFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def frame_rate(self) -> float:
        """Frames per second, ``sample_rate / hop_length``."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def stft(self, wav: Tensor) -> Tensor:
        """Complex one-sided STFT: ``wav [..., T]`` -> ``[..., n_fft // 2 + 1, frames]``."""
        if wav.ndim < 1:
            raise ValueError("MelSpectrogram needs a tensor with a time axis, got a scalar")
        num_samples = wav.shape[-1]
        if not self.center:
            shortest = self.n_fft
        elif self.pad_mode == "reflect":
            shortest = self.n_fft // 2 + 1  # reflect padding needs more samples than it pads
        else:
            shortest = 1
        if num_samples < shortest:
            raise ValueError(
                f"wav has {num_samples} samples; n_fft={self.n_fft} with center={self.center}, "
                f"pad_mode={self.pad_mode!r} needs at least {shortest}"
            )
        lead = wav.shape[:-1]
        spec = torch.stft(
            wav.reshape(-1, num_samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(wav.dtype),
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(*lead, *spec.shape[-2:])

    def forward(self, wav: Tensor) -> Tensor:
        """``wav: [..., T]`` at ``sample_rate`` Hz -> mel ``[..., n_mels, frames]`` (linear, not log)."""
        spec = self.stft(wav)
        if self.power == 2.0:
            magnitude = spec.real.square() + spec.imag.square()
        elif self.power == 1.0:
            magnitude = spec.abs()
        else:
            magnitude = spec.abs().pow(self.power)
        return torch.matmul(self.filterbank.to(magnitude.dtype), magnitude)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"win_length={self.win_length}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, "
            f"power={self.power}, scale={self.scale!r}, norm={self.norm!r}, center={self.center}, "
            f"pad_mode={self.pad_mode!r}"
        )


def log_compress(mel: Tensor, floor: float = 1e-5) -> Tensor:
    """Natural log of ``mel`` clamped below at ``floor`` (> 0); any shape."""
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    return torch.log(torch.clamp(mel, min=floor))


def log_decompress(log_mel: Tensor) -> Tensor:
    """Inverse of :func:`log_compress` (``exp``); values that were below the floor come back as the floor."""
    return torch.exp(log_mel)


class NormalisedLogMel(torch.nn.Module):
    """z = (log(max(mel, floor)) − mean) / std per mel band, and back to a linear-magnitude mel.

    wav: [B, C, T] at `sample_rate` Hz ↔ z: [B, C · n_mels, T // hop_length + 1] (centred framing), channel-major:
    band k of audio channel c is row c · n_mels + k. Each channel gets its own mel (left and right, not mid and side:
    a magnitude mel has no phase, so mid and side could not be recombined into left and right, while per-channel
    mels decode with any mono vocoder and show a source's pan as a level difference between the two halves). The mel
    is a magnitude (power 1) spectrogram with Slaney-normalised bands; `mean`/`std` [n_mels] are buffers fitted once
    on training audio (:meth:`fit_statistics`) over every channel alike, so a sound normalises the same panned left
    or right; they travel with checkpoints and exports. The mel representation and the mel VAE both build on it.
    """

    def __init__(self, sample_rate: int = DEFAULT_MEL.sample_rate, n_fft: int = DEFAULT_MEL.n_fft,
                 hop_length: int = DEFAULT_MEL.hop_length, n_mels: int = DEFAULT_MEL.n_mels,
                 f_min: float = DEFAULT_MEL.f_min, f_max: float | None = DEFAULT_MEL.f_max, scale: MelScale = "slaney",
                 log_floor: float = DEFAULT_MEL.log_floor, channels: int = 1) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.channels = channels
        self.log_floor = log_floor
        self.mel = MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                  f_min=f_min, f_max=f_max, power=1.0, scale=scale, norm="slaney")
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def log_mel(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → unnormalised log-mel [B, C · n_mels, F] (natural log, floored at `log_floor`)."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}.encode: expected wav [B, {self.channels}, T] "
                             f"({self.channels} channel(s)), got {tuple(wav.shape)}")
        mel = log_compress(self.mel(wav.float()), floor=self.log_floor)  # [B, C, n_mels, F]
        return mel.flatten(1, 2)

    @torch.no_grad()
    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Per-band mean and std of the log-mel over a list of wav batches [B, C, T], every channel pooled."""
        logmel = torch.cat([self.log_mel(w.to(self.mean.device)).unflatten(1, (self.channels, self.n_mels))
                            .permute(0, 1, 3, 2).reshape(-1, self.n_mels) for w in wavs])
        self.mean.copy_(logmel.mean(0))
        self.std.copy_(logmel.std(0).clamp_min(1e-3))
        self.fitted.fill_(True)

    def _band_stats(self) -> tuple[Tensor, Tensor]:
        """mean, std as [C · n_mels, 1] columns (the per-band statistics repeated for every channel)."""
        return self.mean.repeat(self.channels)[:, None], self.std.repeat(self.channels)[:, None]

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → z [B, C · n_mels, F], roughly zero-mean unit-variance per band."""
        mean, std = self._band_stats()
        return (self.log_mel(wav) - mean) / std

    def decode_mel(self, z: Tensor) -> Tensor:
        """z [B, C · n_mels, F] → linear-magnitude mel [B, C · n_mels, F].

        Log-magnitudes are clamped to [log(log_floor), log(n_fft)]: below the floor encoding never goes, and no
        full-scale signal's STFT magnitude exceeds n_fft, so the clamp only catches latents no audio produces
        (an untrained or diverged model) before exp() overflows.
        """
        mean, std = self._band_stats()
        log_mel = z.float() * std + mean
        return torch.exp(log_mel.clamp(math.log(self.log_floor), math.log(self.n_fft)))
