"""Loudness measurement and normalisation (ITU-R BS.1770-4 via pyloudnorm).

Clips of at least one 400 ms gating block get pyloudnorm's gated integrated loudness. Shorter clips cannot
be gated; for them :func:`integrated_loudness` returns the ungated BS.1770 loudness of the whole clip: the
same K-weighting filters and channel weights, mean square over all samples, ``-0.691 + 10 log10(sum)``.
For a steady signal both agree; for a short clip the fallback is the loudness of its one (shorter) block.
Silence (and anything below the -70 LUFS absolute gate) measures ``-inf``.
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
