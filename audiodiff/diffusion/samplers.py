"""Samplers: pure functions of a denoiser, the starting noise and a time grid.

No hidden state: each takes `denoise(x_t [B, D, L], t [B]) -> x̂0 [B, D, L]`, the initial noise and an explicit
`torch.Generator` where it draws noise, so the same inputs give the same output (k-diffusion's `sampling.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]  # (step index, x_t, x̂0)

SamplerName = Literal["flow_euler", "flow_heun"]


def flow_times(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> Tensor:
    """Decreasing flow times [steps + 1] from 1 to 0; `shift` > 1 spends more steps at high noise (SD3, eq. 23)."""
    if steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return t.to(device=device, dtype=torch.float32)


def _velocity(x: Tensor, t: float, x0_hat: Tensor) -> Tensor:
    return (x - x0_hat) / t


@torch.no_grad()
def sample_flow_euler(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None) -> Tensor:
    """Euler integration of the probability-flow ODE dx/dt = (x - x̂0) / t from t = times[0] to times[-1].

    noise: [B, D, L] at t = times[0] (normally pure noise at t = 1). Returns x at times[-1].
    The step into t = 0 returns x̂0 itself (the limit of the Euler update), as DDIM does.
    """
    x = noise
    batch = x.shape[0]
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = denoise(x, torch.full((batch,), t, device=x.device))
        if callback is not None:
            callback(i, x, x0_hat)
        x = x0_hat if t_next == 0.0 else x + (t_next - t) * _velocity(x, t, x0_hat)
    return x


@torch.no_grad()
def sample_flow_heun(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None) -> Tensor:
    """Heun's second-order method on the flow ODE (Karras et al. 2022, Algorithm 1, in flow time).

    Two network calls per step except the last, which is an Euler step into t = 0.
    """
    x = noise
    batch = x.shape[0]
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = denoise(x, torch.full((batch,), t, device=x.device))
        if callback is not None:
            callback(i, x, x0_hat)
        if t_next == 0.0:
            x = x0_hat
            continue
        d = _velocity(x, t, x0_hat)
        x_euler = x + (t_next - t) * d
        d_next = _velocity(x_euler, t_next, denoise(x_euler, torch.full((batch,), t_next, device=x.device)))
        x = x + (t_next - t) * 0.5 * (d + d_next)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "flow_euler": sample_flow_euler,
    "flow_heun": sample_flow_heun,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called `name`; a clear error lists the known ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
