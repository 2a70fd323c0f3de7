"""Interpretable DSP measurements shared by the attribute extractors and the corpus synthesisers.

Everything here works on mono float waveforms `wav: [T]` in [-1, 1] at `sample_rate` Hz and on the power
spectrogram the extractors share (16 kHz, n_fft 1024, hop 256, i.e. 62.5 frames per second, like the log-mel
representation the diffusion models generate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from audiodiff.audio.loudness import event_loudness

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
FRAME_RATE = SAMPLE_RATE / HOP  # 62.5 frames per second
# The short-block meter the extractors and synthesisers share lives beside the standard one in
# audiodiff.audio.loudness (`event_loudness`, whose docstring says why the two differ); this name is kept for code
# that imports it from here.
loudness_lufs = event_loudness


@dataclass(frozen=True)
class Spectrogram:
    """Power spectrogram of one clip.

    Attributes:
        power: `[F, N]` |STFT|² (Hann window, n_fft 1024, hop 256, centred frames), F = 513 bins.
        freqs: `[F]` bin centre frequencies in Hz.
        frame_db: `[N]` frame energy in dB (10·log10 of the summed power, floored at −120 dB).
    """

    power: np.ndarray
    freqs: np.ndarray
    frame_db: np.ndarray


_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


def power_spectrogram(wav: np.ndarray) -> Spectrogram:
    """Power spectrogram of `wav: [T]` at 16 kHz (see `Spectrogram`)."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="constant")
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _WINDOW, axis=1)
    power = (spec.real**2 + spec.imag**2).T.astype(np.float64)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    frame_db = 10.0 * np.log10(np.maximum(power.sum(axis=0), 1e-12))
    return Spectrogram(power=power, freqs=freqs, frame_db=frame_db)


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of `x: [N]` over `width` samples (edges use the samples that exist)."""
    width = min(width, x.size)  # np.convolve(mode="same") returns max(len(x), width) samples
    if width <= 1:
        return x.astype(np.float64)
    kernel = np.ones(width)
    num = np.convolve(x, kernel, mode="same")
    den = np.convolve(np.ones_like(x, dtype=np.float64), kernel, mode="same")
    return num / den


def segment_events(
    frame_db: np.ndarray,
    on_db: float = 22.0,
    off_db: float = 32.0,
    min_gap_frames: int = 4,
    min_len_frames: int = 1,
) -> list[tuple[int, int]]:
    """Sound events as `(start, stop)` frame ranges (stop exclusive) by hysteresis on a frame-energy curve.

    An event starts where `frame_db: [N]` rises above `max − on_db` and ends where it falls below
    `max − off_db`. Events separated by fewer than `min_gap_frames` quiet frames are merged (a decaying tail
    that wobbles around the threshold is one event); events shorter than `min_len_frames` are dropped.
    """
    if frame_db.size == 0:
        return []
    peak = float(frame_db.max())
    on, off = peak - on_db, peak - off_db
    events: list[list[int]] = []
    active = False
    start = 0
    for i, level in enumerate(frame_db):
        if not active and level >= on:
            active, start = True, i
        elif active and level < off:
            active = False
            events.append([start, i])
    if active:
        events.append([start, frame_db.size])
    merged: list[list[int]] = []
    for ev in events:
        if merged and ev[0] - merged[-1][1] < min_gap_frames:
            merged[-1][1] = ev[1]
        else:
            merged.append(ev)
    return [(a, b) for a, b in merged if b - a >= min_len_frames]


def mono_16k(wav: object, sample_rate: int, caller: str) -> np.ndarray:
    """`wav: [T]` or `[C, T]` numpy array or torch tensor -> `[T]` float32 at SAMPLE_RATE Hz; several channels are
    downmixed by their mean (the mono extractors read the downmix; `sfx_stereo`'s reads the channels itself).

    Errors name `caller` (e.g. "extract_sfx") and the problem: wrong shape, empty, NaN/Inf, bad sample rate.
    """
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().float().numpy()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 2 and 1 <= x.shape[0] <= 8:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"{caller}: expected wav [T] or [C, T] with C <= 8 channels, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{caller}: got an empty waveform")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{caller}: waveform holds NaN/Inf samples")
    if sample_rate <= 0:
        raise ValueError(f"{caller}: sample_rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        x = soxr.resample(x, sample_rate, SAMPLE_RATE).astype(np.float32)
    return x
