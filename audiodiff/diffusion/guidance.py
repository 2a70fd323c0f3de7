"""Classifier-free guidance (Ho & Salimans 2022) over an x̂0-predicting denoise function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from audiodiff.conditioning.types import Conditioning

CondDenoiseFn = Callable[[Tensor, Tensor, Conditioning], Tensor]


def classifier_free_guidance(denoise: CondDenoiseFn, cond: Conditioning, uncond: Conditioning | None,
                             scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """A `denoise(x_t, t) -> x̂0` that mixes conditional and unconditional estimates.

    x̂0 = x̂0(∅) + scale · (x̂0(c) − x̂0(∅)). Scale 1 (or uncond None) is exactly the conditional model, and costs one
    network call; otherwise both branches run as one batch of 2B. Because x̂0 and the velocity are affine in each other
    at fixed (x_t, t), guiding x̂0 equals guiding the velocity.
    """
    if uncond is None or scale == 1.0:
        return lambda x, t: denoise(x, t, cond)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        both = denoise(torch.cat([x, x]), torch.cat([t, t]), Conditioning.cat([cond, uncond]))
        x_c, x_u = both.chunk(2)
        return x_u + scale * (x_c - x_u)

    return guided
