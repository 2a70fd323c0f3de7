"""Flow-matching objective, samplers and guidance against exact, closed-form references."""

import pytest
import torch

from audiodiff.conditioning.types import Conditioning
from audiodiff.diffusion.guidance import classifier_free_guidance
from audiodiff.diffusion.objectives import EDM, FlowMatching
from audiodiff.diffusion.samplers import get_sampler, sample_flow_euler, sample_flow_heun

MU, STD = 1.5, 0.5  # the toy data distribution N(MU, STD²), independent per dimension


def exact_x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(MU, STD²), x_t = (1 - t) x0 + t ε (Gaussian conditioning, float64)."""
    t = t.double().view(-1, 1, 1)
    x = x_t.double()
    var_t = (1 - t) ** 2 * STD**2 + t**2
    return (MU + (1 - t) * STD**2 / var_t * (x - (1 - t) * MU)).to(x_t.dtype)


@pytest.mark.parametrize("sampler,steps,tol", [(sample_flow_euler, 200, 0.03), (sample_flow_heun, 20, 0.03)])
def test_samplers_recover_gaussian_data(sampler, steps, tol):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 2, 8, generator=gen, dtype=torch.float64)
    out = sampler(exact_x0, noise, FlowMatching().time_grid(steps))
    assert abs(out.mean().item() - MU) < tol
    assert abs(out.std().item() - STD) < tol


def test_heun_is_more_accurate_than_euler_at_equal_steps():
    noise = torch.randn(2000, 1, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    times = FlowMatching().time_grid(8)
    err_euler = abs(sample_flow_euler(exact_x0, noise, times).std().item() - STD)
    err_heun = abs(sample_flow_heun(exact_x0, noise, times).std().item() - STD)
    assert err_heun < err_euler


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'ddim_typo'"):
        get_sampler("ddim_typo")


class ExactNet(torch.nn.Module):
    """A 'network' that returns the exact x̂0 (or velocity) for the toy Gaussian."""

    def __init__(self, prediction: str) -> None:
        super().__init__()
        self.prediction = prediction

    def forward(self, x, t, cond):
        x0 = exact_x0(x, t)
        if self.prediction == "x0":
            return x0
        return (x - x0) / t.view(-1, 1, 1)


def _cond(batch: int) -> Conditioning:
    return Conditioning(torch.zeros(batch, 1, 4), torch.ones(batch, 1, dtype=torch.bool))


@pytest.mark.parametrize("prediction", ["x0", "velocity"])
def test_denoise_returns_x0_for_both_targets(prediction):
    obj = FlowMatching(prediction=prediction)
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    got = obj.denoise(ExactNet(prediction), x, t, _cond(3))
    torch.testing.assert_close(got, exact_x0(x, t))


def test_loss_of_exact_x0_network_is_its_bayes_error():
    """For x0-prediction the Bayes error per element is Var[x0 | x_t] = STD² t² / ((1-t)² STD² + t²)."""
    obj = FlowMatching(prediction="x0")
    gen = torch.Generator().manual_seed(3)
    x0 = MU + STD * torch.randn(20000, 1, 4, generator=gen, dtype=torch.float64)
    loss = obj.loss(ExactNet("x0"), x0, _cond(20000), generator=torch.Generator().manual_seed(4))
    t = torch.rand(200000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    bayes = (STD**2 * t**2 / ((1 - t) ** 2 * STD**2 + t**2)).mean()
    assert abs(loss.item() - bayes.item()) < 0.01


def test_velocity_targets_with_x0_loss_equal_the_x0_loss_of_the_implied_estimate():
    """loss_space="x0" with velocity targets is the x0 objective's loss of x̂0 = x_t - t·v̂: the same number as an
    x0-predicting network that returns that estimate, on the same draws (and the exact network reaches the Bayes
    error of x0-prediction)."""
    gen = torch.Generator().manual_seed(3)
    x0 = MU + STD * torch.randn(20000, 1, 4, generator=gen, dtype=torch.float64)
    skewed = lambda x, t, c: 0.9 * ExactNet("velocity")(x, t, c)  # noqa: E731
    implied = lambda x, t, c: x - t.view(-1, 1, 1) * skewed(x, t, c)  # noqa: E731
    by_v = FlowMatching(prediction="velocity", loss_space="x0").loss(
        skewed, x0, _cond(20000), generator=torch.Generator().manual_seed(4))
    by_x0 = FlowMatching(prediction="x0").loss(implied, x0, _cond(20000), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(by_v, by_x0)
    on_v = FlowMatching(prediction="velocity").loss(skewed, x0, _cond(20000),
                                                    generator=torch.Generator().manual_seed(4))
    assert on_v > 2 * by_v  # the velocity loss weighs low-noise errors by 1 / t²
    with pytest.raises(ValueError, match="loss_space"):
        FlowMatching(loss_space="eps")


def test_skip_preconditioning_is_edm_in_flow_time_and_keeps_the_x0_loss():
    """skip=True: x̂0 = c_skip·x_t + c_out·F equals Karras et al.'s D(y; σ) on y = x_t / (1 - t), σ = t / (1 - t); a
    network returning F = (x0* - c_skip·x_t) / c_out reaches x0-prediction's Bayes error; a zero network passes x_t
    through at low noise and gives 0 at pure noise."""
    obj = FlowMatching(prediction="x0", skip=True)
    t = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64)
    c_skip, c_out = obj.skip_scales(t)
    e_skip, e_out, _, _ = EDM(sigma_data=1.0).precondition(t / (1 - t))
    torch.testing.assert_close(c_skip, e_skip / (1 - t))
    torch.testing.assert_close(c_out, e_out)

    def exact_f(x, t, cond):
        cs, co = obj.skip_scales(t)
        return (exact_x0(x, t) - cs.view(-1, 1, 1) * x) / co.view(-1, 1, 1)

    x = torch.randn(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(obj.denoise(exact_f, x, t, _cond(4)), exact_x0(x, t))
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    ends = torch.tensor([1e-4, 1.0], dtype=torch.float64)
    got = obj.denoise(zero, x[:2], ends, _cond(2))
    torch.testing.assert_close(got[0], x[0], atol=1e-3, rtol=0)
    assert got[1].abs().max() == 0
    gen = torch.Generator().manual_seed(3)
    x0 = MU + STD * torch.randn(20000, 1, 4, generator=gen, dtype=torch.float64)
    with_skip = obj.loss(exact_f, x0, _cond(20000), generator=torch.Generator().manual_seed(4))
    plain = FlowMatching(prediction="x0").loss(ExactNet("x0"), x0, _cond(20000),
                                               generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(with_skip, plain)
    with pytest.raises(ValueError, match="skip"):
        FlowMatching(prediction="velocity", skip=True)


def test_loss_weight_masks_frames():
    obj = FlowMatching(prediction="x0")
    net = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    x0 = torch.ones(2, 1, 6)
    x0[..., 3:] = 100.0
    weight = torch.zeros(2, 1, 6)
    weight[..., :3] = 1.0
    assert obj.loss(net, x0, _cond(2), weight=weight).item() == pytest.approx(1.0)


def test_logit_normal_times_are_in_unit_interval_and_seeded():
    obj = FlowMatching(time_sampling="logit_normal")
    a = obj.sample_time(1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    b = obj.sample_time(1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    assert abs(a.median().item() - 0.5) < 0.05


def test_bad_objective_settings_are_named():
    with pytest.raises(ValueError, match="prediction"):
        FlowMatching(prediction="eps")
    with pytest.raises(ValueError, match="time_sampling"):
        FlowMatching(time_sampling="cosine")


def test_guidance_scale_one_is_the_conditional_model_and_mixes_linearly():
    calls = []

    def denoise(x, t, cond):
        calls.append(x.shape[0])
        return x * 0 + cond.pooled[:, :, None]

    cond = Conditioning(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), pooled=torch.full((2, 1), 2.0))
    uncond = Conditioning(torch.zeros(2, 1, 4), torch.zeros(2, 1, dtype=torch.bool), pooled=torch.zeros(2, 1))
    x, t = torch.zeros(2, 1, 5), torch.full((2,), 0.5)
    one = classifier_free_guidance(denoise, cond, uncond, 1.0)(x, t)
    torch.testing.assert_close(one, denoise(x, t, cond))
    calls.clear()
    three = classifier_free_guidance(denoise, cond, uncond, 3.0)(x, t)
    assert calls == [4]  # both branches in one batch, token lengths padded to agree
    torch.testing.assert_close(three, torch.full_like(x, 6.0))  # 0 + 3 · (2 − 0)


def test_guidance_interval_and_rescale():
    calls = []

    def denoise(x, t, cond):
        calls.append(x.shape[0])
        ramp = torch.linspace(-1, 1, x.shape[-1])
        return x * 0 + cond.pooled[:, :, None] * ramp  # conditional: 2·ramp, unconditional: 0.5·ramp

    cond = Conditioning(torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool), pooled=torch.full((1, 1), 2.0))
    uncond = Conditioning(torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool), pooled=torch.full((1, 1), 0.5))
    x = torch.zeros(1, 1, 8)
    guided = classifier_free_guidance(denoise, cond, uncond, 3.0, interval=(0.2, 0.6))
    calls.clear()
    outside = guided(x, torch.full((1,), 0.9))
    assert calls == [1]  # only the conditional branch runs outside the interval
    torch.testing.assert_close(outside, denoise(x, None, cond))
    inside = guided(x, torch.full((1,), 0.5))
    torch.testing.assert_close(inside, (0.5 + 3.0 * 1.5) * torch.linspace(-1, 1, 8).view(1, 1, 8))
    # Rescale φ = 1 matches the conditional estimate's standard deviation exactly; φ = 0.5 goes halfway.
    full = classifier_free_guidance(denoise, cond, uncond, 3.0, rescale=1.0)(x, torch.full((1,), 0.5))
    torch.testing.assert_close(full.std(), denoise(x, None, cond).std())
    half = classifier_free_guidance(denoise, cond, uncond, 3.0, rescale=0.5)(x, torch.full((1,), 0.5))
    torch.testing.assert_close(half, 0.5 * (full + inside))


def test_conditioning_cat_pads_tokens():
    a = Conditioning(torch.ones(1, 3, 2), torch.ones(1, 3, dtype=torch.bool))
    b = Conditioning(torch.ones(2, 1, 2), torch.ones(2, 1, dtype=torch.bool))
    c = Conditioning.cat([a, b])
    assert c.tokens.shape == (3, 3, 2)
    assert c.mask.tolist() == [[True] * 3, [True, False, False], [True, False, False]]
    assert torch.all(c.tokens[1:, 1:] == 0)
