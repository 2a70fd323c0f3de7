"""Oobleck latents as the diffusion representation, at latent scale 1 (Stable Audio Open diffuses the posterior
latents as they are: no per-channel statistics)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from audiodiff.autoencoders.oobleck import Oobleck
from audiodiff.representations.base import Representation

OOBLECK_REPRESENTATION_TARGET = "audiodiff.representations.oobleck.OobleckRepresentation"


class OobleckRepresentation(Representation):
    """wav [B, C, T] at `sample_rate` Hz ↔ z [B, D, L], L = ceil(T / latent_hop) (T zero-padded on the right);
    decode gives L · latent_hop samples. Published: C = 2, D = 64, hop 2048 at 44.1 kHz (21.5 frames per second).

    encode returns the posterior mean; `encode_sample` draws from the posterior, as Stable Audio's audio-to-audio
    does. The arguments are those of :class:`audiodiff.autoencoders.oobleck.Oobleck` (vocoder: must be None; the
    model builder passes the configuration's).
    """

    def __init__(self, audio_channels: int = 2, latent_channels: int = 64, channels: int = 128,
                 decoder_channels: int = 128, strides: Sequence[int] = (2, 4, 4, 8, 8),
                 channel_multiples: Sequence[int] = (1, 2, 4, 8, 16), sample_rate: int = 44100,
                 vocoder: nn.Module | None = None) -> None:
        super().__init__()
        if vocoder is not None:
            raise ValueError(f"OobleckRepresentation decodes with its own decoder, but a vocoder "
                             f"({type(vocoder).__name__}) was given: set the vocoder to null")
        self.autoencoder = Oobleck(audio_channels, latent_channels, channels, decoder_channels, strides,
                                   channel_multiples, sample_rate).eval().requires_grad_(False)
        self.sample_rate = self.autoencoder.sample_rate
        self.channels = audio_channels
        self.latent_channels = latent_channels
        self.latent_hop = self.autoencoder.latent_hop
        self.frame_rate = self.autoencoder.frame_rate

    def train(self, mode: bool = True) -> OobleckRepresentation:
        """The autoencoder stays in eval mode whatever mode the surrounding model is put in."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def num_frames(self, seconds: float) -> int:
        """Latent frames whose decoding covers `seconds`."""
        return -(-int(round(seconds * self.sample_rate)) // self.latent_hop)

    def _padded(self, wav: Tensor) -> Tensor:
        if wav.ndim != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"OobleckRepresentation.encode: expected wav [B, {self.channels}, T], got "
                             f"{tuple(wav.shape)}")
        weight = next(self.autoencoder.parameters())
        return torch.nn.functional.pad(wav, (0, (-wav.shape[-1]) % self.latent_hop)).to(weight)

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → the posterior mean z [B, D, ceil(T / hop)]."""
        return self.autoencoder.encode(self._padded(wav)).mean

    def encode_sample(self, wav: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """wav [B, C, T] → a posterior sample z = mean + std · ε [B, D, ceil(T / hop)] (ε from `generator`)."""
        posterior = self.autoencoder.encode(self._padded(wav))
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=posterior.mean.dtype)
        return posterior.mean + posterior.std * noise.to(posterior.mean.device)

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → wav [B, C, L · hop] at `sample_rate` Hz."""
        weight = next(self.autoencoder.parameters())
        return self.autoencoder.decode(z.to(weight))
