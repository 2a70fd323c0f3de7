"""Training objectives: how clean data is noised, what the network predicts, its loss, and how to denoise.

An objective holds no weights. It is handed the network on each call, `loss(net, x0, cond, generator)` for
training and `denoise(net, x, t, cond) -> x̂0` for sampling, so one objective serves trained and EMA weights alike.

Sampling contract: `denoise` takes x and t in the canonical flow coordinates of `audiodiff.diffusion.schedules`
(`x = (1 - t) x0 + t ε`, t ∈ [0, 1]) whatever the objective trains on, so every sampler works with every
objective. Each objective converts to its own coordinates, feeds the network its own noise input and converts
the network's output (ε, v, x0, velocity or a preconditioned F) back to x̂0.

- FlowMatching: rectified flow (Lipman et al. 2023; Liu et al. 2023), x0 or velocity target.
- VPDiffusion: discrete variance-preserving diffusion (Ho et al. 2020) with ε, v (Salimans & Ho 2022) or x0
  targets, linear / scaled-linear / cosine β schedules and Min-SNR-γ loss weighting (Hang et al. 2023).
- EDM: Karras et al. (2022) preconditioning and log-normal noise levels.
- VDiffusion: continuous cosine-schedule v-prediction, Stable Audio's objective (Salimans & Ho 2022; Evans et al.
  2024).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal, Protocol

import torch
from torch import Tensor

from audiodiff.conditioning.types import Conditioning
from audiodiff.diffusion.editing import strength_times
from audiodiff.diffusion.schedules import (
    BetaSchedule,
    append_zero,
    discrete_timesteps,
    exponential_sigmas,
    karras_sigmas,
    logsnr_times,
    shift_times,
    sigma_from_t,
    t_from_sigma,
    vp_alphas_cumprod,
)


class Denoiser(Protocol):
    """`F(x [B, D, L], noise_level [B], cond) -> [B, D, L]` (see audiodiff.denoisers)."""

    def __call__(self, x: Tensor, noise_level: Tensor, cond: Conditioning) -> Tensor: ...


def _view(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample [B] tensor shaped to broadcast over `like` [B, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _masked_mean(err: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return err.mean()
    weight = weight.to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


class Objective(ABC):
    """Shared sampling-side behaviour: noise range and time grids in canonical flow time.

    grid_sigma_min / grid_sigma_max: the VE noise range (s = σ/α) that Karras and exponential grids span.
    default_spacing: the grid `time_grid(steps)` gives when no spacing is named.
    """

    grid_sigma_min: float = 0.002
    grid_sigma_max: float = 80.0
    default_spacing: str = "karras"
    logsnr_range: tuple[float, float] = (-6.2, 2.0)  # (λ_min, λ_max) of the "logsnr" grid (Stable Audio 3's)

    @abstractmethod
    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        """Training loss for clean latents x0 [B, D, L]; weight: optional [B, 1 or D, L] mask (0 = padding)."""

    @abstractmethod
    def denoise(self, net: Denoiser, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """x̂0 [B, D, L] from canonical x [B, D, L] at flow times t [B]."""

    @property
    def t_max(self) -> float:
        """The noisiest canonical time the model was trained at (1 = pure noise)."""
        return float(t_from_sigma(self.grid_sigma_max))

    def time_grid(self, steps: int, spacing: str = "default", shift: float = 1.0, strength: float = 1.0) -> Tensor:
        """Decreasing canonical times [steps + 1] (float64) from the noisiest level down to exactly 0.

        spacing: "uniform" (even in flow time from t_max), "karras" (rho = 7) or "exponential" (even in log s)
        over [grid_sigma_min, grid_sigma_max]; discrete objectives add diffusers' "leading", "trailing" and
        "linspace"; "logsnr" is Stable Audio 3's grid even in log-SNR (`schedules.logsnr_times`, over
        `logsnr_range`). shift > 1 then moves the grid towards noise
        (SD3's time shift). strength < 1 (audio-to-audio): the tail of the grid from noise level `strength`
        (`audiodiff.diffusion.editing.strength_times`), except "logsnr", which runs all its steps below it.
        """
        if steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength: expected a number in (0, 1], got {strength}")
        spacing = self.default_spacing if spacing == "default" else spacing
        if spacing == "logsnr":
            if shift != 1.0:
                raise ValueError(f"spacing 'logsnr' takes no time shift, got shift {shift}")
            return logsnr_times(steps, *self.logsnr_range, t_max=strength)
        return strength_times(self._grid(steps, spacing, shift), strength)

    def _grid(self, steps: int, spacing: str, shift: float) -> Tensor:
        if spacing == "uniform":
            t = torch.linspace(self.t_max, 0.0, steps + 1, dtype=torch.float64)[:-1]
        elif spacing == "karras":
            t = t_from_sigma(karras_sigmas(steps, self.grid_sigma_min, self.grid_sigma_max))
        elif spacing == "exponential":
            t = t_from_sigma(exponential_sigmas(steps, self.grid_sigma_min, self.grid_sigma_max))
        else:
            t = self._special_grid(steps, spacing)
        return append_zero(shift_times(t, shift) if shift != 1.0 else t)

    def _special_grid(self, steps: int, spacing: str) -> Tensor:
        raise ValueError(f"{type(self).__name__}: unknown spacing {spacing!r}; expected 'default', 'uniform', "
                         f"'karras' or 'exponential'")


Prediction = Literal["x0", "velocity"]
TimeSampling = Literal["uniform", "logit_normal"]


class FlowMatching(Objective):
    """Rectified-flow objective with a choice of network target.

    prediction:
      "x0"       the network predicts the clean latent; the loss is MSE on x0. On small data and short budgets this
                 learns conditioning far faster than velocity targets, whose early outputs stay buried in noise.
      "velocity" the network predicts v = ε - x0 (the usual rectified-flow target); loss MSE on v.
    time_sampling: "uniform" t ~ U(0, 1), or "logit_normal" t = sigmoid(N(mean, std)) (Esser et al. 2024, SD3).
    shift: training times pass through SD3's shift t' = shift·t / (1 + (shift - 1) t) (> 1: more noise).
    loss_space: "target" takes the MSE on what the network predicts; "x0" on the clean-latent estimate it implies.
      With velocity targets, "x0" weighs the velocity error by t², so training keeps x0's emphasis on high noise
      (where conditioning is learnt) while x̂0 = x_t - t·v̂ passes the input's detail through at low noise, which an
      x0 prediction has to rebuild through the network (on the sfx quick start neither velocity variant comes near
      x0 targets: recipes/sfx/README.md).
    skip: with x0 prediction, Karras et al. (2022)'s preconditioning in flow time (σ = t / (1 - t), σ_data = 1):
      x̂0 = c_skip(t)·x_t + c_out(t)·F with c_skip = (1 - t) / ((1 - t)² + t²) and c_out = t / √((1 - t)² + t²), the
      loss still the MSE on x̂0. At high noise x̂0 is the network's (c_skip → 0) and conditioning is learnt as with
      plain x0; at low noise the input's detail passes through (c_skip → 1, c_out → 0) instead of being rebuilt by
      the network. Only for networks whose output can cancel noise in every direction: on the CPU presets' U-Nets (a
      4-frame patch of 64 bands folded into 64 channels) the noise they cannot reach stays, and accuracy falls
      (recipes/music/README.md, recipes/sfx/README.md).
    logsnr_range: (λ_min, λ_max) of the "logsnr" sampling grid (`schedules.logsnr_times`; Stable Audio 3: -6.2, 2).
    The network's noise input is t itself. Sampling grids default to even flow times from t = 1.
    """

    default_spacing = "uniform"  # Karras and exponential grids span EDM's default range [0.002, 80]

    def __init__(self, prediction: Prediction = "x0", time_sampling: TimeSampling = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, shift: float = 1.0,
                 logsnr_range: tuple[float, float] | list[float] = (-6.2, 2.0),
                 loss_space: Literal["target", "x0"] = "target", skip: bool = False) -> None:
        if prediction not in ("x0", "velocity"):
            raise ValueError(f"FlowMatching.prediction: expected 'x0' or 'velocity', got {prediction!r}")
        if skip and prediction != "x0":
            raise ValueError("FlowMatching.skip: the skip connection preconditions x0 prediction; "
                             f"prediction is {prediction!r}")
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"FlowMatching.time_sampling: expected 'uniform' or 'logit_normal', got {time_sampling!r}")
        if shift <= 0:
            raise ValueError(f"FlowMatching.shift: expected > 0, got {shift}")
        if loss_space not in ("target", "x0"):
            raise ValueError(f"FlowMatching.loss_space: expected 'target' or 'x0', got {loss_space!r}")
        self.loss_space = loss_space
        self.prediction = prediction
        self.skip = bool(skip)
        self.time_sampling = time_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.shift = shift
        lo, hi = (float(v) for v in logsnr_range)
        if not lo < hi:
            raise ValueError(f"FlowMatching.logsnr_range: expected (min, max) with min < max, got {logsnr_range}")
        self.logsnr_range = (lo, hi)

    @property
    def t_max(self) -> float:
        return 1.0  # trained up to pure noise

    def sample_time(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training times t: [batch] in (0, 1)."""
        if self.time_sampling == "uniform":
            t = torch.rand(batch, device=device, generator=generator)
        else:
            z = torch.randn(batch, device=device, generator=generator)
            t = torch.sigmoid(self.logit_mean + self.logit_std * z)
        return shift_times(t, self.shift) if self.shift != 1.0 else t

    @staticmethod
    def noise(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t ε, with t: [B] broadcast over x0: [B, D, L]."""
        t = _view(t, x0)
        return (1 - t) * x0 + t * eps

    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        """Mean squared error of the network's target; x0: [B, D, L]; weight: optional [B, 1 or D, L] mask."""
        t = self.sample_time(x0.shape[0], x0.device, generator)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x = self.noise(x0, eps, t)
        out = net(x, t, cond)
        if self.prediction == "x0":
            out, target = (self._precondition(out, x, t) if self.skip else out), x0
        elif self.loss_space == "x0":
            out, target = x.float() - _view(t, x).float() * out.float(), x0
        else:
            target = eps - x0
        return _masked_mean((out.float() - target.float()) ** 2, weight)

    def denoise(self, net: Denoiser, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The network's estimate of clean data x̂0: [B, D, L] from x at flow times t: [B]."""
        out = net(x, t, cond)
        if self.prediction == "x0":
            return self._precondition(out, x, t) if self.skip else out
        return x - _view(t, x) * out

    @staticmethod
    def skip_scales(t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out): [B] each, for flow times t: [B] (Karras et al. 2022, Table 1, with σ = t / (1 - t))."""
        t = t.to(torch.promote_types(t.dtype, torch.float32))
        norm = (1 - t) ** 2 + t ** 2
        return (1 - t) / norm, t / norm.sqrt()

    def _precondition(self, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """x̂0 = c_skip·x + c_out·out: [B, D, L] in the network's dtype."""
        c_skip, c_out = self.skip_scales(t)
        x_hat = _view(c_skip, x) * x.to(c_skip.dtype) + _view(c_out, x) * out.to(c_out.dtype)
        return x_hat.to(out.dtype)


VPPrediction = Literal["epsilon", "v", "x0"]


class VPDiffusion(Objective):
    """Discrete variance-preserving diffusion: x_k = √ᾱ_k x0 + √(1 - ᾱ_k) ε for training steps k < train_steps.

    prediction: "epsilon" (Ho et al. 2020), "v" = √ᾱ ε - √(1-ᾱ) x0 (Salimans & Ho 2022) or "x0".
    schedule, beta_start, beta_end: the β schedule (see `vp_alphas_cumprod`).
    loss_weighting: "none" (plain MSE of the target) or "min_snr": each step weighted so that its loss in x0
      terms is min(SNR, γ) (Hang et al. 2023; SNR = ᾱ / (1 - ᾱ), γ = min_snr_gamma).
    The network's noise input is k / train_steps ∈ [0, 1) (fractional k between training steps at sampling time,
    interpolated linearly in log s, as k-diffusion's DiscreteSchedule does). Sampling grids default to diffusers'
    "trailing" spacing, which starts at the noisiest training step.
    """

    default_spacing = "trailing"

    def __init__(self, prediction: VPPrediction = "epsilon", schedule: BetaSchedule = "linear",
                 train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 loss_weighting: Literal["none", "min_snr"] = "none", min_snr_gamma: float = 5.0) -> None:
        if prediction not in ("epsilon", "v", "x0"):
            raise ValueError(f"VPDiffusion.prediction: expected 'epsilon', 'v' or 'x0', got {prediction!r}")
        if loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"VPDiffusion.loss_weighting: expected 'none' or 'min_snr', got {loss_weighting!r}")
        self.prediction = prediction
        self.train_steps = train_steps
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = min_snr_gamma
        self.alphas_cumprod = vp_alphas_cumprod(schedule, train_steps, beta_start, beta_end)
        self.log_sigmas = 0.5 * torch.log((1 - self.alphas_cumprod) / self.alphas_cumprod)  # VE s per step, rising
        self.grid_sigma_min = float(self.log_sigmas[0].exp())
        self.grid_sigma_max = float(self.log_sigmas[-1].exp())

    # ---- noise levels ----------------------------------------------------------------------------------------
    def sigma_to_step(self, sigma: Tensor) -> Tensor:
        """Fractional training step k for VE sigmas s (clamped to the trained range), linear in log s."""
        log_s = sigma.to(torch.float64).clamp(self.grid_sigma_min, self.grid_sigma_max).log()
        table = self.log_sigmas.to(log_s.device)
        hi = torch.searchsorted(table, log_s).clamp(1, self.train_steps - 1)
        lo = hi - 1
        w = ((log_s - table[lo]) / (table[hi] - table[lo])).clamp(0, 1)
        return lo.to(torch.float64) + w

    def step_to_sigma(self, step: Tensor) -> Tensor:
        """VE sigma s of a (fractional) training step k, the inverse of `sigma_to_step`."""
        step = step.to(torch.float64).clamp(0, self.train_steps - 1)
        table = self.log_sigmas.to(step.device)
        lo = step.floor().long().clamp(max=self.train_steps - 2)
        w = step - lo
        return ((1 - w) * table[lo] + w * table[lo + 1]).exp()

    def _special_grid(self, steps: int, spacing: str) -> Tensor:
        if spacing not in ("leading", "trailing", "linspace"):
            return super()._special_grid(steps, spacing)
        ks = discrete_timesteps(steps, self.train_steps, spacing).long()
        return t_from_sigma(self.log_sigmas[ks].exp())

    # ---- training ----------------------------------------------------------------------------------------------
    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        batch = x0.shape[0]
        k = torch.randint(0, self.train_steps, (batch,), device=x0.device, generator=generator)
        ac = self.alphas_cumprod.to(x0.device)[k]
        a, s = ac.sqrt(), (1 - ac).sqrt()
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x = _view(a, x0) * x0 + _view(s, x0) * eps
        out = net(x, k.to(x0.dtype) / self.train_steps, cond).float()
        target = {"epsilon": eps, "v": _view(a, x0) * eps - _view(s, x0) * x0, "x0": x0}[self.prediction]
        err = (out - target.float()) ** 2
        if self.loss_weighting == "min_snr":
            snr = ac / (1 - ac)
            clipped = snr.clamp(max=self.min_snr_gamma)
            w = {"epsilon": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[self.prediction]
            err = err * _view(w.float(), err)
        return _masked_mean(err, weight)

    # ---- sampling ----------------------------------------------------------------------------------------------
    def denoise(self, net: Denoiser, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        t = t.to(torch.float64).clamp(max=self.t_max)
        norm = ((1 - t) ** 2 + t**2).sqrt()
        a, s = (1 - t) / norm, t / norm  # VP coefficients: x_vp = a x0 + s ε, a² + s² = 1
        x_vp = x / _view(norm, x)
        k = self.sigma_to_step(sigma_from_t(t))
        out = net(x_vp, (k / self.train_steps).to(x.dtype), cond)
        a, s = _view(a, x), _view(s, x)
        if self.prediction == "epsilon":
            return (x_vp - s * out) / a
        if self.prediction == "v":
            return a * x_vp - s * out
        return out


class EDM(Objective):
    """Karras et al. (2022) preconditioned denoiser D(y; s) = c_skip y + c_out F(c_in y, ln(s) / 4), y = x0 + s ε.

    Training draws ln s ~ N(p_mean, p_std²) and weights the loss by (s² + σ_d²) / (s σ_d)², which makes the
    loss on F plain MSE. sigma_data: the data's standard deviation (normalised latents: about 1).
    Sampling grids default to Karras' rho = 7 spacing over [sigma_min, sigma_max].
    """

    def __init__(self, sigma_data: float = 1.0, p_mean: float = -1.2, p_std: float = 1.2,
                 sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.sigma_data = sigma_data
        self.p_mean = p_mean
        self.p_std = p_std
        self.grid_sigma_min = sigma_min
        self.grid_sigma_max = sigma_max

    def precondition(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) for VE sigmas [B] (Karras et al. 2022, Table 1)."""
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4

    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        n = torch.randn(x0.shape[0], device=x0.device, generator=generator)
        sigma = (self.p_mean + self.p_std * n).exp()
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        y = x0 + _view(sigma, x0) * eps
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        out = net(_view(c_in, y) * y, c_noise.to(x0.dtype), cond).float()
        target = (x0 - _view(c_skip, x0) * y) / _view(c_out, x0)
        return _masked_mean((out - target.float()) ** 2, weight)

    def denoise(self, net: Denoiser, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        t = t.to(torch.float64).clamp(max=self.t_max)
        sigma = sigma_from_t(t)
        y = x / _view(1 - t, x)
        c_skip, c_out, c_in, c_noise = (c.to(x.dtype) for c in self.precondition(sigma))
        out = net(_view(c_in, y) * y, c_noise, cond)
        return _view(c_skip, y) * y + _view(c_out, y) * out


class VDiffusion(Objective):
    """Continuous v-prediction on the cosine schedule (Salimans & Ho 2022, Section 4; k-diffusion's and
    stable-audio-tools' "v" objective), the objective of Stable Audio Open.

    x_τ = α x0 + σ ε with α = cos(πτ/2), σ = sin(πτ/2) for τ ∈ [0, 1]; the network sees x_τ and τ itself and predicts
    v = α ε - σ x0, so x̂0 = α x_τ - σ v. In VE terms s = σ / α = tan(πτ/2), τ = atan(s) · 2 / π: exactly the
    preconditioning of diffusers' `CosineDPMSolverMultistepScheduler` with σ_data = 1 (c_in = 1 / √(s² + 1),
    c_skip = 1 / (s² + 1), c_out = -s / √(s² + 1), c_noise = atan(s) · 2 / π).
    Training draws τ ~ U(0, 1). Sampling grids default to even steps in log s over [sigma_min, sigma_max]
    (Stable Audio Open: 0.3 to 500).
    """

    default_spacing = "exponential"

    def __init__(self, sigma_min: float = 0.3, sigma_max: float = 500.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VDiffusion: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.grid_sigma_min = float(sigma_min)
        self.grid_sigma_max = float(sigma_max)

    @staticmethod
    def network_time(t: Tensor) -> Tensor:
        """τ = atan(s) · 2 / π of canonical flow times t [B] (s = t / (1 - t); t = 1 gives τ = 1), float64."""
        t = t.to(torch.float64)
        return torch.atan2(t, 1 - t) * (2 / math.pi)

    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        tau = torch.rand(x0.shape[0], device=x0.device, generator=generator)
        alpha, sigma = _view(torch.cos(tau * math.pi / 2), x0), _view(torch.sin(tau * math.pi / 2), x0)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        out = net(alpha * x0 + sigma * eps, tau.to(x0.dtype), cond).float()
        return _masked_mean((out - (alpha * eps - sigma * x0).float()) ** 2, weight)

    def denoise(self, net: Denoiser, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        t = t.to(torch.float64).clamp(max=self.t_max)
        norm = ((1 - t) ** 2 + t**2).sqrt()
        alpha, sigma = _view((1 - t) / norm, x), _view(t / norm, x)
        x_vp = x / _view(norm, x)
        v = net(x_vp, self.network_time(t).to(x.dtype), cond)
        return alpha * x_vp - sigma * v
