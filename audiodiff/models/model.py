"""The inference model: representation + denoiser + text encoder + objective, and prompt → waveform."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from audiodiff.conditioning.timing import TimingConditioning
from audiodiff.conditioning.types import Conditioning
from audiodiff.diffusion.editing import keep_known, start_latents
from audiodiff.diffusion.guidance import classifier_free_guidance
from audiodiff.diffusion.noise import BrownianTreeNoise
from audiodiff.diffusion.objectives import Objective
from audiodiff.diffusion.samplers import (
    SAMPLERS,
    Callback,
    NoiseSampler,
    get_sampler,
    initial_latents,
    sampler_options,
    takes_noise_sampler,
)
from audiodiff.representations.base import Representation

# SamplerSettings fields passed to the sampler function when it takes them.
SETTINGS_OPTIONS = ("eta", "s_churn")


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample.

    name: a key of audiodiff.diffusion.samplers.SAMPLERS; steps: grid steps (network calls for first-order
    samplers); guidance: classifier-free scale (1 = conditional model only, 0 = unconditional);
    shift: time shift (> 1 spends more steps at high noise); spacing: the objective's grid ("default",
    "uniform", "karras", "exponential", or "leading" / "trailing" / "linspace" for discrete VP models);
    eta: noise of ddim (0 = deterministic) and dpmpp_2m_sde (None = the sampler's default);
    s_churn: Karras' churn for euler / heun; guidance_rescale: φ of Lin et al. (2024), 0 = off;
    guidance_interval: flow times [lo, hi] where guidance applies (Kynkäänniemi et al. 2024), elsewhere the
    conditional model alone. noise: where an SDE sampler's step noise comes from: "gaussian" (drawn from each
    prompt's seed) or "brownian" (a Brownian tree per prompt seeded by it over the objective's noise range,
    `audiodiff.diffusion.noise`, as Stable Audio's published sampler draws it).
    """

    name: str = "flow_heun"
    steps: int = 25
    guidance: float = 3.0
    shift: float = 1.0
    spacing: str = "default"
    eta: float | None = None
    s_churn: float = 0.0
    guidance_rescale: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    noise: Literal["gaussian", "brownian"] = "gaussian"

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler: unknown {self.name!r}; expected one of {sorted(SAMPLERS)}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps: expected 1..1000, got {self.steps}")
        if not 0.0 <= self.guidance <= 30.0:
            raise ValueError(f"guidance: expected 0..30, got {self.guidance}")
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale: expected 0..1, got {self.guidance_rescale}")
        lo, hi = self.guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval: expected 0 <= lo <= hi <= 1, got {list(self.guidance_interval)}")
        allowed = sampler_options(self.name)
        if self.noise not in ("gaussian", "brownian"):
            raise ValueError(f"noise: expected 'gaussian' or 'brownian', got {self.noise!r}")
        if self.noise == "brownian" and not takes_noise_sampler(self.name):
            takers = [n for n in SAMPLERS if takes_noise_sampler(n)]
            raise ValueError(f"noise: sampler {self.name!r} takes no Brownian-tree noise (samplers that do: {takers})")
        for option, unset in (("eta", self.eta is None), ("s_churn", self.s_churn == 0.0)):
            if not unset and option not in allowed:
                takers = [n for n in SAMPLERS if option in sampler_options(n)]
                raise ValueError(f"{option}: sampler {self.name!r} takes no {option} (samplers that do: {takers})")
        object.__setattr__(self, "guidance_interval", (float(lo), float(hi)))

    def sampler_options(self) -> dict[str, float]:
        """Keyword options for the sampler function."""
        allowed = sampler_options(self.name)
        return {k: getattr(self, k) for k in SETTINGS_OPTIONS if k in allowed and getattr(self, k) is not None}


