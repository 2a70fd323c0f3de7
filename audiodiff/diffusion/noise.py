"""Noise sources for the SDE samplers' steps (`audiodiff.diffusion.samplers.NoiseSampler`).

`BrownianTreeNoise` draws each step's noise as the normalised increment of a Brownian motion over the VE noise level,
one Brownian interval per batch item seeded by that item's seed (Li et al. 2020, "Scalable Gradients for Stochastic
Differential Equations", the Brownian interval of `torchsde`; k-diffusion's and diffusers' BrownianTreeNoiseSampler
use it the same way). A step's noise then depends only on the seed and the two noise levels, not on how many steps
came before; with the parameters diffusers uses, the same seed gives the same noise as diffusers'
CosineDPMSolverMultistepScheduler does for a generator with that seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class BrownianTreeNoise:
    """noise_sampler(s, s_next) → [B, *shape]: (W(s_next) - W(s)) / √|s_next - s| for each item's Brownian motion W
    on [sigma_min, sigma_max].

    shape: one item's latent shape (D, L); seeds: one per batch item; dtype / device: of the noise. Queries outside
    [sigma_min, sigma_max] are refused (a sampler starting from pure noise, s = ∞, needs Gaussian noise instead).
    Needs the `torchsde` package.
    """

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], sigma_min: float, sigma_max: float,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        try:
            import torchsde
        except ImportError as err:
            raise ModuleNotFoundError("Brownian-tree noise needs the package torchsde (pip install torchsde)") from err
        if not 0 <= sigma_min < sigma_max < math.inf:
            raise ValueError(f"BrownianTreeNoise: expected 0 <= sigma_min < sigma_max < inf, got {sigma_min}, "
                             f"{sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.trees = [torchsde.BrownianInterval(t0=self.sigma_min, t1=self.sigma_max, size=tuple(shape), dtype=dtype,
                                                device=device, entropy=int(seed), tol=1e-6, pool_size=24,
                                                halfway_tree=True)
                      for seed in seeds]

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        lo, hi = sorted((float(sigma), float(sigma_next)))
        tolerance = 1e-6 * self.sigma_max
        if lo < self.sigma_min - tolerance or hi > self.sigma_max + tolerance:
            raise ValueError(f"BrownianTreeNoise: noise levels {sigma} → {sigma_next} leave the tree's range "
                             f"[{self.sigma_min}, {self.sigma_max}]")
        lo, hi = max(lo, self.sigma_min), min(hi, self.sigma_max)
        sign = 1.0 if sigma < sigma_next else -1.0
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / math.sqrt(abs(hi - lo))
