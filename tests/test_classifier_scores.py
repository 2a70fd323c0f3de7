"""Inception Score and paired KL against scipy.stats.entropy and hand-computed float64 values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from audiodiff.evaluation.classifier_scores import inception_score, paired_kl


def random_distributions(rng: np.random.Generator, n: int, k: int, concentration: float = 0.3) -> np.ndarray:
    return rng.dirichlet(np.full(k, concentration), size=n)


def reference_inception_score(p: np.ndarray, splits: int) -> tuple[float, float]:
    n = len(p)
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits: (i + 1) * n // splits]
        marginal = chunk.mean(axis=0)
        scores.append(np.exp(np.mean([entropy(row, marginal) for row in chunk])))
    return float(np.mean(scores)), float(np.std(scores))


def test_identical_predictions_score_one():
    row = random_distributions(np.random.default_rng(0), 1, 7)[0]
    mean, std = inception_score(np.tile(row, (40, 1)), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    mean, _ = inception_score(np.full((20, 5), 0.2), splits=2)
    assert mean == pytest.approx(1.0, abs=1e-12)


def test_confident_predictions_spread_over_k_classes_score_k():
    k = 9
    one_hot = np.tile(np.eye(k), (6, 1))  # every chunk of 9 consecutive rows uses each class once
    mean, std = inception_score(one_hot, splits=6)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(k, rel=1e-12)


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_inception_score_matches_scipy_entropy(splits):
    p = random_distributions(np.random.default_rng(splits), 103, 11)
    expected = reference_inception_score(p, splits)
    got = inception_score(p, splits=splits)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    assert got[1] == pytest.approx(expected[1], rel=1e-9, abs=1e-12)


def test_inception_score_shuffle_is_a_seeded_permutation():
    p = random_distributions(np.random.default_rng(1), 60, 6)
    permuted = p[np.random.default_rng(2020).permutation(60)]
    assert inception_score(p, splits=5, shuffle_seed=2020) == inception_score(permuted, splits=5)
    assert inception_score(p, splits=5, shuffle_seed=2020) != inception_score(p, splits=5)


def test_float32_torch_softmax_is_accepted():
    logits = torch.randn(32, 527, generator=torch.Generator().manual_seed(0)) * 3
    probs = logits.softmax(dim=1)
    expected = reference_inception_score(torch.softmax(logits.double(), dim=1).numpy(), 4)
    assert inception_score(probs, splits=4)[0] == pytest.approx(expected[0], rel=1e-5)


def test_softmax_kl_matches_scipy_entropy_of_ref_against_gen():
    rng = np.random.default_rng(2)
    gen, ref = random_distributions(rng, 25, 8, 1.0), random_distributions(rng, 25, 8, 1.0)
    expected = np.array([entropy(r, g) for r, g in zip(ref, gen, strict=True)])  # KL(ref || gen)
    out = paired_kl(gen, ref, mode="softmax")
    np.testing.assert_allclose(out.per_pair, expected, rtol=1e-12)
    assert out.mean == pytest.approx(expected.mean(), rel=1e-12)
    assert not np.allclose(paired_kl(ref, gen, mode="softmax").per_pair, expected)  # direction matters


def test_sigmoid_kl_is_the_class_averaged_bernoulli_kl():
    rng = np.random.default_rng(3)
    gen, ref = rng.uniform(0.01, 0.99, size=(10, 6)), rng.uniform(0.01, 0.99, size=(10, 6))
    expected = np.array([np.mean([entropy([r, 1 - r], [g, 1 - g]) for r, g in zip(rr, gg, strict=True)])
                         for rr, gg in zip(ref, gen, strict=True)])
    np.testing.assert_allclose(paired_kl(gen, ref, mode="sigmoid").per_pair, expected, rtol=1e-12)
    # one hand-computed value: r = 0.5, g = 0.25 → 0.5 log 2 + 0.5 log(2/3)
    single = paired_kl([[0.25]], [[0.5]], mode="sigmoid").mean
    assert single == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-14)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_kl_of_a_distribution_with_itself_is_exactly_zero(mode):
    p = np.array([[0.0, 0.25, 0.75, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    out = paired_kl(p, p, mode=mode)
    assert np.array_equal(out.per_pair, np.zeros(3)) and out.mean == 0.0


def test_missing_generated_mass_is_finite_through_the_eps_floor():
    out = paired_kl([[1.0, 0.0]], [[0.5, 0.5]], mode="softmax", eps=1e-8)
    assert out.mean == pytest.approx(0.5 * np.log(0.5) + 0.5 * np.log(0.5 / 1e-8), rel=1e-12)


def test_errors_name_the_problem():
    p = random_distributions(np.random.default_rng(4), 6, 4)
    with pytest.raises(ValueError, match=r"p_gen \[N, K\] = \[6, 4\] and p_ref = \[5, 4\]"):
        paired_kl(p, p[:5], mode="softmax")
    with pytest.raises(ValueError, match=r"\[6, 3\]"):
        paired_kl(p, p[:, :3] / p[:, :3].sum(1, keepdims=True), mode="softmax")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*logits"):
        paired_kl(p * 3 - 1, p, mode="sigmoid")
    with pytest.raises(ValueError, match="row 2 sums to"):
        bad = p.copy()
        bad[2] *= 0.5
        paired_kl(bad, p, mode="softmax")
    with pytest.raises(ValueError, match="mode must be"):
        paired_kl(p, p, mode="softplus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"splits must lie in \[1, N=6\]"):
        inception_score(p, splits=7)
    with pytest.raises(ValueError, match="2-D"):
        inception_score(p[0])
