"""What the trainable autoencoders share: the diagonal Gaussian posterior and the VAE interface.

A variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes") encodes audio to a posterior
q(z | x) = N(mean, diag(std²)) over latents z [B, D, L], is trained on decoder(z ~ q) with a reconstruction loss plus
a small KL(q || N(0, I)) (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
Section 3.1: a slight KL penalty keeps the latent space from growing arbitrarily in scale), and serves diffusion
through its posterior mean (:class:`audiodiff.representations.autoencoder.AutoencoderRepresentation`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

AutoencoderKind = Literal["mel_vae", "waveform_vae"]
MIN_STD = 1e-4  # added to softplus(s) so the posterior never collapses to a point (Stable Audio's VAEBottleneck)


@dataclass(frozen=True)
class DiagonalGaussian:
    """q(z | x) = N(mean, diag(std²)); `mean`, `std`: [B, D, L], std > 0."""

    mean: Tensor
    std: Tensor

    @classmethod
    def from_parameters(cls, params: Tensor) -> DiagonalGaussian:
        """Encoder output [B, 2D, L] split along channels into the mean and a pre-activation s, with
        std = softplus(s) + MIN_STD (Evans et al. 2024, "Stable Audio Open": Oobleck's VAE bottleneck)."""
        if params.ndim != 3 or params.shape[1] % 2:
            raise ValueError(f"DiagonalGaussian.from_parameters: expected [B, 2D, L], got {tuple(params.shape)}")
        mean, scale = params.chunk(2, dim=1)
        return cls(mean, nn.functional.softplus(scale) + MIN_STD)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std · ε, ε ~ N(0, I) (the reparameterisation trick): [B, D, L], differentiable in both."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) in nats per latent frame: ½ Σ_d (mean² + std² − 1 − log std²), summed over the D
        channels and averaged over batch and frames; a scalar."""
        var = self.std.square()
        return 0.5 * (self.mean.square() + var - 1.0 - var.log()).sum(1).mean()


class VariationalAutoencoder(nn.Module, ABC):
    """`encode(wav [B, 1, T]) -> DiagonalGaussian` over z [B, latent_channels, L]; `decode(z) -> output`.

    Attributes every autoencoder sets:
      kind            "mel_vae" (decodes a normalised log-mel, voiced by a vocoder) or "waveform_vae" (decodes audio).
      sample_rate     Hz of the waveforms it encodes.
      latent_channels D.
      latent_hop      waveform samples per latent frame (frame_rate = sample_rate / latent_hop).
    """

    kind: ClassVar[AutoencoderKind]
    sample_rate: int
    latent_channels: int
    latent_hop: int

    @property
    def frame_rate(self) -> float:
        """Latent frames per second of audio."""
        return self.sample_rate / self.latent_hop

    @abstractmethod
    def encode(self, wav: Tensor) -> DiagonalGaussian:
        """wav [B, 1, T] at `sample_rate` Hz → the posterior over z [B, D, num_latent_frames(T)]."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → what the autoencoder reconstructs (see the subclass)."""

    @abstractmethod
    def num_latent_frames(self, samples: int) -> int:
        """Latent frames L that `encode` gives for `samples` waveform samples."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments with `_target_`, plain Python values (YAML- and `weights_only`-safe)."""

    @property
    def is_fitted(self) -> bool:
        """Whether input statistics the autoencoder depends on are set (default: it has none)."""
        return True

    def fit_input_statistics(self, wavs: list[Tensor]) -> None:
        """Fit input statistics from waveform batches [B, 1, T] before training (default: nothing to fit)."""

    def num_parameters(self) -> int:
        """Trainable and frozen parameters, counted after weight norm is folded in (g and v count as one weight):
        the same number for the training and the inference form of one architecture."""
        total = sum(p.numel() for name, p in self.named_parameters() if ".parametrizations." not in f".{name}")
        for module in self.modules():
            if parametrize.is_parametrized(module):
                total += sum(getattr(module, name).numel() for name in module.parametrizations)
        return total

    def remove_weight_norm(self) -> VariationalAutoencoder:
        """Fold weight norm into plain weights (the inference form; same outputs). Returns `self`; idempotent.

        Runs with gradients enabled: under `torch.no_grad()` torch would register each folded weight as a buffer
        instead of a parameter."""
        with torch.enable_grad():
            for module in self.modules():
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def check_input(self, wav: Tensor) -> None:
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"{type(self).__name__}.encode: expected mono wav [B, 1, T], got {tuple(wav.shape)}")

    def check_latents(self, z: Tensor) -> None:
        if z.ndim != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"{type(self).__name__}.decode: expected z [B, {self.latent_channels}, L], got "
                             f"{tuple(z.shape)}")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and 2 ** round(math.log2(n)) == n
