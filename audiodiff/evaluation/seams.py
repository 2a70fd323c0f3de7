"""Audible seams: is the spectrum more abrupt where generated windows join than elsewhere in the same clip?

Spectral flux (the half-wave rectified frame-to-frame increase of the log-mel spectrum, librosa's onset strength)
peaks at onsets and at discontinuities. A seam shows as a flux peak at the join that the rest of the clip does not
have, so each join's local maximum is compared with the local maxima of windows of the same width elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np
from torch import Tensor


def spectral_flux(wav: Tensor | np.ndarray, sample_rate: int, hop_length: int = 256) -> np.ndarray:
    """Spectral flux [frames] of a mono or multi-channel clip ([T] or [C, T], channels averaged), one value per
    `hop_length` samples (librosa.onset.onset_strength on a 128-band log-mel spectrum)."""
    data = wav.detach().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav)
    data = data.mean(axis=0) if data.ndim == 2 else data
    if data.ndim != 1:
        raise ValueError(f"wav: expected [T] or [C, T], got shape {data.shape}")
    return librosa.onset.onset_strength(y=data.astype(np.float32), sr=sample_rate, hop_length=hop_length)


def seam_score(wav: Tensor | np.ndarray, sample_rate: int, joins: Sequence[float], radius: float = 0.1,
               hop_length: int = 256) -> dict[str, float]:
    """Flux at the joins against flux elsewhere.

    joins: seconds; radius: half-width in seconds of the window examined around each join. Returns
    `join_flux` (mean over joins of the largest flux within ±radius), `other_flux` (median of the same statistic
    over every other non-overlapping window of that width away from the joins) and their `ratio` (about 1 when the joins
    are no more abrupt than the rest of the clip), plus `percentile`: where the mean join maximum falls among the
    other windows' maxima (0–100).
    """
    flux = spectral_flux(wav, sample_rate, hop_length)
    frames_per_second = sample_rate / hop_length
    half = max(1, round(radius * frames_per_second))
    centres = [round(j * frames_per_second) for j in joins]
    if not centres or any(not half <= c < len(flux) - half for c in centres):
        raise ValueError(f"joins: expected at least one, each at least {radius} s from the clip's ends, "
                         f"got {list(joins)}")
    at_joins = np.array([flux[c - half: c + half + 1].max() for c in centres])
    elsewhere = [flux[s: s + 2 * half + 1].max() for s in range(0, len(flux) - 2 * half, 2 * half + 1)
                 if all(abs(s + half - c) > 2 * half for c in centres)]
    if not elsewhere:
        raise ValueError("the clip is too short to compare its joins with anything else")
    other = np.asarray(elsewhere)
    join_mean, typical = float(at_joins.mean()), float(np.median(other))
    return {"join_flux": join_mean, "other_flux": typical, "ratio": join_mean / max(typical, 1e-12),
            "percentile": float((other < join_mean).mean() * 100.0), "joins": float(len(centres))}
