"""Send clips through the mel representation and Griffin-Lim, as generated audio is decoded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from audiodiff.representations.mel import MelRepresentation
from audiodiff.vocoders.griffinlim import GriffinLimVocoder


def griffinlim_roundtrip(
    wavs: Sequence[np.ndarray],
    sample_rate: int = 16000,
    batch_size: int = 32,
    n_iter: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """wav → magnitude log-mel (the default `MelRepresentation`) → `GriffinLimVocoder` → wav.

    Args:
        wavs: clips `[T_i]` at `sample_rate` Hz (the representation's rate, 16 kHz by default).
        batch_size: clips per batched Griffin-Lim call (grouped by length, zero-padded).
        n_iter: Griffin-Lim iterations (the project's vocoder config uses 32).
        seed: initial-phase generator seed, so the result is reproducible.

    Returns:
        The reconstructed clips, `[T_i]` float32 each, in input order.
    """
    representation = MelRepresentation(sample_rate=sample_rate)
    vocoder = GriffinLimVocoder.from_mel_spectrogram(representation.mel, n_iter=n_iter)
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(wavs)
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, len(order), batch_size):
        chunk = order[lo : lo + batch_size]
        length = max(len(wavs[i]) for i in chunk)
        batch = torch.zeros(len(chunk), length)
        for row, i in enumerate(chunk):
            batch[row, : len(wavs[i])] = torch.from_numpy(np.asarray(wavs[i], dtype=np.float32))
        with torch.no_grad():
            rebuilt = vocoder(representation.mel(batch), generator=generator, length=length)
        for row, i in enumerate(chunk):
            out[i] = rebuilt[row, : len(wavs[i])].numpy().astype(np.float32)
    return out
