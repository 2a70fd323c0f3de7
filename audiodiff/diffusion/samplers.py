"""Samplers: pure functions of a denoiser, the starting latents and a time grid.

No hidden state: each takes `denoise(x [B, D, L], t [B]) -> x̂0 [B, D, L]` in canonical flow coordinates
(`x = (1 - t) x0 + t ε`, see `audiodiff.diffusion.schedules`), the starting latents at times[0] (from
`initial_latents`), a decreasing grid `times` ending at 0, and, for the stochastic ones, an explicit
`torch.Generator` (or one per batch item), so the same inputs give the same output.

In VE terms (Karras et al. 2022) a state is y = x / (1 - t) at noise s = t / (1 - t). The updates below are
written with ε̂ = (x - (1 - t) x̂0) / t and step ratios s_next / s, which stay finite at t = 1 (s = ∞).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]  # (step index, x_t, x̂0)

Generators = torch.Generator | Sequence[torch.Generator] | None
NoiseSampler = Callable[[float, float], Tensor]
"""`noise_sampler(s, s_next)`: unit-variance noise [B, D, L] for the step between VE sigmas s and s_next (e.g. a
Brownian tree's normalised increment, as k-diffusion's and diffusers' SDE samplers draw it)."""



def initial_latents(noise: Tensor, times: Tensor) -> Tensor:
    """Starting latents at t0 = times[0] from unit Gaussian noise [B, D, L].

    Scaled to the standard deviation sqrt((1 - t0)² + t0²) of x = (1 - t0) x0 + t0 ε for unit-variance data, which
    in VP coordinates is plain unit noise (as diffusers starts), and exactly the noise at t0 = 1.
    """
    t0 = float(times[0])
    return noise * math.sqrt((1 - t0) ** 2 + t0**2)


def randn_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like x, drawn on the CPU from `generator` (one per batch item if a sequence,
    so an item's noise does not depend on the rest of the batch)."""
    if generator is None or isinstance(generator, torch.Generator):
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"expected one generator per batch item ({x.shape[0]}), got {len(generator)}")
        z = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generator])
    return z.to(device=x.device, dtype=x.dtype)


def _velocity(x: Tensor, t: float, x0_hat: Tensor) -> Tensor:
    return (x - x0_hat) / t


def _eps(x: Tensor, t: float, x0_hat: Tensor) -> Tensor:
    """ε̂ = (x - (1 - t) x̂0) / t, the noise implied by x̂0 (t > 0)."""
    return (x - (1 - t) * x0_hat) / t


def _ratio(t: float, t_next: float) -> float:
    """s_next / s for VE sigmas s = t / (1 - t): 0 when t = 1 (s = ∞)."""
    if t >= 1.0:
        return 0.0
    return (t_next / (1 - t_next)) / (t / (1 - t))


def _ve(t: float) -> float:
    """VE sigma s = t / (1 - t) of flow time t (∞ at t = 1)."""
    return math.inf if t >= 1.0 else t / (1 - t)


def _call(denoise: DenoiseFn, x: Tensor, t: float) -> Tensor:
    return denoise(x, torch.full((x.shape[0],), t, device=x.device))


@torch.no_grad()
def sample_flow_euler(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                      generator: Generators = None) -> Tensor:
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
def sample_flow_heun(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                     generator: Generators = None) -> Tensor:
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


@torch.no_grad()
def sample_ddim(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                generator: Generators = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021) with stochasticity η ∈ [0, 1]; η = 0 is deterministic, η = 1 is DDPM's ancestral step.

    In VE terms: y_next = x̂0 + s_down ε̂ + s_up z with s_up = η s_next √(1 - (s_next/s)²) and
    s_down = √(s_next² - s_up²), which is DDIM's σ_t(η) rescaled; at η = 0 it equals Euler's step in s and the
    flow Euler step.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim: eta must lie in [0, 1], got {eta}")
    x = noise
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = _call(denoise, x, t)
        if callback is not None:
            callback(i, x, x0_hat)
        if t_next == 0.0:
            x = x0_hat
            continue
        s_next = t_next / (1 - t_next)
        r = _ratio(t, t_next)
        s_up = eta * s_next * math.sqrt(max(0.0, 1 - r * r))
        s_down = math.sqrt(max(0.0, s_next**2 - s_up**2))
        y = x0_hat + s_down * _eps(x, t, x0_hat)
        if s_up > 0:
            y = y + s_up * randn_like(x, generator)
        x = (1 - t_next) * y
    return x


