"""How loud a watermark may be: segmental SNR in short frames, and the per-frame gain that keeps a mark under it.

A global SNR (mark energy against the whole clip's) hides marks that are audible in the quiet gaps between events;
the segmental SNR judges every 20 ms frame on its own, and frames below a silence level carry no mark at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

FRAME_SECONDS = 0.02  # frames of the segmental SNR (20 ms, non-overlapping, from sample 0)
SILENCE_DBFS = -60.0  # frames whose RMS is below this (dB relative to 1.0) are left unmarked


def _frames(wav: Tensor, sample_rate: int) -> Tensor:
    """wav [..., T] → [..., F, L] non-overlapping frames of L = round(0.02 · sample_rate) samples, the last one
    zero-padded."""
    length = max(1, round(FRAME_SECONDS * sample_rate))
    pad = (-wav.shape[-1]) % length
    return torch.nn.functional.pad(wav, (0, pad)).unflatten(-1, (-1, length))


def frame_rms_dbfs(wav: Tensor, sample_rate: int) -> Tensor:
    """RMS level of each 20 ms frame in dB relative to full scale 1.0: wav [..., T] → [..., F]."""
    power = _frames(wav.double(), sample_rate).pow(2).mean(-1)
    return 10.0 * torch.log10(power.clamp_min(1e-30))


def segmental_snr(clean: Tensor, marked: Tensor, sample_rate: int,
                  silence_dbfs: float = SILENCE_DBFS) -> tuple[float, int]:
    """The lowest per-frame SNR (dB) of `marked` against `clean` over 20 ms frames where `clean` is at or above
    `silence_dbfs`, and the number of silent frames where `marked` differs from `clean` at all.

    clean, marked: [..., T] at sample_rate Hz (same shape). Returns (min SNR in dB, +inf when no audible frame
    changed; marked silent frames)."""
    if clean.shape != marked.shape:
        raise ValueError(f"segmental_snr: clean {tuple(clean.shape)} and marked {tuple(marked.shape)} differ in shape")
    signal = _frames(clean.double(), sample_rate).pow(2).mean(-1)
    noise = _frames((marked.double() - clean.double()), sample_rate).pow(2).mean(-1)
    audible = 10.0 * torch.log10(signal.clamp_min(1e-30)) >= silence_dbfs
    snr = 10.0 * torch.log10(signal.clamp_min(1e-30) / noise.clamp_min(1e-300))
    worst = float(snr[audible & (noise > 0)].min()) if bool((audible & (noise > 0)).any()) else float("inf")
    return worst, int(((~audible) & (noise > 0)).sum())


def frame_gain(clean: Tensor, mark: Tensor, sample_rate: int, snr_db: float, max_gain: float,
               silence_dbfs: float = SILENCE_DBFS) -> Tensor:
    """A smooth gain envelope [..., T] for `mark` so that clean + gain · mark has a segmental SNR of at least
    `snr_db` in every 20 ms frame, the gain never exceeding `max_gain`, and zero in frames below `silence_dbfs`.

    Each frame's own gain g_f = min(max_gain, sqrt(P_clean / (P_mark · 10^(snr_db/10)))) is lowered to the minimum
    over it and its two neighbours, then interpolated linearly between frame centres: inside frame f the envelope
    lies between two values that are both at most g_f, so the bound holds sample by sample, with no steps that
    would click. clean, mark: [..., T] at sample_rate Hz."""
    signal = _frames(clean.double(), sample_rate).pow(2).mean(-1)
    energy = _frames(mark.double(), sample_rate).pow(2).mean(-1)
    gain = torch.sqrt(signal / (energy.clamp_min(1e-30) * 10.0 ** (snr_db / 10.0))).clamp(max=max_gain)
    gain = torch.where(10.0 * torch.log10(signal.clamp_min(1e-30)) >= silence_dbfs, gain, torch.zeros_like(gain))
    padded = torch.nn.functional.pad(gain.unsqueeze(-2).flatten(0, -2), (1, 1), mode="replicate")
    gain = -torch.nn.functional.max_pool1d(-padded, 3, 1).reshape(gain.shape)  # minimum over neighbours
    length = _frames(clean, sample_rate).shape[-1]
    centres = (torch.arange(gain.shape[-1], dtype=torch.float64) + 0.5) * length - 0.5
    t = torch.arange(clean.shape[-1], dtype=torch.float64)
    index = torch.searchsorted(centres, t).clamp(1, max(1, gain.shape[-1] - 1))
    if gain.shape[-1] == 1:
        return gain[..., :1].expand(*gain.shape[:-1], clean.shape[-1]).to(clean.dtype)
    left, right = centres[index - 1], centres[index]
    w = ((t - left) / (right - left)).clamp(0.0, 1.0)
    envelope = gain[..., index - 1] * (1 - w) + gain[..., index] * w
    return envelope.to(clean.dtype)
