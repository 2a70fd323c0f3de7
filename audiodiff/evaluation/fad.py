"""Fréchet Audio Distance between two sets of audio embeddings (Kilgour et al., 2019, arXiv:1812.08466).

Each set of clip embeddings [N, E] (VGGish, PANNs, CLAP, … — the embedder is the caller's choice) is summarised
by a Gaussian (mean, covariance); the distance between the two Gaussians is the Fréchet (2-Wasserstein) distance

    FD = ||mu_1 - mu_2||² + tr(S_1) + tr(S_2) - 2 tr((S_1^½ S_2 S_1^½)^½)          (Dowson & Landau, 1982)

in squared embedding units. Everything is computed in float64.

Matrix square root. `scipy.linalg.sqrtm(S_1 S_2)` (the classic FID code) works on a non-symmetric product, returns
complex parts and NaNs when a covariance is singular, which it is whenever N <= E. Here both roots are taken of
symmetric positive semi-definite matrices with `numpy.linalg.eigh`, eigenvalues at round-off level
(<= E · eps · max λ, including those round-off pushes below zero) set to 0 (written λ₊):
S_1^½ = V diag(sqrt(λ₊)) Vᵀ, then tr((S_1^½ S_2 S_1^½)^½) = Σ sqrt(μ₊) over the eigenvalues μ of the symmetric
product. Since S_1^½ S_2 S_1^½ and S_1 S_2 share their eigenvalues, this equals tr(sqrtm(S_1 S_2)) whenever the
latter is defined, and stays finite and real when it is not; the final value is clipped at 0 against round-off.

Finite-sample bias. FAD of N samples overestimates the population distance by roughly c / N (Chong & Forsyth,
"Effectively Unbiased FID and Inception Score and where to find them", CVPR 2020); `fad_infinity` fits that
line and reports its intercept, so models evaluated on different numbers of clips can be compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audiodiff.evaluation.arrays import as_float64_matrix


def gaussian_stats(emb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [E] and unbiased covariance [E, E] (divided by N - 1, as `numpy.cov(emb, rowvar=False)`) of
    embeddings `emb` [N, E], N >= 2, in float64."""
    x = as_float64_matrix(emb, "gaussian_stats: emb", min_rows=2)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _check_stats(mu: Any, sigma: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"frechet_distance: {name} mean must be 1-D [E], got shape {mu.shape}")
    if sigma.shape != (mu.size, mu.size):
        raise ValueError(f"frechet_distance: {name} covariance must be [E, E] = {(mu.size, mu.size)} to match its "
                         f"mean, got shape {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"frechet_distance: {name} statistics hold NaN or inf")
    return mu, sigma


def _clip_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with those at or below eigh's round-off level (E · eps · max |λ|)
    set to 0, so an exact null space contributes nothing rather than E · sqrt(eps · max |λ|) of noise."""
    tol = eigenvalues.size * np.finfo(np.float64).eps * np.abs(eigenvalues).max(initial=0.0)
    return np.where(eigenvalues > tol, eigenvalues, 0.0)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root [E, E] of a covariance [E, E] via eigh, eigenvalues clipped at 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (eigenvectors * np.sqrt(_clip_eigenvalues(eigenvalues))) @ eigenvectors.T


def _trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S_1^½ S_2 S_1^½)^½) = tr(sqrtm(S_1 S_2)) from S_1^½ [E, E] and S_2 [E, E]."""
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    return float(np.sqrt(_clip_eigenvalues(eigenvalues)).sum())


def _distance(mu1: np.ndarray, sigma1: np.ndarray, sqrt_sigma1: np.ndarray, mu2: np.ndarray,
              sigma2: np.ndarray) -> float:
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sqrt_sigma1, sigma2)
    return max(float(value), 0.0)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1 [E], sigma1 [E, E]) and N(mu2 [E], sigma2 [E, E]), in squared embedding
    units, float64. Covariances must be symmetric positive semi-definite (they may be singular); see the module
    docstring for the eigendecomposition-based matrix square root."""
    mu1, sigma1 = _check_stats(mu1, sigma1, "first")
    mu2, sigma2 = _check_stats(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: embedding widths differ: first E={mu1.size}, second E={mu2.size}")
    return _distance(mu1, sigma1, _sqrt_psd(sigma1), mu2, sigma2)


def _check_pair(emb_a: Any, emb_b: Any, caller: str, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a = as_float64_matrix(emb_a, f"{caller}: {names[0]}", min_rows=2)
    b = as_float64_matrix(emb_b, f"{caller}: {names[1]}", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{caller}: embedding widths differ: {names[0]} [N, {a.shape[1]}], "
                         f"{names[1]} [M, {b.shape[1]}]")
    return a, b


def fad(emb_a: Any, emb_b: Any) -> float:
    """Fréchet Audio Distance between embedding sets `emb_a` [N, E] and `emb_b` [M, E] (N, M >= 2)."""
    a, b = _check_pair(emb_a, emb_b, "fad", ("emb_a", "emb_b"))
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def fad_bootstrap(emb_gen: Any, emb_ref: Any, n_boot: int = 200, seed: int = 0,
                  confidence: float = 0.95) -> dict[str, float | int]:
    """FAD of `emb_gen` [N, E] to `emb_ref` [M, E] with a percentile bootstrap confidence interval.

    Only the generated set is resampled (N rows with replacement, `n_boot` times); the reference statistics stay
    fixed. The reference is the common yardstick every model is compared against, so the interval describes the
    sampling variability of the evaluated set — the part that differs between two models scored on the same
    reference. Resampled sets contain duplicates, which biases the resampled values upwards (~1/N); the interval is
    the percentile interval shifted by that bias as the bootstrap estimates it (Efron & Tibshirani 1993, §10),
    clipped at 0.

    Returns {"value": FAD on the full sets, "low", "high": the bias-corrected (1 ± confidence) / 2 quantiles of the
    resampled FADs, "std": their standard deviation, "bias": mean resampled FAD − value, "n_boot", "confidence"}.
    The same seed gives the same interval.
    """
    gen, ref = _check_pair(emb_gen, emb_ref, "fad_bootstrap", ("emb_gen", "emb_ref"))
    if n_boot < 2:
        raise ValueError(f"fad_bootstrap: n_boot must be >= 2, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"fad_bootstrap: confidence must lie in (0, 1), got {confidence}")
    mu_ref, sigma_ref = gaussian_stats(ref)
    sqrt_ref = _sqrt_psd(sigma_ref)
    value = _distance(mu_ref, sigma_ref, sqrt_ref, *gaussian_stats(gen))
    rng = np.random.default_rng(seed)
    n = gen.shape[0]
    resampled = np.empty(n_boot)
    for i in range(n_boot):
        mu, sigma = gaussian_stats(gen[rng.integers(0, n, size=n)])
        resampled[i] = _distance(mu_ref, sigma_ref, sqrt_ref, mu, sigma)
    # Resampled sets hold duplicate rows, which shrinks their covariance and pushes every resampled FAD up; when
    # the sets are close that bias exceeds the spread and a plain percentile interval misses its own estimate.
    # Shifting the percentiles by the bootstrap's bias estimate (mean of the resamples − value) removes it.
    bias = float(resampled.mean()) - value
    low, high = np.quantile(resampled, [(1.0 - confidence) / 2, (1.0 + confidence) / 2]) - bias
    return {"value": value, "low": max(float(low), 0.0), "high": max(float(high), 0.0),
            "std": float(resampled.std(ddof=1)), "bias": bias, "n_boot": n_boot, "confidence": confidence}


def fad_infinity(emb_gen: Any, emb_ref: Any, sizes: list[int] | None = None, n_draws: int = 1,
                 seed: int = 0) -> dict[str, Any]:
    """FAD∞: the generated-set-size-free FAD of `emb_gen` [N, E] to `emb_ref` [M, E].

    Chong & Forsyth (CVPR 2020), as adapted to audio by Gui et al. (ICASSP 2024, "Adapting Fréchet Audio Distance
    for generative music evaluation"): for each size n in `sizes` draw `n_draws` subsets of n generated rows
    without replacement, compute their FAD to the full reference set, fit FAD = value + slope / n by least squares
    and report the intercept (n → ∞). Only the generated set's finite-size bias is removed; the reference set's is
    ~1/M and stays, so use a reference set as large as you can. Being an extrapolation, the value can come out
slightly below 0 when both sets follow the same distribution.

    sizes: distinct subset sizes in [2, N]; default 10 sizes evenly spaced from max(2, N // 5) to N.
    Returns {"value": intercept, "slope", "sizes": [n ...], "fad": [mean FAD at each n ...], "n_draws"}.
    """
    gen, ref = _check_pair(emb_gen, emb_ref, "fad_infinity", ("emb_gen", "emb_ref"))
    n = gen.shape[0]
    if sizes is None:
        sizes = np.unique(np.linspace(max(2, n // 5), n, 10).round().astype(int)).tolist()
    sizes = sorted({int(s) for s in sizes})
    if len(sizes) < 2:
        raise ValueError(f"fad_infinity: need at least two distinct sizes to fit a line, got {sizes} (N={n})")
    if sizes[0] < 2 or sizes[-1] > n:
        raise ValueError(f"fad_infinity: sizes must lie in [2, N={n}], got {sizes[0]}..{sizes[-1]}")
    if n_draws < 1:
        raise ValueError(f"fad_infinity: n_draws must be >= 1, got {n_draws}")
    mu_ref, sigma_ref = gaussian_stats(ref)
    sqrt_ref = _sqrt_psd(sigma_ref)
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        draws = [_distance(mu_ref, sigma_ref, sqrt_ref, *gaussian_stats(gen[rng.choice(n, size, replace=False)]))
                 for _ in range(n_draws)]
        means.append(float(np.mean(draws)))
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, dtype=np.float64), np.asarray(means), deg=1)
    return {"value": float(intercept), "slope": float(slope), "sizes": sizes, "fad": means, "n_draws": n_draws}