def sample_ddpm(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                generator: Generators = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020) on the grid: DDIM with η = 1."""
    return sample_ddim(denoise, noise, times, callback, generator, eta=1.0)


def _karras(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None, generator: Generators,
            second_order: bool, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> Tensor:
    """Karras et al. (2022) Algorithm 2 in VE terms (y = x / (1 - t)); Algorithm 1 when s_churn = 0."""
    x = noise
    steps = len(times) - 1
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        if t >= 1.0:  # s = ∞: the step from pure noise has only its DDIM / Euler limit
            x0_hat = _call(denoise, x, t)
            if callback is not None:
                callback(i, x, x0_hat)
            x = x0_hat if t_next == 0.0 else (1 - t_next) * x0_hat + t_next * _eps(x, t, x0_hat)
            continue
        s, s_next = t / (1 - t), t_next / (1 - t_next)
        y = x / (1 - t)
        gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            y = y + math.sqrt(s_hat**2 - s**2) * s_noise * randn_like(y, generator)
        t_hat = s_hat / (1 + s_hat)
        x0_hat = _call(denoise, (1 - t_hat) * y, t_hat)
        if callback is not None:
            callback(i, x, x0_hat)
        d = (y - x0_hat) / s_hat
        y_next = y + (s_next - s_hat) * d
        if second_order and s_next > 0:
            d_next = (y_next - _call(denoise, (1 - t_next) * y_next, t_next)) / s_next
            y_next = y + (s_next - s_hat) * 0.5 * (d + d_next)
        x = (1 - t_next) * y_next
    return x


@torch.no_grad()
def sample_euler(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                 generator: Generators = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Euler steps on the probability-flow ODE in VE sigma (Karras et al. 2022, Algorithm 2's first-order form),
    with optional churn (noise re-injection) for sigmas in [s_tmin, s_tmax]."""
    return _karras(denoise, noise, times, callback, generator, False, s_churn, s_tmin, s_tmax, s_noise)


