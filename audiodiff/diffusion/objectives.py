"""Training objectives: how clean data is noised, what the network predicts, and the loss.

An objective holds no weights. It is handed the network on each call:
`loss(net, x0, cond, generator)` for training and `denoise(net, x_t, t, cond) -> x̂0` for sampling, so the same
objective serves the trained weights and their EMA copy alike.

Flow matching (Lipman et al. 2023; Liu et al. 2023, rectified flow) interpolates
`x_t = (1 - t) x0 + t ε` with `t ∈ [0, 1]` (t = 1 is pure noise); the velocity is `v = ε - x0`.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from audiodiff.conditioning.types import Conditioning


class Denoiser(Protocol):
    """`F(x [B, D, L], noise_level [B], cond) -> [B, D, L]` (see audiodiff.denoisers)."""

    def __call__(self, x: Tensor, noise_level: Tensor, cond: Conditioning) -> Tensor: ...


Prediction = Literal["x0", "velocity"]
TimeSampling = Literal["uniform", "logit_normal"]


class FlowMatching:
    """Rectified-flow objective with a choice of network target.

    prediction:
      "x0"       the network predicts the clean latent; the loss is MSE on x0. On small data and short budgets this
                 learns conditioning far faster than velocity targets, whose early outputs stay buried in noise.
      "velocity" the network predicts v = ε - x0 (the usual rectified-flow target); loss MSE on v.
    time_sampling: "uniform" t ~ U(0, 1), or "logit_normal" t = sigmoid(N(mean, std)) (Esser et al. 2024, SD3).
    t_min: the smallest t used in x0 ↔ velocity conversions, avoiding division by zero near clean data.
    """

    def __init__(self, prediction: Prediction = "x0", time_sampling: TimeSampling = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, t_min: float = 1e-4) -> None:
        if prediction not in ("x0", "velocity"):
            raise ValueError(f"FlowMatching.prediction: expected 'x0' or 'velocity', got {prediction!r}")
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"FlowMatching.time_sampling: expected 'uniform' or 'logit_normal', got {time_sampling!r}")
        self.prediction = prediction
        self.time_sampling = time_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.t_min = t_min

    def sample_time(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training times t: [batch] in (0, 1)."""
        if self.time_sampling == "uniform":
            return torch.rand(batch, device=device, generator=generator)
        z = torch.randn(batch, device=device, generator=generator)
        return torch.sigmoid(self.logit_mean + self.logit_std * z)

    @staticmethod
    def noise(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t ε, with t: [B] broadcast over x0: [B, D, L]."""
        t = t.view(-1, *([1] * (x0.dim() - 1)))
        return (1 - t) * x0 + t * eps

    def loss(self, net: Denoiser, x0: Tensor, cond: Conditioning, generator: torch.Generator | None = None,
             weight: Tensor | None = None) -> Tensor:
        """Mean squared error of the network's target; x0: [B, D, L]; weight: optional [B, 1 or D, L] mask."""
        t = self.sample_time(x0.shape[0], x0.device, generator)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.noise(x0, eps, t)
        out = net(x_t, t, cond)
        target = x0 if self.prediction == "x0" else eps - x0
        err = (out.float() - target.float()) ** 2
        if weight is None:
            return err.mean()
        weight = weight.to(err.dtype).expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    def denoise(self, net: Denoiser, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The network's estimate of clean data x̂0: [B, D, L] from x_t at times t: [B]."""
        out = net(x_t, t, cond)
        if self.prediction == "x0":
            return out
        tb = t.view(-1, *([1] * (x_t.dim() - 1)))
        return x_t - tb * out

    def velocity(self, x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        """dx/dt implied by x̂0 at (x_t, t): v = (x_t - x̂0) / t."""
        tb = t.view(-1, *([1] * (x_t.dim() - 1))).clamp_min(self.t_min)
        return (x_t - x0_hat) / tb
