"""Normalised log-mel spectrogram as the diffusion representation, decoded by a vocoder."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from audiodiff.audio.mel import DEFAULT_MEL, MelSpectrogram, NormalisedLogMel
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


class MelRepresentation(NormalisedLogMel, Representation):
    """z = (log(max(mel, floor)) − mean) / std per mel band; wav = vocoder(exp(z · std + mean)).

    wav: [B, C, T] at `sample_rate` Hz ↔ z: [B, C · n_mels, T // hop_length + 1] (centred framing; `num_frames`
    gives the count for a duration), one mel per audio channel stacked channel-major (left bands, then right). The
    normalised log-mel is :class:`~audiodiff.audio.mel.NormalisedLogMel` (`mean`/`std` buffers fitted once on
    training audio and stored with the model, shared by the channels).

    vocoder: a module mapping a linear-magnitude mel [B, n_mels, F] to wav [B, T] (e.g. GriffinLimVocoder or a
    trained HiFi-GAN), or None for an encode-only representation. It is mono: each channel is decoded on its own.
    """

    def __init__(self, sample_rate: int = DEFAULT_MEL.sample_rate, n_fft: int = DEFAULT_MEL.n_fft,
                 hop_length: int = DEFAULT_MEL.hop_length, n_mels: int = DEFAULT_MEL.n_mels,
                 f_min: float = DEFAULT_MEL.f_min, f_max: float | None = DEFAULT_MEL.f_max,
                 scale: Literal["slaney", "htk"] = "slaney", log_floor: float = DEFAULT_MEL.log_floor,
                 channels: int = 1, vocoder: nn.Module | None = None) -> None:
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
                         f_max=f_max, scale=scale, log_floor=log_floor, channels=channels)
        self.latent_channels = channels * n_mels
        self.frame_rate = sample_rate / hop_length
        if vocoder is not None:
            check_vocoder(vocoder, self.mel, log_floor)
        self.vocoder = vocoder

    def num_frames(self, seconds: float) -> int:
        """Frames covering `seconds`: T // hop + 1 for centred framing, enough that decoding gives ≥ T samples."""
        samples = int(round(seconds * self.sample_rate))
        return -(-samples // self.hop_length) + 1

    def decode(self, z: Tensor) -> Tensor:
        """z [B, C · n_mels, F] → wav [B, C, T]: (F − 1) · hop_length samples from Griffin-Lim, F · hop_length from
        HiFi-GAN; callers crop to the length they asked for. The channels go through the vocoder as one batch."""
        if self.vocoder is None:
            raise RuntimeError("MelRepresentation.decode: no vocoder configured")
        if z.dim() != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"MelRepresentation.decode: expected z [B, {self.latent_channels}, F] "
                             f"({self.channels} × {self.n_mels} bands), got {tuple(z.shape)}")
        mel = self.decode_mel(z)  # [B, C · n_mels, F]
        wav = self.vocoder(mel.reshape(-1, self.n_mels, mel.shape[-1]))  # [B · C, T]
        return wav.reshape(z.shape[0], self.channels, -1)
