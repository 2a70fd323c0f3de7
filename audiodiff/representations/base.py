"""The representation contract: what diffusion runs on, and how it maps to and from waveforms."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class Representation(nn.Module, ABC):
    """`encode(wav [B, C, T]) -> z [B, D, L]` and `decode(z) -> wav [B, C, T]`.

    Attributes every representation sets:
      sample_rate      Hz of the waveforms it takes and gives.
      channels         audio channels C.
      latent_channels  D.
      frame_rate       latent frames L per second of audio.
    Statistics used to scale latents to unit variance are buffers, so they travel with checkpoints and exports.
    """

    sample_rate: int
    channels: int
    latent_channels: int
    frame_rate: float

    @abstractmethod
    def encode(self, wav: Tensor) -> Tensor: ...

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor: ...

    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Set the latent scaling statistics from a sample of waveforms [B, C, T] (default: nothing to fit)."""

    @property
    def is_fitted(self) -> bool:
        return True

    def num_frames(self, seconds: float) -> int:
        """Latent frames L for `seconds` of audio."""
        return int(round(seconds * self.frame_rate))

    def signature(self) -> dict:
        """What must match between a checkpoint and the representation it is loaded with."""
        return {"type": type(self).__name__, "sample_rate": self.sample_rate, "channels": self.channels,
                "latent_channels": self.latent_channels, "frame_rate": round(float(self.frame_rate), 6)}
