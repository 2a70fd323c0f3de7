"""Normalised log-mel spectrogram as the diffusion representation, decoded by a vocoder."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from audiodiff.audio.mel import MelSpectrogram, log_compress
from audiodiff.representations.base import Representation


def check_vocoder(vocoder: nn.Module, mel: MelSpectrogram, log_floor: float | None = None) -> None:
    """Refuse a vocoder whose mel settings differ from the representation's: it would decode silently wrong audio.
    Compared where the vocoder (or its `mel`) states them: rate, FFT, hop, bands, band edges, power, log floor."""
    f_max = mel.f_max if mel.f_max is not None else mel.sample_rate / 2
    own = {"sample_rate": mel.sample_rate, "n_fft": mel.n_fft, "hop_length": mel.hop_length, "n_mels": mel.n_mels,
           "power": 1.0, "f_min": mel.f_min, "f_max": f_max, "log_floor": log_floor}
    own = {k: v for k, v in own.items() if v is not None}
    theirs = {k: getattr(vocoder, k, None) for k in own}
    theirs.update({k: getattr(getattr(vocoder, "mel", None), k, None) for k in own if theirs[k] is None})
    wrong = {k: (own[k], v) for k, v in theirs.items() if v is not None and float(v) != float(own[k])}
    if wrong:
        detail = ", ".join(f"{k}: representation {a}, vocoder {b}" for k, (a, b) in wrong.items())
        raise ValueError(f"vocoder {type(vocoder).__name__} does not match the mel representation ({detail})")


class MelRepresentation(Representation):
    """z = (log(max(mel, floor)) − mean) / std per mel band; wav = vocoder(exp(z · std + mean)).

    wav: [B, 1, T] at `sample_rate` Hz ↔ z: [B, n_mels, T // hop_length + 1] (centred framing; `num_frames`
    gives the count for a duration). The mel is a magnitude (power 1)
    spectrogram. `mean`/`std` are buffers fitted once on training audio (`fit_statistics`) and stored with the model.

    vocoder: a module mapping a linear-magnitude mel [B, n_mels, F] to wav [B, T] (e.g. GriffinLimVocoder or a
    trained HiFi-GAN), or None for an encode-only representation.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = 8000.0, scale: Literal["slaney", "htk"] = "slaney",
                 log_floor: float = 1e-5, vocoder: nn.Module | None = None) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.channels = 1
        self.latent_channels = n_mels
        self.hop_length = hop_length
        self.frame_rate = sample_rate / hop_length
        self.log_floor = log_floor
        self.n_fft = n_fft
        self.mel = MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                  f_min=f_min, f_max=f_max, power=1.0, scale=scale, norm="slaney")
        if vocoder is not None:
            check_vocoder(vocoder, self.mel, log_floor)
        self.vocoder = vocoder
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def log_mel(self, wav: Tensor) -> Tensor:
        """wav [B, 1, T] → unnormalised log-mel [B, n_mels, F]."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"MelRepresentation.encode: expected wav [B, 1, T], got {tuple(wav.shape)}")
        return log_compress(self.mel(wav[:, 0].float()), floor=self.log_floor)

    @torch.no_grad()
    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Per-band mean and std of the log-mel over a list of wav batches [B, 1, T]."""
        logmel = torch.cat([self.log_mel(w.to(self.mean.device)).transpose(1, 2).reshape(-1, self.latent_channels)
                            for w in wavs])
        self.mean.copy_(logmel.mean(0))
        self.std.copy_(logmel.std(0).clamp_min(1e-3))
        self.fitted.fill_(True)

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, 1, T] → z [B, n_mels, F], roughly zero-mean unit-variance per band."""
        return (self.log_mel(wav) - self.mean[:, None]) / self.std[:, None]

    def num_frames(self, seconds: float) -> int:
        """Frames covering `seconds`: T // hop + 1 for centred framing, enough that decoding gives ≥ T samples."""
        samples = int(round(seconds * self.sample_rate))
        return -(-samples // self.hop_length) + 1

    def decode_mel(self, z: Tensor) -> Tensor:
        """z [B, n_mels, F] → linear-magnitude mel [B, n_mels, F].

        Log-magnitudes are clamped to [log(log_floor), log(n_fft)]: below the floor encoding never goes, and no
        full-scale signal's STFT magnitude exceeds n_fft, so the clamp only catches latents no audio produces
        (an untrained or diverged model) before exp() overflows.
        """
        log_mel = z.float() * self.std[:, None] + self.mean[:, None]
        return torch.exp(log_mel.clamp(math.log(self.log_floor), math.log(self.n_fft)))

    def decode(self, z: Tensor) -> Tensor:
        """z [B, n_mels, F] → wav [B, 1, T]: (F − 1) · hop_length samples from Griffin-Lim, F · hop_length from
        HiFi-GAN; callers crop to the length they asked for."""
        if self.vocoder is None:
            raise RuntimeError("MelRepresentation.decode: no vocoder configured")
        wav = self.vocoder(self.decode_mel(z))
        return wav.unsqueeze(1)
