"""Editing existing latents with any sampler: partial noising (audio-to-audio) and known-region replacement
(inpainting, continuation), in the canonical flow coordinates x_t = (1 - t) x0 + t ε of `schedules`.

- Variation (SDEdit, Meng et al. 2022): start from the input's latents noised to t0 = strength and run the tail of
  the time grid, so strength 1 ignores the input and small strengths stay close to it.
- Replacement (Song et al. 2021, "imputation"; Lugmayr et al. 2022 without resampling): wrap the denoiser so its
  x̂0 equals the known latents where `keep` is 1. Every sampler then moves the kept region along the straight
  path between its starting noise and the known latents, so the network sees the known content at the noise level
  of each step, and the result equals the known latents there exactly. A `keep` between 0 and 1 blends the two
  estimates, which cross-fades the join between kept and generated frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from audiodiff.diffusion.samplers import DenoiseFn


def strength_times(times: Tensor, strength: float) -> Tensor:
    """The tail of a decreasing time grid [steps + 1] that starts from noise level `strength` ∈ (0, 1].

    Keeps the last max(1, round(steps · strength)) steps, as diffusers' image-to-image pipelines do, so a uniform
    grid starts exactly at t = strength and strength 1 keeps the whole grid.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength: expected a number in (0, 1], got {strength}")
    steps = len(times) - 1
    keep = max(1, round(steps * strength))
    return times[steps - keep:]


def start_latents(init: Tensor, noise: Tensor, t0: float) -> Tensor:
    """x at time t0 on the path from `init` [B, D, L] to `noise` (same shape): (1 - t0) init + t0 noise."""
    if init.shape != noise.shape:
        raise ValueError(f"init latents {tuple(init.shape)} and noise {tuple(noise.shape)} differ in shape")
    return (1.0 - t0) * init + t0 * noise


def keep_known(denoise: DenoiseFn, known: Tensor, keep: Tensor) -> DenoiseFn:
    """A denoiser whose x̂0 is `known` where keep = 1, the network's where keep = 0, and their blend between.

    known: [B, D, L] latents; keep: [L], [1, 1, L] or [B, 1, L] weights in [0, 1] (broadcast over channels).
    """
    if keep.dim() == 1:
        keep = keep.view(1, 1, -1)
    if keep.shape[-1] != known.shape[-1]:
        raise ValueError(f"keep mask covers {keep.shape[-1]} frames but the known latents have {known.shape[-1]}")
    if float(keep.min()) < 0.0 or float(keep.max()) > 1.0:
        raise ValueError("keep mask: expected weights in [0, 1]")

    def denoise_keeping(x: Tensor, t: Tensor) -> Tensor:
        weight = keep.to(device=x.device, dtype=x.dtype)
        return weight * known.to(x) + (1.0 - weight) * denoise(x, t)

    return denoise_keeping


def keep_mask(frames: int, regenerate: Sequence[tuple[int, int]], crossfade: int = 0) -> Tensor:
    """A [frames] float mask that is 0 on each half-open frame range [start, end) of `regenerate` and 1 elsewhere,
    with linear ramps of `crossfade` frames on the kept side of every boundary (so kept frames next to a
    regenerated range are blended, and the regenerated range itself is never constrained)."""
    keep = torch.ones(frames)
    index = torch.arange(frames)
    for start, end in regenerate:
        if not 0 <= start < end <= frames:
            raise ValueError(f"range [{start}, {end}) does not lie inside 0..{frames} frames")
        distance = torch.maximum(start - index, index - (end - 1)).clamp_min(0)  # 0 inside, 1 next to it
        keep = torch.minimum(keep, (distance / (crossfade + 1)).clamp(max=1.0))
    return keep
