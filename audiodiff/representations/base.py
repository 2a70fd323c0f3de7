"""The representation contract: what diffusion runs on, and how it maps to and from waveforms."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from torch import Tensor, nn

STD_FLOOR = 1e-3  # per-channel std is at least this share of the RMS std over channels (a near-constant channel
# would otherwise be scaled up without bound)


def channel_statistics(latents: Iterable[Tensor], channels: int, owner: str) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (unbiased) std [D] in float64 over every frame of latent batches [B, D, L].

    Accumulated batch by batch with the pairwise update of Chan, Golub & LeVeque (1979), so the sample need not fit
    in memory at once; a std below STD_FLOOR times the RMS std over channels is raised to it. `owner` names the
    caller in errors (fewer than 2 frames, or latents that do not vary at all)."""
    count = 0
    mean = torch.zeros(channels, dtype=torch.float64)
    m2 = torch.zeros_like(mean)  # sum of squared deviations from the mean
    for z in latents:
        z = z.transpose(1, 2).reshape(-1, channels).double().cpu()
        n, batch_mean = z.shape[0], z.mean(0)
        batch_m2 = (z - batch_mean).square().sum(0)
        delta, total = batch_mean - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + batch_m2 + delta.square() * (count * n / total)
        count = total
    if count < 2:
        raise ValueError(f"{owner}.fit_statistics: needs at least 2 latent frames, got {count}")
    std = (m2 / (count - 1)).sqrt()
    typical = float(std.square().mean().sqrt())
    if typical == 0.0:
        raise ValueError(f"{owner}.fit_statistics: the latents do not vary at all (silent audio?); fit on training "
                         f"audio")
    return mean, std.clamp_min(STD_FLOOR * typical)


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

    def encode_sample(self, wav: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latents of wav [B, C, T] as the model was trained on them, for audio-to-audio: a posterior sample where
        the representation diffuses samples (Stable Audio's Oobleck), else `encode` (the default)."""
        return self.encode(wav)

    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Set the latent scaling statistics from a sample of waveforms [B, C, T] (default: nothing to fit)."""

    @property
    def is_fitted(self) -> bool:
        return True

    def num_frames(self, seconds: float) -> int:
        """Latent frames L for `seconds` of audio."""
        return int(round(seconds * self.frame_rate))

    def encoder_state(self) -> dict[str, Tensor]:
        """Every parameter and buffer `encode` depends on (name → tensor), for fingerprints such as the latent cache's
        signature: the module tree without the vocoder, which only decodes."""
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return {name: t for name, t in tensors.items() if not name.startswith("vocoder.")}

    def signature(self) -> dict:
        """What must match between a checkpoint and the representation it is loaded with."""
        return {"type": type(self).__name__, "sample_rate": self.sample_rate, "channels": self.channels,
                "latent_channels": self.latent_channels, "frame_rate": round(float(self.frame_rate), 6)}
