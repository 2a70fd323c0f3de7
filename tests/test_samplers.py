"""Every sampler × objective on a Gaussian toy problem with an exact denoiser, and parity with diffusers.

The toy data is x0 ~ N(μ, Σ) over D channels. For any forward process x = α x0 + σ ε the posterior mean is
E[x0 | x] = μ + α Σ (α² Σ + σ² I)⁻¹ (x - α μ), so each objective gets an exact "network" that returns its own
native target (ε, v, x0, velocity or EDM's F) from its own native inputs, and a sampler that is right must
reproduce μ and Σ.
"""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.diffusion.objectives import EDM, FlowMatching, Objective, VDiffusion, VPDiffusion
from audiodiff.diffusion.samplers import SAMPLERS, get_sampler, initial_latents
from audiodiff.diffusion.schedules import t_from_sigma

torch.set_default_dtype(torch.float64)
MU = torch.tensor([1.0, -0.5, 0.0])
_A = torch.tensor([[1.2, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]])
SIGMA = _A @ _A.T  # eigenvalues in about [0.2, 2.2]
torch.set_default_dtype(torch.float32)


def posterior_mean(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for x [B, D, L] = α x0 + σ ε with per-sample α, σ [B] (float64)."""
    x = x.double()
    a, s = alpha.double().view(-1, 1, 1), sigma.double().view(-1, 1, 1)
    eye = torch.eye(len(MU), dtype=torch.float64)
    cov_x = a * a * SIGMA + s * s * eye  # [B, D, D], symmetric
    gain = a * torch.linalg.solve(cov_x, SIGMA.expand_as(cov_x)).transpose(1, 2)  # a Σ cov_x⁻¹
    return MU[:, None] + gain @ (x - a * MU[:, None])


class ExactNet:
    """The exact network for `objective`: native inputs → native target, via the posterior mean."""

    def __init__(self, objective: Objective) -> None:
        self.obj = objective

    def __call__(self, x: torch.Tensor, level: torch.Tensor, cond: object) -> torch.Tensor:
        obj, level = self.obj, level.double()
        if isinstance(obj, FlowMatching):
            a, s = 1 - level, level
            x0 = posterior_mean(x, a, s)
            if obj.prediction == "x0":
                return x0.to(x.dtype)
            eps = (x.double() - a.view(-1, 1, 1) * x0) / s.view(-1, 1, 1)
            return (eps - x0).to(x.dtype)
        if isinstance(obj, VDiffusion):
            a, s = torch.cos(level * math.pi / 2), torch.sin(level * math.pi / 2)
            x0 = posterior_mean(x, a, s)
            a3, s3 = a.view(-1, 1, 1), s.view(-1, 1, 1)
            return (a3 * (x.double() - a3 * x0) / s3 - s3 * x0).to(x.dtype)  # v = α ε - σ x0
        if isinstance(obj, VPDiffusion):
            sig = obj.step_to_sigma(level * obj.train_steps)
            a, s = 1 / (1 + sig**2).sqrt(), sig / (1 + sig**2).sqrt()
            x0 = posterior_mean(x, a, s)
            a3, s3 = a.view(-1, 1, 1), s.view(-1, 1, 1)
            eps = (x.double() - a3 * x0) / s3
            return {"epsilon": eps, "v": a3 * eps - s3 * x0, "x0": x0}[obj.prediction].to(x.dtype)
        assert isinstance(obj, EDM)
        sig = (4 * level).exp()
        c_skip, c_out, c_in, _ = obj.precondition(sig)
        y = x.double() / c_in.view(-1, 1, 1)
        x0 = posterior_mean(y, torch.ones_like(sig), sig)
        return ((x0 - c_skip.view(-1, 1, 1) * y) / c_out.view(-1, 1, 1)).to(x.dtype)


OBJECTIVES = {
    "flow_x0": lambda: FlowMatching("x0"),
    "flow_v": lambda: FlowMatching("velocity"),
    "vp_eps": lambda: VPDiffusion("epsilon", "linear"),
    "vp_v_cosine": lambda: VPDiffusion("v", "cosine"),
    "vp_x0": lambda: VPDiffusion("x0", "linear"),
    "edm": lambda: EDM(sigma_data=1.0),
    # (Stable Audio samples down to σ = 0.3 and then returns x̂0, which shrinks the covariance by ~0.09 here: the
    # toy problem checks the solvers on the full range.)
    "v_cosine": lambda: VDiffusion(sigma_min=0.01),
}
STEPS = {"flow_euler": 60, "euler": 100, "ddim": 60, "flow_heun": 25, "heun": 60, "dpmpp_2m": 30, "ddpm": 150,
         "dpmpp_2m_sde": 100, "dpmpp_3m_sde": 100, "pingpong": 100}
# Karras' samplers integrate in VE sigma and want Karras' grid; a VP schedule's default "trailing" grid jumps
# from s ≈ 2·10⁴ (cosine) in one step, which Heun's trapezoid cannot take, and the cosine schedule's seven decades
# of sigma need more Euler/Heun steps than the other objectives do.
SPACING = {"euler": "karras", "heun": "karras"}
# Ping-pong sampling jumps to x̂0 and re-noises it: with the exact posterior *mean* as x̂0 every step loses the
# posterior's spread, so only the mean is recovered (the covariance collapses towards 0). It is the sampler of
# distilled models, whose x̂0 is a sample rather than a mean.
MEAN_ONLY = {"pingpong"}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_recovers_gaussian_data(sampler, objective):
    obj = OBJECTIVES[objective]()
    net = ExactNet(obj)
    times = obj.time_grid(STEPS[sampler], SPACING.get(sampler, "default"))
    gen = torch.Generator().manual_seed(0)
    x = initial_latents(torch.randn(3000, 3, 1, generator=gen, dtype=torch.float64), times)
    out = get_sampler(sampler)(lambda x, t: obj.denoise(net, x, t, None), x, times,
                               generator=torch.Generator().manual_seed(1))
    samples = out[..., 0].double()
    mean_err = (samples.mean(0) - MU).abs().max().item()
    cov_err = (torch.cov(samples.T) - SIGMA).abs().max().item()
    # Monte-Carlo error with 3000 samples is about 0.03 on the mean and 0.05 on the covariance.
    assert mean_err < 0.08, f"{sampler} × {objective}: mean off by {mean_err:.3f}"
    if sampler in MEAN_ONLY:
        assert torch.linalg.eigvalsh(torch.cov(samples.T)).max() < torch.linalg.eigvalsh(SIGMA.double()).max()
        return
    assert cov_err < 0.15, f"{sampler} × {objective}: covariance off by {cov_err:.3f}"


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_stochastic_samplers_are_seeded(sampler):
    obj = FlowMatching("x0")
    net = ExactNet(obj)
    times = obj.time_grid(10)
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(seed: int) -> torch.Tensor:
        return get_sampler(sampler)(lambda x, t: obj.denoise(net, x, t, None), x, times,
                                    generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_per_item_generators_make_items_independent_of_the_batch():
    obj = FlowMatching("x0")
    net = ExactNet(obj)
    times = obj.time_grid(6)
    x = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sample = get_sampler("ddpm")

    def gens(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    full = sample(lambda x, t: obj.denoise(net, x, t, None), x, times, generator=gens(5, 6, 7))
    alone = sample(lambda x, t: obj.denoise(net, x, t, None), x[1:2], times, generator=gens(6))
    assert torch.allclose(full[1:2], alone, atol=1e-12)
    with pytest.raises(ValueError, match="one generator per batch item"):
        sample(lambda x, t: obj.denoise(net, x, t, None), x, times, generator=gens(5))


def test_euler_ddim_and_flow_euler_coincide_without_noise():
    """Deterministic DDIM, Euler in VE sigma and Euler in flow time are one update written three ways."""
    obj = VPDiffusion("epsilon")
    net = ExactNet(obj)
    times = obj.time_grid(12)
    x = initial_latents(torch.randn(64, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                        times)
    outs = [get_sampler(n)(lambda x, t: obj.denoise(net, x, t, None), x, times)
            for n in ("ddim", "euler", "flow_euler")]
    assert torch.allclose(outs[0], outs[1], atol=1e-8) and torch.allclose(outs[0], outs[2], atol=1e-8)


def test_second_order_beats_first_order_at_few_steps():
    obj = EDM()
    net = ExactNet(obj)
    times = obj.time_grid(25)
    x = initial_latents(torch.randn(3000, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                        times)

    def cov_error(name: str) -> float:
        out = get_sampler(name)(lambda x, t: obj.denoise(net, x, t, None), x, times)[..., 0]
        return (torch.cov(out.T) - SIGMA).abs().max().item()

    euler = cov_error("euler")
    assert cov_error("heun") < 0.7 * euler and cov_error("dpmpp_2m") < 0.7 * euler
    assert cov_error("flow_heun") < 0.7 * cov_error("flow_euler")


def test_grids_are_decreasing_and_end_at_zero():
    for name, make in OBJECTIVES.items():
        obj = make()
        for spacing in ("default", "uniform", "karras", "exponential"):
            t = obj.time_grid(10, spacing)
            assert t.shape == (11,) and t[-1] == 0 and torch.all(t[1:] < t[:-1]), (name, spacing)
            assert t[0] <= obj.t_max + 1e-12
    assert FlowMatching().time_grid(4)[0] == 1.0  # flow models start from pure noise
    assert torch.all(FlowMatching().time_grid(8, shift=3.0)[1:-1] > FlowMatching().time_grid(8)[1:-1])
    with pytest.raises(ValueError, match="unknown spacing 'leading'"):
        FlowMatching().time_grid(4, "leading")
    with pytest.raises(ValueError, match="steps"):
        EDM().time_grid(0)


def test_vp_step_sigma_maps_are_inverse():
    obj = VPDiffusion("epsilon", "cosine")
    k = torch.tensor([0.0, 0.25, 10.5, 500.0, 998.9, 999.0], dtype=torch.float64)
    assert torch.allclose(obj.sigma_to_step(obj.step_to_sigma(k)), k, atol=1e-9)


def test_min_snr_weighting_changes_the_loss_by_the_expected_factor():
    """With a network that outputs zeros, the ε-loss per step is E[ε²] = D·L per element → weight alone."""
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x0 = torch.zeros(512, 2, 4)
    net = lambda x, level, cond: torch.zeros_like(x)  # noqa: E731
    plain = VPDiffusion("epsilon").loss(net, x0, None, gen())
    weighted = VPDiffusion("epsilon", loss_weighting="min_snr", min_snr_gamma=5.0)
    k = torch.randint(0, 1000, (512,), generator=gen())
    snr = weighted.alphas_cumprod[k] / (1 - weighted.alphas_cumprod[k])
    expected = plain * (snr.clamp(max=5.0) / snr).mean()
    assert math.isclose(weighted.loss(net, x0, None, gen()).item(), expected.item(), rel_tol=0.05)


# ---- parity with diffusers' schedulers: same model, same noise, same grid --------------------------------------
diffusers = pytest.importorskip("diffusers")


def eps_model(x: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
    """A smooth, fixed, time-dependent stand-in for a trained ε network (diffusers calling convention)."""
    w = torch.linspace(-0.5, 0.5, 9, dtype=x.dtype).view(3, 3)
    tt = torch.as_tensor(timestep, dtype=x.dtype).reshape(-1)[0] / 1000.0
    return torch.tanh(torch.einsum("ij,bjl->bil", w, x) * (1 + tt)) + 0.3 * tt * x


def _ours(objective: Objective, sampler: str, times: torch.Tensor, start: torch.Tensor, scale: float) -> torch.Tensor:
    """Our sampler from the same starting state `start` (already in canonical coordinates)."""
    net = lambda x, level, cond: eps_model(x, level * scale)  # noqa: E731
    return get_sampler(sampler)(lambda x, t: objective.denoise(net, x, t, None), start, times)


def _vp_grid(obj: VPDiffusion, timesteps: torch.Tensor) -> torch.Tensor:
    """Canonical times of a scheduler's integer timesteps, then 0."""
    return torch.cat([t_from_sigma(obj.log_sigmas[timesteps.long()].exp()), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_discrete_grids_match_diffusers_ddim(spacing):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    scheduler.set_timesteps(20)
    obj = VPDiffusion("epsilon")
    assert torch.allclose(obj.time_grid(20, spacing), _vp_grid(obj, scheduler.timesteps), atol=1e-12)


_DDIM = ("ddim", "DDIMScheduler", {"set_alpha_to_one": True, "clip_sample": False}, "vp")
_EULER = ("euler", "EulerDiscreteScheduler", {}, "ve")
_DPM = ("dpmpp_2m", "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"}, "vp")


# diffusers' DDIM steps by a fixed stride even on a "linspace" grid, and its Euler feeds fractional timesteps
# there, so "linspace" is compared for DPM-Solver++ only.
@pytest.mark.parametrize("sampler,scheduler_cls,extra,space,spacing,steps", [
    (*_DDIM, "trailing", 20), (*_DDIM, "leading", 10),
    (*_EULER, "trailing", 20), (*_EULER, "leading", 10),
    (*_DPM, "trailing", 20), (*_DPM, "leading", 10), (*_DPM, "linspace", 7),
])
def test_vp_samplers_match_diffusers(sampler, scheduler_cls, extra, space, spacing, steps):
    scheduler = getattr(diffusers, scheduler_cls)(num_train_timesteps=1000, beta_schedule="linear",
                                                  beta_start=1e-4, beta_end=0.02, prediction_type="epsilon",
                                                  timestep_spacing=spacing, **extra)
    scheduler.set_timesteps(steps)
    x = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    obj = VPDiffusion("epsilon", "linear", beta_start=1e-4, beta_end=0.02)
    times = _vp_grid(obj, scheduler.timesteps)
    t0 = float(times[0])
    start = x.double() * ((1 - t0) if space == "ve" else math.sqrt((1 - t0) ** 2 + t0**2))
    for ts in scheduler.timesteps:
        x = scheduler.step(eps_model(scheduler.scale_model_input(x, ts), ts), ts, x).prev_sample
    ours = _ours(obj, sampler, times, start, 1000.0)
    assert torch.allclose(ours.float(), x, atol=1e-4), (ours - x).abs().max()


def test_flow_euler_matches_diffusers():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(12)
    noise = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    for ts in scheduler.timesteps:
        x = scheduler.step(eps_model(x, ts), ts, x).prev_sample
    times = scheduler.sigmas.to(torch.float64)
    ours = _ours(FlowMatching("velocity"), "flow_euler", times, noise.double(), 1000.0)
    assert torch.allclose(ours.float(), x, atol=1e-4), (ours - x).abs().max()
