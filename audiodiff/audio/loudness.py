"""Loudness measurement and normalisation (ITU-R BS.1770-4 via pyloudnorm): the package's two loudness meters.

Both use BS.1770's K-weighting, channel weights and gates (-70 LUFS absolute, -10 LU relative); they differ in
the gating block, and so in what a short or sparse sound measures.

:func:`integrated_loudness` is the standard meter (400 ms blocks) for whole programmes: loudness normalisation of
generated audio and of the music corpus. Clips of at least one 400 ms gating block get pyloudnorm's gated
integrated loudness. Shorter clips cannot be gated; for them it returns the ungated BS.1770 loudness of the whole
clip: the same K-weighting filters and channel weights, mean square over all samples, ``-0.691 + 10 log10(sum)``.
For a steady signal both agree; for a short clip the fallback is the loudness of its one (shorter) block.
Silence (and anything below the -70 LUFS absolute gate) measures ``-inf``.

:func:`event_loudness` measures a sound's level while it sounds (50 ms blocks, mono, silence
:data:`SILENCE_LUFS`): 400 ms blocks average a 20 ms click with 380 ms of silence, so a click would read
far quieter than a held tone of the same level. The sfx corpus sets its "quiet"/"loud" levels with it and the sfx
attribute extractor reads them back with it; the extractor's fitted weights and thresholds are calibrated on its
values, so it must not be replaced by the standard meter (nor its block, padding or silence value changed).
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import torch
from pyloudnorm.iirfilter import IIRfilter
from torch import Tensor

# BS.1770 gating block; shorter clips use the ungated fallback.
_BLOCK_SECONDS = 0.4
# BS.1770 channel weights in the order [L, R, C, Ls, Rs]; pyloudnorm supports at most these five.
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
_ABSOLUTE_GATE_LUFS = -70.0
# event_loudness: 50 ms gating blocks, so that a single click is measured like a sustained tone
EVENT_BLOCK_SECONDS = 0.05
SILENCE_LUFS = -120.0  # what `event_loudness` reports for silence


def _as_frames(wav: Tensor, sample_rate: int) -> np.ndarray:
    """``wav [C, T]`` or ``[T]`` -> float64 numpy ``[T, C]`` after validation."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if wav.ndim == 1:
        wav = wav.unsqueeze(0)
    if wav.ndim != 2:
        raise ValueError(f"expected wav [C, T] or [T], got shape {tuple(wav.shape)}")
    if not 1 <= wav.shape[0] <= len(_CHANNEL_WEIGHTS):
        raise ValueError(
            f"BS.1770 loudness is defined here for 1 to {len(_CHANNEL_WEIGHTS)} channels [L, R, C, Ls, Rs], "
            f"got {wav.shape[0]}; downmix first"
        )
    if wav.shape[1] == 0:
        raise ValueError("cannot measure the loudness of zero samples")
    frames = wav.detach().to(device="cpu", dtype=torch.float64).numpy().T
    if not np.isfinite(frames).all():
        raise ValueError("cannot measure loudness: wav holds NaN/Inf samples")
    return np.ascontiguousarray(frames)


def _ungated_loudness(frames: np.ndarray, sample_rate: int) -> float:
    """BS.1770 loudness of ``frames [T, C]`` as one block: K-weighting, weighted mean square, no gating."""
    # pyloudnorm's "K-weighting" stages: high shelf (+4 dB above ~1.5 kHz), then a 38 Hz high-pass.
    stages = (
        IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sample_rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass"),
    )
    power = 0.0
    for channel in range(frames.shape[1]):
        filtered = frames[:, channel]
        for stage in stages:
            filtered = stage.apply_filter(filtered)
        power += _CHANNEL_WEIGHTS[channel] * float(np.mean(np.square(filtered)))
    if power <= 0.0:
        return -math.inf
    loudness = -0.691 + 10.0 * math.log10(power)
    return loudness if loudness >= _ABSOLUTE_GATE_LUFS else -math.inf


def integrated_loudness(wav: Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS.

    Args:
        wav: ``[C, T]`` (or ``[T]``) at ``sample_rate`` Hz, 1 to 5 channels ordered [L, R, C, Ls, Rs].
        sample_rate: Hz.

    Returns:
        LUFS; ``-inf`` for silence or anything below the -70 LUFS absolute gate. Clips shorter than 400 ms
        use the ungated fallback described in the module docstring.
    """
    frames = _as_frames(wav, sample_rate)
    if frames.shape[0] < _BLOCK_SECONDS * sample_rate:
        return _ungated_loudness(frames, sample_rate)
    loudness = float(pyloudnorm.Meter(sample_rate).integrated_loudness(frames))
    return loudness if math.isfinite(loudness) else -math.inf


def event_loudness(wav: np.ndarray, sample_rate: int) -> float:
    """BS.1770 gated loudness of `wav: [T]` or `[C, T]` (numpy, 1 to 5 channels ordered [L, R, C, Ls, Rs]) in LUFS,
    with :data:`EVENT_BLOCK_SECONDS` (50 ms) gating blocks, 75 % overlap: the level of a sound while it sounds (see
    the module docstring for why this differs from :func:`integrated_loudness`, and who depends on it).

    50 ms blocks measure a click like a held tone, which is also what a log-mel spectrogram shows. K-weighting,
    the channel weights (the channels' powers add up) and both gates (-70 LUFS absolute, -10 LU relative) are
    pyloudnorm's. Clips shorter than one block are zero-padded; silence gives :data:`SILENCE_LUFS` (a finite
    floor, unlike the standard meter's ``-inf``).
    """
    x = np.asarray(wav, dtype=np.float64)
    x = x.T if x.ndim == 2 else x.reshape(-1)  # pyloudnorm takes [T] or [T, C]
    if x.ndim == 2 and not 1 <= x.shape[1] <= len(_CHANNEL_WEIGHTS):
        raise ValueError(f"event_loudness: 1 to {len(_CHANNEL_WEIGHTS)} channels, got wav of shape {wav.shape}")
    block = int(round(EVENT_BLOCK_SECONDS * sample_rate))
    if x.shape[0] < block:
        x = np.pad(x, [(0, block - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    if not np.any(x):
        return SILENCE_LUFS
    value = pyloudnorm.Meter(sample_rate, block_size=EVENT_BLOCK_SECONDS).integrated_loudness(x)
    return float(value) if np.isfinite(value) else SILENCE_LUFS


def normalize_loudness(
    wav: Tensor, sample_rate: int, target_lufs: float = -23.0, peak: float = 0.99
) -> Tensor:
    """Scale ``wav`` to ``target_lufs``, then scale down further if its peak would exceed ``peak``.

    Args:
        wav: ``[C, T]`` (or ``[T]``) at ``sample_rate`` Hz.
        sample_rate: Hz.
        target_lufs: loudness to reach (EBU R 128 broadcast level is -23 LUFS).
        peak: largest allowed absolute sample value after the gain (0 < peak); the peak limit wins over the
            loudness target, so a very peaky clip ends up quieter than ``target_lufs``.

    Returns:
        The scaled tensor, same shape, dtype and device. Silence (``-inf`` loudness) is returned unchanged.
    """
    if not 0.0 < peak:
        raise ValueError(f"peak must be > 0, got {peak}")
    loudness = integrated_loudness(wav, sample_rate)
    if not math.isfinite(loudness):
        return wav.clone()
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    current_peak = float(wav.detach().abs().max())
    if current_peak * gain > peak:
        gain = peak / current_peak
    return wav * gain
