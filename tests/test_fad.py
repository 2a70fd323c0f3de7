"""Fréchet Audio Distance: closed forms, scipy's sqrtm in float64, singular covariances, bootstrap and FAD∞."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from audiodiff.evaluation.fad import fad, fad_bootstrap, fad_infinity, frechet_distance, gaussian_stats


def random_spd(rng: np.random.Generator, e: int, ridge: float = 0.1) -> np.ndarray:
    a = rng.normal(size=(e, e))
    return a @ a.T / e + ridge * np.eye(e)


def sqrtm_reference(mu1, s1, mu2, s2) -> float:
    """The classic FID formula with scipy's general (non-symmetric) matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def test_gaussian_stats_match_numpy_mean_and_unbiased_cov():
    emb = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    mu, sigma = gaussian_stats(emb)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, emb.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(emb.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    e = 12
    mu1, mu2 = rng.normal(size=e), rng.normal(size=e)
    v1, v2 = rng.uniform(0.1, 3.0, size=e), rng.uniform(0.1, 3.0, size=e)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("e", [3, 16, 64])
def test_general_covariances_match_scipy_sqrtm(e):
    rng = np.random.default_rng(e)
    mu1, mu2 = rng.normal(size=e), 0.5 * rng.normal(size=e)
    s1, s2 = random_spd(rng, e), random_spd(rng, e)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(sqrtm_reference(mu1, s1, mu2, s2), rel=1e-8)


def test_symmetric_and_zero_for_identical_statistics():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-10 * np.trace(s1)
    emb = rng.normal(size=(30, 8))
    assert fad(emb, emb) < 1e-10


def test_rank_deficient_covariances_give_finite_exact_values():
    """N < E: singular covariances, where scipy's sqrtm of the product is not reliable. For S_2 = c² S_1 the
    distance is known exactly: ||mu_1 - mu_2||² + (1 - c)² tr(S_1), even when S_1 is singular."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(5, 32))  # rank-4 covariance in 32 dimensions
    mu, sigma = gaussian_stats(emb)
    assert np.linalg.matrix_rank(sigma) == 4
    shift = rng.normal(size=32)
    expected = shift @ shift + (1 - 1.7) ** 2 * np.trace(sigma)
    assert frechet_distance(mu, sigma, mu + shift, 1.7**2 * sigma) == pytest.approx(expected, rel=1e-9)
    other = rng.normal(size=(7, 32)) * 2 + 1
    value = fad(emb, other)
    assert np.isfinite(value) and value >= 0
    assert fad(other, emb) == pytest.approx(value, rel=1e-9)


def test_large_samples_approach_the_population_distance():
    rng = np.random.default_rng(4)
    e = 4
    mu1, mu2 = np.zeros(e), np.array([1.0, -0.5, 0.25, 0.0])
    s1, s2 = random_spd(rng, e, ridge=0.5), random_spd(rng, e, ridge=0.5)
    expected = sqrtm_reference(mu1, s1, mu2, s2)
    a = rng.multivariate_normal(mu1, s1, size=200_000)
    b = rng.multivariate_normal(mu2, s2, size=200_000)
    assert fad(a, b) == pytest.approx(expected, rel=0.02)


def test_torch_and_numpy_inputs_agree():
    emb_a = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    emb_b = torch.randn(30, 5, generator=torch.Generator().manual_seed(1)) + 0.5
    assert fad(emb_a, emb_b) == pytest.approx(fad(emb_a.numpy(), emb_b.numpy()), rel=1e-12)


def test_errors_name_the_problem():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="widths differ"):
        fad(rng.normal(size=(10, 4)), rng.normal(size=(10, 5)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fad(rng.normal(size=(1, 4)), rng.normal(size=(10, 4)))
    bad = rng.normal(size=(10, 4))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        fad(bad, rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="covariance must be"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


def two_gaussian_sets(seed: int, n_gen: int = 400, n_ref: int = 2000, e: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_gen, e)) * 1.3 + 0.4, rng.normal(size=(n_ref, e))


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    gen, ref = two_gaussian_sets(6)
    out = fad_bootstrap(gen, ref, n_boot=100, seed=7)
    assert out["value"] == pytest.approx(fad(gen, ref), rel=1e-12)
    assert out["low"] < out["value"] < out["high"] and out["std"] > 0
    assert out["n_boot"] == 100 and out["confidence"] == 0.95
    assert fad_bootstrap(gen, ref, n_boot=100, seed=7) == out
    assert fad_bootstrap(gen, ref, n_boot=100, seed=8)["low"] != out["low"]
    narrower = fad_bootstrap(gen, ref, n_boot=100, seed=7, confidence=0.5)
    assert out["low"] < narrower["low"] < narrower["high"] < out["high"]
    assert out["bias"] > 0  # duplicates in resampled sets inflate FAD


def test_bootstrap_interval_holds_the_estimate_when_the_sets_are_close():
    rng = np.random.default_rng(3)
    gen, ref = rng.standard_normal((300, 16)), rng.standard_normal((2000, 16))  # same distribution
    out = fad_bootstrap(gen, ref, n_boot=200, seed=0)
    assert out["low"] + out["bias"] > out["value"]  # the uncorrected percentile interval would miss the estimate
    assert out["low"] <= out["value"] <= out["high"]


def test_fad_infinity_removes_the_finite_sample_bias():
    """Same distribution (population FAD 0) and a known scale change (population FAD = E (1.2 - 1)² = 0.32):
    averaged over independent generated sets, the finite-N FAD is biased upward by ~c / N, FAD∞ is not."""
    e, n = 8, 300
    ref = np.random.default_rng(0).normal(size=(100_000, e))
    for scale, population in [(1.0, 0.0), (1.2, e * 0.2**2)]:
        finite, infinite = [], []
        for seed in range(20):
            gen = scale * np.random.default_rng(100 + seed).normal(size=(n, e))
            finite.append(fad(gen, ref))
            infinite.append(fad_infinity(gen, ref, n_draws=8, seed=seed)["value"])
        finite_bias = np.mean(finite) - population
        infinite_bias = np.mean(infinite) - population
        assert finite_bias > 0.06, (scale, finite_bias)
        assert abs(infinite_bias) < 0.05, (scale, infinite_bias)
        assert abs(infinite_bias) < finite_bias / 2, (scale, infinite_bias, finite_bias)


def test_fad_infinity_reports_its_fit_points():
    gen, ref = two_gaussian_sets(9)
    out = fad_infinity(gen, ref, sizes=[100, 200, 400], n_draws=2, seed=0)
    assert out["sizes"] == [100, 200, 400] and len(out["fad"]) == 3 and out["n_draws"] == 2
    assert out["fad"][-1] == pytest.approx(fad(gen, ref), rel=1e-12)  # n = N draws the whole set
    slope, intercept = np.polyfit(1 / np.array(out["sizes"]), out["fad"], 1)
    assert out["value"] == pytest.approx(intercept) and out["slope"] == pytest.approx(slope)
    assert fad_infinity(gen, ref, sizes=[100, 200, 400], n_draws=2, seed=0) == out
    default = fad_infinity(gen, ref)
    assert default["sizes"][0] == 80 and default["sizes"][-1] == 400 and len(default["sizes"]) == 10
    with pytest.raises(ValueError, match=r"sizes must lie in \[2, N=400\]"):
        fad_infinity(gen, ref, sizes=[100, 500])
    with pytest.raises(ValueError, match="two distinct sizes"):
        fad_infinity(gen, ref, sizes=[100, 100])
