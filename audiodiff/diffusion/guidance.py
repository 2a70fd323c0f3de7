"""Classifier-free guidance (Ho & Salimans 2022) over an x̂0-predicting denoise function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from audiodiff.conditioning.types import Conditioning

CondDenoiseFn = Callable[[Tensor, Tensor, Conditioning], Tensor]


def rescale_guided(guided: Tensor, conditional: Tensor, phi: float) -> Tensor:
    """Guidance rescale (Lin et al. 2024, eqs. 15–16): match the guided estimate's per-sample standard deviation
    to the conditional one's, mixed by φ ∈ [0, 1] (0 = unchanged). guided, conditional: [B, ...]."""
    if phi == 0.0:
        return guided
    dims = tuple(range(1, guided.dim()))
    ratio = conditional.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return phi * guided * ratio + (1 - phi) * guided


def classifier_free_guidance(denoise: CondDenoiseFn, cond: Conditioning, uncond: Conditioning | None,
                             scale: float, rescale: float = 0.0,
                             interval: tuple[float, float] = (0.0, 1.0)) -> Callable[[Tensor, Tensor], Tensor]:
    """A `denoise(x_t, t) -> x̂0` that mixes conditional and unconditional estimates.

    x̂0 = x̂0(∅) + scale · (x̂0(c) − x̂0(∅)). Scale 1 (or uncond None) is exactly the conditional model, and costs one
    network call; otherwise both branches run as one batch of 2B. Because x̂0, ε̂ and the velocity are affine in
    each other at fixed (x_t, t), guiding x̂0 equals guiding any of them. `uncond` may hold negative prompts.
    rescale: φ of `rescale_guided`, applied to x̂0. interval: flow times [lo, hi] where guidance applies; at other
    times the conditional model alone runs (one call).
    """
    if uncond is None or scale == 1.0:
        return lambda x, t: denoise(x, t, cond)
    lo, hi = interval

    def guided(x: Tensor, t: Tensor) -> Tensor:
        level = float(t[0])
        if not lo <= level <= hi:
            return denoise(x, t, cond)
        both = denoise(torch.cat([x, x]), torch.cat([t, t]), Conditioning.cat([cond, uncond]))
        x_c, x_u = both.chunk(2)
        return rescale_guided(x_u + scale * (x_c - x_u), x_c, rescale)

    return guided