class DiffusionModel(nn.Module):
    """Everything needed to turn prompts into audio.

    representation: waveform ↔ latent z [B, D, L]; net: denoiser F(x, t, cond); text_encoder: captions →
    Conditioning; objective: the training objective, which also defines `denoise` for sampling.
    duration: default clip length in seconds (the training segment); max_duration: longest allowed request.
    timing: timing conditioning; with it the model always samples its `duration`-second window, told the length
    wanted, and crops (so max_duration is the window), unless the timing part says `fixed_window = False`
    (Stable Audio 3), whose model samples the length asked for, up to the timing's `max_seconds`.
    """

    def __init__(self, representation: Representation, net: nn.Module, text_encoder: nn.Module,
                 objective: Objective, sampler: SamplerSettings | None = None, duration: float = 4.0,
                 max_duration: float = 30.0, timing: TimingConditioning | None = None) -> None:
        super().__init__()
        self.representation = representation
        self.net = net
        self.text_encoder = text_encoder
        self.objective = objective
        self.sampler = sampler or SamplerSettings()
        self.duration = duration
        self.timing = timing
        self.fixed_window = timing is not None and getattr(timing, "fixed_window", True)
        if self.fixed_window:
            max_duration = duration
        elif timing is not None:
            max_duration = float(getattr(timing, "max_seconds", max_duration))
        self.max_duration = max_duration

    @property
    def sample_rate(self) -> int:
        return self.representation.sample_rate

    def encode_text(self, captions: list[str]) -> Conditioning:
        """Captions → Conditioning on this model's device ("" is the null condition)."""
        device = next(self.net.parameters()).device
        return self.text_encoder(captions).to(device)

    def condition(self, captions: list[str], seconds_start: Tensor | None = None,
                  seconds_total: Tensor | None = None) -> Conditioning:
        """Text conditioning plus, for a timing-conditioned model, the timing features of each item ([B] seconds)."""
        cond = self.encode_text(captions)
        if self.timing is None:
            return cond
        if seconds_start is None or seconds_total is None:
            raise ValueError("this model is timing-conditioned: seconds_start and seconds_total are needed")
        return self.timing.condition(cond, seconds_start, seconds_total)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], frames: int, seeds: list[int], settings: SamplerSettings,
                       negative_prompts: list[str] | None = None, net: nn.Module | None = None,
                       seconds_total: float | None = None, init: Tensor | None = None, strength: float = 1.0,
                       keep: Tensor | None = None, callback: Callback | None = None,
                       noise_sampler: NoiseSampler | None = None, local_keep: Tensor | None = None,
                       init_noise: Tensor | None = None) -> Tensor:
        """Latents z [B, D, frames] for B prompts. Prompt i draws its starting noise, then any sampler noise, from
        a CPU generator seeded seeds[i], so its result does not depend on the rest of the batch.

        seconds_total: the length asked of a timing-conditioned model (default: the whole window).
        init: latents [B, D, frames] to start from (`audiodiff.diffusion.editing`): with strength < 1 the sampler
        starts from them noised to t = strength (a variation); with keep ([frames] or [B, 1, frames] in [0, 1])
        the result equals them where keep is 1 (inpainting, continuation). local_keep: like keep, but given to a
        denoiser trained with a mask input (`takes_local`: cond.local = [keep, keep · init]) instead of replacing
        its estimate; the sampler starts from pure noise. callback(step, x_t, x̂0) sees every step.
        noise_sampler: the step noise of an SDE sampler that takes one (`NoiseSampler`), instead of the seeds'.
        init_noise: the unit starting noise [B, D, frames] instead of the seeds' first draw (with noise_sampler, a
        run that depends on no generator, for comparisons with other implementations).
        """
        net = self.net if net is None else net
        device = next(net.parameters()).device
        start = torch.zeros(len(prompts))
        total = torch.full((len(prompts),), self.duration if seconds_total is None else seconds_total)
        cond = self.condition(prompts, start, total)
        uncond = None
        if settings.guidance != 1.0:
            uncond = self.condition(negative_prompts or [""] * len(prompts), start, total)
        shape = (self.representation.latent_channels, frames)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
        if init_noise is not None:
            if tuple(init_noise.shape) != tuple(noise.shape):
                raise ValueError(f"init_noise: expected shape {tuple(noise.shape)}, got {tuple(init_noise.shape)}")
            noise = init_noise.to(noise)
        if local_keep is not None:
            if init is None or not getattr(net, "takes_local", False):
                raise ValueError("local_keep needs init latents and a denoiser trained with a mask input")
            mask = local_keep.to(noise).expand(len(prompts), 1, frames)
            local = torch.cat([mask, init.to(noise) * mask], dim=1)
            cond = replace(cond, local=local)
            uncond = None if uncond is None else replace(uncond, local=local)
            init = None

        def denoise(x: Tensor, t: Tensor, c: Conditioning) -> Tensor:
            return self.objective.denoise(net, x, t, c)

        guided = classifier_free_guidance(denoise, cond, uncond, settings.guidance, settings.guidance_rescale,
                                          settings.guidance_interval)
        times = self.objective.time_grid(settings.steps, settings.spacing, settings.shift,
                                         strength if init is not None else 1.0)
        if init is None:
            if strength != 1.0 or keep is not None:
                raise ValueError("strength < 1 and keep need the latents to start from (init)")
            x = initial_latents(noise, times)
        else:
            if tuple(init.shape) != (len(prompts), *shape):
                raise ValueError(f"init latents: expected shape {(len(prompts), *shape)}, got {tuple(init.shape)}")
            init = init.to(noise)
            x = start_latents(init, noise, float(times[0]))
            if keep is not None:
                guided = keep_known(guided, init, keep)
        options = settings.sampler_options()
        if noise_sampler is None and settings.noise == "brownian":
            noise_sampler = BrownianTreeNoise(shape, seeds, self.objective.grid_sigma_min,
                                              self.objective.grid_sigma_max, dtype=x.dtype, device=device)
        if noise_sampler is not None:
            if not takes_noise_sampler(settings.name):
                raise ValueError(f"noise_sampler: sampler {settings.name!r} takes no injected noise")
            options["noise_sampler"] = noise_sampler
        return get_sampler(settings.name)(guided, x, times, callback=callback, generator=generators, **options)

    @torch.no_grad()
    def generate(self, prompts: list[str], duration: float | None = None, settings: SamplerSettings | None = None,
                 seed: int | Sequence[int] = 0, negative_prompts: list[str] | None = None,
                 net: nn.Module | None = None, callback: Callback | None = None,
                 noise_sampler: NoiseSampler | None = None) -> Tensor:
        """Waveforms [B, C, T] at `sample_rate` Hz, T = duration · sample_rate; prompt i uses seed `seed + i`
        (or seed[i] when a sequence is given). noise_sampler: as in `sample_latents`."""
        settings = settings or self.sampler
        duration = self.duration if duration is None else duration
        window = self.duration if self.fixed_window else duration
        frames = self.representation.num_frames(window)
        latents = self.sample_latents(prompts, frames, seed_list(seed, len(prompts)), settings, negative_prompts,
                                      net, seconds_total=duration, callback=callback,
                                      noise_sampler=noise_sampler)
        wav = self.representation.decode(latents)
        return wav[..., : int(round(duration * self.sample_rate))]


def seed_list(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per item: `seed + i` for an int, else the given sequence (which must hold `count` seeds)."""
    if isinstance(seed, int):
        return [seed + i for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"seed: expected {count} seeds (one per prompt), got {len(seeds)}")
    return seeds
