"""Send clips through the mel representation and Griffin-Lim, as generated audio is decoded."""

from __future__ import annotations

import math
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
    mel_noise_db: float = 0.0,
    representation: MelRepresentation | None = None,
) -> list[np.ndarray]:
    """wav → magnitude mel (the default `MelRepresentation`, or `representation`) → `GriffinLimVocoder` → wav.

    With `mel_noise_db > 0` every mel bin is first scaled by a log-normal factor (Gaussian in dB with that
    standard deviation, mean chosen so that the expected power is unchanged), a stand-in for the speckle of a
    generated spectrogram.

    Args:
        wavs: clips `[T_i]` at `sample_rate` Hz (the representation's rate, 16 kHz by default).
        batch_size: clips per batched Griffin-Lim call (grouped by length, zero-padded).
        n_iter: Griffin-Lim iterations (the project's vocoder config uses 32).
        seed: seeds the initial phase and the mel noise, so the result is reproducible.
        mel_noise_db: standard deviation of the per-bin mel perturbation in dB (0 = none).
        representation: the mel to go through (e.g. `MelRepresentation(n_mels=128)`); its `sample_rate` must be
            `sample_rate`. None = the default mel at `sample_rate`.

    Returns:
        The reconstructed clips, `[T_i]` float32 each, in input order.
    """
    if representation is None:
        representation = MelRepresentation(sample_rate=sample_rate)
    elif representation.sample_rate != sample_rate:
        raise ValueError(f"griffinlim_roundtrip: representation at {representation.sample_rate} Hz, clips at "
                         f"{sample_rate} Hz")
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
            mel = representation.mel(batch)
            if mel_noise_db > 0:
                # E[10^(n/10)] = 1 for n ~ N(-σ² ln10 / 20, σ²): loudness stays put on average.
                mean_db = -(mel_noise_db**2) * math.log(10.0) / 20.0
                noise_db = mean_db + mel_noise_db * torch.randn(mel.shape, generator=generator)
                mel = mel * torch.pow(10.0, noise_db / 20.0)
            rebuilt = vocoder(mel, generator=generator, length=length)
        for row, i in enumerate(chunk):
            out[i] = rebuilt[row, : len(wavs[i])].numpy().astype(np.float32)
    return out
