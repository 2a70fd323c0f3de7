"""What counts as a copy of a training recording, defined without any learnt or pooled embedding: the normalised
cross-correlation of two clips' log-mel spectrograms at their best time alignment.

Both clips are downmixed to mono, resampled to 16 kHz and turned into 64-band log-mel spectrograms (dB re full scale,
1024-sample window, 10 ms hop, floored at -80 dB). One is slid against the other by up to `max_shift_seconds`; at each
shift the Pearson correlation is taken over every band of the frames where either clip is active (its loudest band
above -60 dB), so long shared silences do not make two different short sounds look alike, and sound one clip has
where the other is silent counts against the match. The score is the largest correlation over shifts, in [-1, 1].
A generated clip whose score with some training clip reaches `COPY_THRESHOLD` (0.9) is a copy of it.

This is the reference the near-copy guard (`audiodiff.guard`) is measured against; the guard itself compares a
coarse embedding by cosine similarity, with no alignment search, so the two can disagree.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from audiodiff.audio.mel import MelSpectrogram
from audiodiff.evaluation.embedders.base import prepare_clips

COPY_THRESHOLD = 0.9  # aligned log-mel correlation at or above which a clip is a copy of another
RATE = 16_000  # Hz
HOP = 160  # samples: 10 ms frames
FLOOR_DB = -80.0
ACTIVE_DB = -60.0  # a frame is active when its loudest band is above this


class CopyScorer:
    """Aligned log-mel correlation (module docstring), with each clip's spectrogram computed once.

    max_shift_seconds: the largest time offset tried, each way.
    """

    def __init__(self, max_shift_seconds: float = 0.5) -> None:
        if max_shift_seconds < 0:
            raise ValueError(f"max_shift_seconds: expected >= 0, got {max_shift_seconds}")
        self.max_shift = int(round(max_shift_seconds * RATE / HOP))
        self.mel = MelSpectrogram(RATE, n_fft=1024, hop_length=HOP, n_mels=64, pad_mode="constant")

    def spectrogram(self, wav: Tensor, sample_rate: int) -> np.ndarray:
        """wav [C, T] at `sample_rate` Hz → log-mel [64, F] in dB re full scale, floored at -80 dB, float64."""
        clip = prepare_clips([wav], sample_rate, RATE, 1, "CopyScorer")[0]
        with torch.no_grad():
            power = self.mel(clip[0])
        return np.maximum(10.0 * np.log10(np.maximum(power.double().numpy(), 1e-20)), FLOOR_DB)

    def score(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """(best correlation in [-1, 1], the delay in seconds of b's content against a's at that alignment) of two
        spectrograms from `spectrogram`; -1 when neither clip has an active frame."""
        best, best_shift = -1.0, 0
        for shift in range(-self.max_shift, self.max_shift + 1):
            x, y = _overlay(a, b, shift)
            active = (x.max(axis=0) > ACTIVE_DB) | (y.max(axis=0) > ACTIVE_DB)
            if active.sum() < 2:
                continue
            x, y = x[:, active].ravel(), y[:, active].ravel()
            x, y = x - x.mean(), y - y.mean()
            denom = float(np.sqrt((x @ x) * (y @ y)))
            r = float(x @ y) / denom if denom > 0 else 0.0
            if r > best:
                best, best_shift = r, shift
        return best, -best_shift * HOP / RATE


def _overlay(a: np.ndarray, b: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """a [M, Fa] and b [M, Fb] moved `shift` frames later, both padded with the floor to one common frame range."""
    start, end = min(0, shift), max(a.shape[1], b.shape[1] + shift)
    x = np.full((a.shape[0], end - start), FLOOR_DB)
    y = np.full_like(x, FLOOR_DB)
    x[:, -start: -start + a.shape[1]] = a
    y[:, shift - start: shift - start + b.shape[1]] = b
    return x, y


def aligned_mel_correlation(a: Tensor, b: Tensor, sample_rate: int, max_shift_seconds: float = 0.5) -> float:
    """Max normalised cross-correlation of the log-mel spectrograms of clips a [C, T] and b [C, T'] (both at
    `sample_rate` Hz) over time shifts up to `max_shift_seconds` (module docstring)."""
    scorer = CopyScorer(max_shift_seconds)
    return scorer.score(scorer.spectrogram(a, sample_rate), scorer.spectrogram(b, sample_rate))[0]


def is_copy(a: Tensor, b: Tensor, sample_rate: int, threshold: float = COPY_THRESHOLD) -> bool:
    """True when `aligned_mel_correlation(a, b)` reaches `threshold`."""
    return aligned_mel_correlation(a, b, sample_rate) >= threshold
