"""Near-copy detection: exact and planted copies, leave-one-out calibration, chunking against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiodiff.evaluation.memorization import calibrate_threshold, find_near_copies, nearest_neighbours


def brute_force(query: np.ndarray, bank: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """Full float64 cosine matrix, stable descending sort."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    sims = q @ b.T
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_chunked_search_equals_brute_force(chunk_size):
    rng = np.random.default_rng(0)
    query, bank = rng.normal(size=(37, 16)), rng.normal(size=(101, 16))
    sims, idx = nearest_neighbours(query, bank, k=5, chunk_size=chunk_size)
    ref_sims, ref_idx = brute_force(query, bank, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, rtol=1e-12, atol=1e-14)
    assert sims.dtype == np.float64 and idx.dtype == np.int64


def test_exact_duplicates_are_found_at_similarity_one_whatever_their_scale():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 32)).astype(np.float32)
    gen = np.concatenate([train[[17, 150]] * np.array([[1.0], [3.5]], dtype=np.float32),
                          rng.normal(size=(5, 32)).astype(np.float32)])
    sims, idx = nearest_neighbours(torch.from_numpy(gen), train, k=1, chunk_size=64)
    assert idx[:2, 0].tolist() == [17, 150]
    np.testing.assert_allclose(sims[:2, 0], 1.0, atol=1e-12)
    copies = find_near_copies(gen, train, threshold=0.999999)
    assert [(c["generated"], c["training"]) for c in copies] == [(0, 17), (1, 150)]


def test_planted_near_copies_are_flagged_and_independent_clips_at_the_calibrated_rate():
    """Clips from the training distribution are flagged at about 1 - quantile (the calibration's false-positive
    rate); planted copies (a training row plus small noise) always are, and rank above every independent clip."""
    rng = np.random.default_rng(2)
    train = rng.normal(size=(2000, 64))
    calibration = calibrate_threshold(train, quantile=0.99, chunk_size=512)
    assert calibration.threshold < 0.6  # random 64-d directions are far apart
    planted = [3, 99, 1250, 1999]
    near = train[planted] + 0.05 * rng.normal(size=(4, 64))
    independent = rng.normal(size=(2000, 64))
    gen = np.concatenate([independent[:1000], near, independent[1000:]])  # near copies at rows 1000..1003
    copies = find_near_copies(gen, train, calibration.threshold, k=3, chunk_size=512)
    assert {(c["generated"], c["training"]) for c in copies[:4]} == {(1000 + i, t) for i, t in enumerate(planted)}
    assert all(c["similarity"] > 0.99 for c in copies[:4]) and copies[4]["similarity"] < 0.6
    assert [c["similarity"] for c in copies] == sorted((c["similarity"] for c in copies), reverse=True)
    false_positives = {c["generated"] for c in copies[4:]}
    assert 0.003 <= len(false_positives) / 2000 <= 0.03  # ~0.01, spread by sampling and the quantile's noise


def test_calibration_is_leave_one_out():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(120, 8))
    calibration = calibrate_threshold(train, quantile=0.9, chunk_size=16)
    ref_sims, _ = brute_force(train, train, 1, exclude=np.arange(120))
    np.testing.assert_allclose(calibration.similarities, ref_sims[:, 0], rtol=1e-12)
    assert calibration.similarities.max() < 1 - 1e-6  # no clip matched itself
    assert calibration.threshold == pytest.approx(np.quantile(ref_sims[:, 0], 0.9), rel=1e-12)
    summary = calibration.as_dict()["distribution"]
    assert summary["n"] == 120 and summary["max"] == pytest.approx(ref_sims.max())

    with_duplicate = np.concatenate([train, train[:1]])  # a true duplicate inside the training set still counts
    dup = calibrate_threshold(with_duplicate, quantile=0.5)
    assert dup.similarities[0] == pytest.approx(1.0, abs=1e-12) and dup.similarities[-1] == pytest.approx(1.0)


def test_calibration_on_a_subset_of_queries():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(300, 8))
    calibration = calibrate_threshold(train, max_queries=50, seed=5, chunk_size=32)
    assert calibration.query_indices.shape == (50,) and len(set(calibration.query_indices.tolist())) == 50
    ref_sims, _ = brute_force(train[calibration.query_indices], train, 1, exclude=calibration.query_indices)
    np.testing.assert_allclose(calibration.similarities, ref_sims[:, 0], rtol=1e-12)
    assert np.array_equal(calibrate_threshold(train, max_queries=50, seed=5).query_indices,
                          calibration.query_indices)


def test_errors_name_the_problem():
    rng = np.random.default_rng(6)
    bank = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="widths differ"):
        nearest_neighbours(rng.normal(size=(3, 5)), bank)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 10\]"):
        nearest_neighbours(bank[:2], bank, k=11)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 9\].*excluded"):
        nearest_neighbours(bank, bank, k=10, exclude=np.arange(10))
    zero = bank.copy()
    zero[6] = 0
    with pytest.raises(ValueError, match="row 6 is zero"):
        nearest_neighbours(bank, zero, chunk_size=4)
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_threshold(bank[:1])
