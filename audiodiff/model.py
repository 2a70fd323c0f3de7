"""The inference model: representation + denoiser + text encoder + objective, and prompt → waveform."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from audiodiff.conditioning.types import Conditioning
from audiodiff.diffusion.guidance import classifier_free_guidance
from audiodiff.diffusion.objectives import FlowMatching
from audiodiff.diffusion.samplers import flow_times, get_sampler
from audiodiff.representations.base import Representation


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample. name: a key of audiodiff.diffusion.samplers.SAMPLERS; guidance: classifier-free scale
    (1 = conditional model only, 0 = unconditional); shift: flow time shift (> 1 spends more steps at high noise)."""

    name: str = "flow_heun"
    steps: int = 25
    guidance: float = 3.0
    shift: float = 1.0


class DiffusionModel(nn.Module):
    """Everything needed to turn prompts into audio.

    representation: waveform ↔ latent z [B, D, L]; net: denoiser F(x, t, cond); text_encoder: captions →
    Conditioning; objective: the training objective, which also defines `denoise` for sampling.
    duration: default clip length in seconds (the training segment); max_duration: longest allowed request.
    """

    def __init__(self, representation: Representation, net: nn.Module, text_encoder: nn.Module,
                 objective: FlowMatching, sampler: SamplerSettings | None = None, duration: float = 4.0,
                 max_duration: float = 30.0) -> None:
        super().__init__()
        self.representation = representation
        self.net = net
        self.text_encoder = text_encoder
        self.objective = objective
        self.sampler = sampler or SamplerSettings()
        self.duration = duration
        self.max_duration = max_duration

    @property
    def sample_rate(self) -> int:
        return self.representation.sample_rate

    def encode_text(self, captions: list[str]) -> Conditioning:
        """Captions → Conditioning on this model's device ("" is the null condition)."""
        device = next(self.net.parameters()).device
        return self.text_encoder(captions).to(device)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], frames: int, seeds: list[int], settings: SamplerSettings,
                       negative_prompts: list[str] | None = None, net: nn.Module | None = None) -> Tensor:
        """Latents z [B, D, frames] for B prompts; prompt i starts from noise of a CPU generator seeded seeds[i],
        so its result does not depend on the rest of the batch."""
        net = self.net if net is None else net
        device = next(net.parameters()).device
        cond = self.encode_text(prompts)
        uncond = self.encode_text(negative_prompts or [""] * len(prompts)) if settings.guidance != 1.0 else None
        shape = (self.representation.latent_channels, frames)
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)

        def denoise(x: Tensor, t: Tensor, c: Conditioning) -> Tensor:
            return self.objective.denoise(net, x, t, c)

        guided = classifier_free_guidance(denoise, cond, uncond, settings.guidance)
        times = flow_times(settings.steps, settings.shift, device=device)
        return get_sampler(settings.name)(guided, noise, times)

    @torch.no_grad()
    def generate(self, prompts: list[str], duration: float | None = None, settings: SamplerSettings | None = None,
                 seed: int = 0, negative_prompts: list[str] | None = None, net: nn.Module | None = None) -> Tensor:
        """Waveforms [B, C, T] at `sample_rate` Hz, T = duration · sample_rate; prompt i uses seed `seed + i`."""
        settings = settings or self.sampler
        duration = self.duration if duration is None else duration
        frames = self.representation.num_frames(duration)
        seeds = [seed + i for i in range(len(prompts))]
        latents = self.sample_latents(prompts, frames, seeds, settings, negative_prompts, net)
        wav = self.representation.decode(latents)
        return wav[..., : int(round(duration * self.sample_rate))]