@torch.no_grad()
def sample_heun(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                generator: Generators = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Heun's second-order method in VE sigma (Karras et al. 2022, Algorithm 1, and Algorithm 2 with churn).
    Two network calls per step except the last (into s = 0) and one from t = 1, which are Euler steps."""
    return _karras(denoise, noise, times, callback, generator, True, s_churn, s_tmin, s_tmax, s_noise)


def _lambda_step(t: float, t_next: float) -> float:
    """h = λ_next - λ with λ = log((1 - t) / t) = -log s; ∞ from t = 1 or into t = 0."""
    if t >= 1.0 or t_next <= 0.0:
        return math.inf
    return math.log((1 - t_next) / t_next) - math.log((1 - t) / t)


def sample_dpmpp_2m(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                    generator: Generators = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, multistep, midpoint form as in k-diffusion: the SDE
    variant below without noise (η = 0). First order on the first step and into t = 0, second order in between:
    x_next = (t_next / t) x + (1 - t_next)(1 - e^{-h}) D, D = (1 + 1/2r) x̂0 - (1/2r) x̂0_prev, r = h_prev / h.
    """
    return sample_dpmpp_2m_sde(denoise, noise, times, callback, generator, eta=0.0)


@torch.no_grad()
def sample_dpmpp_2m_sde(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                        generator: Generators = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's `sample_dpmpp_2m_sde`, midpoint solver); eta = 0 is the ODE
    form. With eta = 1 this is diffusers' `CosineDPMSolverMultistepScheduler` (Stable Audio Open's sampler): first
    order on the first step and into t = 0, second order in between.

    noise_sampler: where the step noise comes from (`NoiseSampler`, called with VE sigmas on every step that adds
    noise); None draws i.i.d. Gaussian noise from `generator`.
    """
    x = noise
    old: Tensor | None = None
    h_last = math.inf
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = _call(denoise, x, t)
        if callback is not None:
            callback(i, x, x0_hat)
        if t_next == 0.0:
            x = x0_hat
            break
        h = _lambda_step(t, t_next)
        eta_h = eta * h if eta > 0 else 0.0  # (0·∞ would be nan)
        gain = -math.expm1(-h - eta_h)  # 1 - e^{-(1+η)h}; 1 from t = 1
        x = (t_next / t) * math.exp(-eta_h) * x + (1 - t_next) * gain * x0_hat
        if old is not None and math.isfinite(h_last):
            x = x + (1 - t_next) * 0.5 * gain * (h / h_last) * (x0_hat - old)
        if eta > 0:
            z = randn_like(x, generator) if noise_sampler is None else noise_sampler(_ve(t), _ve(t_next))
            x = x + t_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise * z.to(x)
        old, h_last = x0_hat, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                        generator: Generators = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion's `sample_dpmpp_3m_sde`; stable-audio-tools' default sampler for Stable
    Audio Open): multistep, third order from the third step on (second order on the second, first on the first),
    exact into t = 0. In VE terms with h = log(s / s_next) and ĥ = (1 + η) h:
    y_next = e^{-ĥ} y + (1 - e^{-ĥ}) x̂0 + φ2 D1 - φ3 D2 + s_next √(1 - e^{-2ηh}) z, where φ2 = (e^{-ĥ} - 1) / ĥ + 1,
    φ3 = φ2 / ĥ - 1/2 and D1, D2 are the divided differences of the last three x̂0 (Lu et al. 2022, Section 4).
    Written in flow coordinates (x = (1 - t) y), as `sample_dpmpp_2m_sde`; noise_sampler as there.
    """
    x = noise
    older: list[Tensor] = []  # x̂0 of the previous steps, newest first
    steps_h: list[float] = []  # their h, newest first
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = _call(denoise, x, t)
        if callback is not None:
            callback(i, x, x0_hat)
        if t_next == 0.0:
            x = x0_hat
            break
        h = _lambda_step(t, t_next)
        h_eta = h * (eta + 1)
        x = (t_next / t) * (math.exp(-eta * h) if eta > 0 else 1.0) * x + (1 - t_next) * -math.expm1(-h_eta) * x0_hat
        if math.isfinite(h) and steps_h and math.isfinite(steps_h[0]):  # second order, third with two behind
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            r0 = steps_h[0] / h
            d1_0 = (x0_hat - older[0]) / r0
            if len(steps_h) == 2 and math.isfinite(steps_h[1]):
                phi_3 = phi_2 / h_eta - 0.5
                r1 = steps_h[1] / h
                d1_1 = (older[0] - older[1]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + (1 - t_next) * (phi_2 * d1 - phi_3 * d2)
            else:
                x = x + (1 - t_next) * phi_2 * d1_0
        if eta > 0:
            z = randn_like(x, generator) if noise_sampler is None else noise_sampler(_ve(t), _ve(t_next))
            x = x + t_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise * z.to(x)
        older, steps_h = [x0_hat, *older[:1]], [h, *steps_h[:1]]
    return x


@torch.no_grad()
def sample_pingpong(denoise: DenoiseFn, noise: Tensor, times: Tensor, callback: Callback | None = None,
                    generator: Generators = None, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Stochastic ("ping-pong") flow sampling, Stable Audio 3's published sampler (diffusers'
    `FlowMatchEulerDiscreteScheduler` with stochastic_sampling=True): each step jumps to the estimate x̂0 and
    re-noises it to the next time with fresh noise, x_next = (1 - t_next) x̂0 + t_next z; the step into t = 0
    returns x̂0. Few-step (distilled, adversarially trained) models are sampled this way: the error of one step
    does not carry into the next as it does on an ODE path.

    noise: [B, D, L] at times[0]; noise_sampler: where z comes from (`NoiseSampler`, called with the VE sigmas of
    each step into t_next > 0), so a test can inject it; None draws it from `generator` (one draw per step, in
    the order diffusers draws it, so one seed reproduces diffusers' pipeline).
    """
    x = noise
    for i in range(len(times) - 1):
        t, t_next = float(times[i]), float(times[i + 1])
        x0_hat = _call(denoise, x, t)
        if callback is not None:
            callback(i, x, x0_hat)
        if t_next == 0.0:
            return x0_hat
        z = randn_like(x, generator) if noise_sampler is None else noise_sampler(_ve(t), _ve(t_next)).to(x)
        x = (1 - t_next) * x0_hat + t_next * z
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "flow_euler": sample_flow_euler,
    "flow_heun": sample_flow_heun,
    "euler": sample_euler,
    "heun": sample_heun,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "pingpong": sample_pingpong,
}


def sampler_options(name: str) -> tuple[str, ...]:
    """Keyword options the sampler `name` takes beyond denoise, noise, times, callback and generator."""
    fixed = {"denoise", "noise", "times", "callback", "generator", "noise_sampler"}
    return tuple(p for p in inspect.signature(get_sampler(name)).parameters if p not in fixed)


def takes_noise_sampler(name: str) -> bool:
    """Whether the sampler `name` draws its step noise from a `noise_sampler` it can be given."""
    return "noise_sampler" in inspect.signature(get_sampler(name)).parameters


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called `name`; a clear error lists the known ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
