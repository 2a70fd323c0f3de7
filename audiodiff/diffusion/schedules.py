"""Noise schedules and sampling grids.

Every objective is sampled in one canonical coordinate system, the rectified-flow one:
`x = (1 - t) x0 + t ε` with flow time `t ∈ [0, 1]` (t = 1 is pure noise). Any other forward process
`x' = α x0 + σ ε` is the same process rescaled: `t = σ / (α + σ)` and `x = x' / (α + σ)`. The VE noise-to-signal
ratio (Karras et al. 2022's σ) is `s = σ / α = t / (1 - t)`, infinite at t = 1.

Grids are decreasing canonical times `[steps + 1]` ending at exactly 0, so samplers never see schedule details.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
Spacing = Literal["default", "uniform", "karras", "exponential", "leading", "trailing", "linspace"]


def t_from_sigma(sigma: Tensor | float) -> Tensor:
    """Flow time t = s / (1 + s) from the VE noise-to-signal ratio s ∈ [0, ∞] (∞ → 1)."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return torch.where(torch.isinf(s), torch.ones_like(s), s / (1 + s))


def sigma_from_t(t: Tensor | float) -> Tensor:
    """VE noise-to-signal ratio s = t / (1 - t) from flow time t ∈ [0, 1] (1 → ∞)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t).clamp_min(1e-300))


def vp_alphas_cumprod(schedule: BetaSchedule = "linear", steps: int = 1000, beta_start: float = 1e-4,
                      beta_end: float = 0.02, cosine_s: float = 0.008) -> Tensor:
    """ᾱ_k for k = 0 … steps-1 of a discrete variance-preserving process (float64 [steps]).

    linear: β linear in [beta_start, beta_end] (Ho et al. 2020); scaled_linear: √β linear (Stable Diffusion);
    cosine: ᾱ from the squared-cosine curve with offset `cosine_s`, β clipped at 0.999 (Nichol & Dhariwal 2021).
    """
    if steps < 2:
        raise ValueError(f"vp_alphas_cumprod: steps must be >= 2, got {steps}")
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        x = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((x + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unknown beta schedule {schedule!r}; expected 'linear', 'scaled_linear' or 'cosine'")
    return torch.cumprod(1 - betas, dim=0)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: `steps` VE sigmas from sigma_max down to sigma_min, denser at low noise."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """`steps` VE sigmas evenly spaced in log sigma (equal steps in λ = -log s, as DPM-Solver prefers)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))


def shift_times(t: Tensor, shift: float) -> Tensor:
    """SD3's time shift t' = shift·t / (1 + (shift - 1) t) (eq. 23); shift > 1 moves times towards noise."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def discrete_timesteps(steps: int, train_steps: int, spacing: str, offset: int = 0) -> Tensor:
    """Decreasing integer training steps to visit, as diffusers' `timestep_spacing` defines them.

    leading: 0, k, 2k … (k = train_steps // steps) plus `offset`; trailing: train_steps - 1, … stepping by
    train_steps / steps; linspace: `steps` rounded points of linspace(0, train_steps - 1, steps).
    """
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must lie in [1, {train_steps}] for a {train_steps}-step schedule, got {steps}")
    if spacing == "leading":
        ts = torch.arange(steps, dtype=torch.float64) * (train_steps // steps) + offset
    elif spacing == "trailing":
        ts = torch.round(torch.arange(train_steps, 0, -train_steps / steps, dtype=torch.float64)) - 1
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(0, train_steps - 1, steps, dtype=torch.float64))
    else:
        raise ValueError(f"unknown discrete spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")
    return ts.sort(descending=True).values


def append_zero(t: Tensor) -> Tensor:
    """The grid with a final t = 0 (clean data) appended (float64: step ratios near t = 1 need the precision)."""
    t = t.to(torch.float64)
    return torch.cat([t, t.new_zeros(1)])


def logsnr_times(steps: int, logsnr_min: float, logsnr_max: float, t_max: float = 1.0) -> Tensor:
    """Stable Audio 3's grid: `steps` breakpoints u evenly spaced over [t_max, 0) mapped through the log-SNR line
    λ = λ_max - u (λ_max - λ_min) to flow times t = sigmoid(-λ), the first set to exactly t_max, then t = 0
    appended; [steps + 1] float64. For t_max = 1 the times are even in log-SNR over [λ_min, λ_max]; a smaller
    t_max (audio-to-audio) compresses the same number of steps below it (its first two times need not decrease).
    Computed in float32 as diffusers' `logsnr_sigma_schedule` and `FlowMatchEulerDiscreteScheduler` do."""
    u = torch.linspace(t_max, 0.0, steps + 1)
    t = torch.sigmoid(-(logsnr_max - u * (logsnr_max - logsnr_min)))
    t[0] = t_max
    return append_zero(t[:-1].double())
