"""Scores from an audio classifier's class probabilities: Inception Score and paired KL divergence.

Both take probabilities [N, K] from a pretrained tagger (AudioSet PANNs, AST, … with K = 527), computed by the
caller; everything here is float64 numpy. `mode="softmax"` means each row is a distribution over K classes;
`mode="sigmoid"` means K independent per-class probabilities (multi-label tagging), rows need not sum to 1.

Conventions follow audioldm_eval (Liu et al., AudioLDM, 2023), the toolbox most text-to-audio papers report:
- IS: exp(E_x KL(p(y|x) || p(y))) on `splits` chunks, mean and population std over chunks;
- KL: per pair (generated clip i, reference clip i of the same prompt), KL(ref_i || gen_i), i.e. the reference
  is the target distribution and the generated clip the approximation; the reported value is the mean over pairs.
  In softmax mode this matches audioldm_eval's "KL" (up to its guard, which adds 1e-6 to the generated
  probabilities). In sigmoid mode audioldm_eval's "KL_Sigmoid" sums r_k log(r_k / g_k) over classes, keeping only
  the positive-label term, which is not a divergence (it can be negative); here sigmoid mode is the proper one,
  the Bernoulli KL of each class averaged over classes, so its values are not comparable to that column.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.special import xlogy

from audiodiff.evaluation.arrays import as_float64_matrix

ProbabilityMode = Literal["softmax", "sigmoid"]
ROW_SUM_TOL = 1e-3  # softmax rows may miss 1 by this much (float32 outputs, rounding in stored files)


def _check_probs(probs: Any, name: str, mode: ProbabilityMode, tol: float) -> np.ndarray:
    """`probs` [N, K] as float64 with values in [0, 1]; softmax rows renormalised to sum exactly to 1."""
    p = as_float64_matrix(probs, name)
    low, high = p.min(), p.max()
    if low < -tol or high > 1 + tol:
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values in [{low:.6g}, {high:.6g}] "
                         "(logits? apply softmax or sigmoid first)")
    p = np.clip(p, 0.0, 1.0)
    if mode == "softmax":
        sums = p.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > ROW_SUM_TOL:
            raise ValueError(f"{name}: softmax rows must sum to 1, row {worst} sums to {sums[worst]:.6g} "
                             "(multi-label sigmoid outputs? use mode='sigmoid')")
        p = p / sums[:, None]
    elif mode != "sigmoid":
        raise ValueError(f"{name}: mode must be 'softmax' or 'sigmoid', got {mode!r}")
    return p


def inception_score(probs: Any, splits: int = 10, shuffle_seed: int | None = None,
                    tol: float = 1e-5) -> tuple[float, float]:
    """Inception Score (Salimans et al., 2016) of class distributions `probs` [N, K] (softmax rows).

    The rows are cut into `splits` contiguous chunks (row i*N//splits onwards, after a seeded permutation when
    `shuffle_seed` is given, as audioldm_eval does with seed 2020); each chunk scores exp(mean_x KL(p(y|x) || p(y)))
    with p(y) the chunk's mean prediction. Returns (mean, population std) over chunks. Ranges from 1 (every clip
    predicts the same distribution) to K (confident predictions spread evenly over all K classes).

    log 0 is guarded by 0 log 0 = 0 (`scipy.special.xlogy`): p(y) > 0 wherever some p(y|x) > 0, so no other eps
    is needed. `tol`: how far float32 round-off may push a value outside [0, 1]; rows must sum to 1 within
    ROW_SUM_TOL and are renormalised. Multi-label sigmoid scores are not distributions: pass softmax outputs.
    """
    p = _check_probs(probs, "inception_score: probs", "softmax", tol)
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"inception_score: splits must lie in [1, N={n}], got {splits}")
    if shuffle_seed is not None:
        p = p[np.random.default_rng(shuffle_seed).permutation(n)]
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits: (i + 1) * n // splits]
        marginal = chunk.mean(axis=0, keepdims=True)
        kl = (xlogy(chunk, chunk) - xlogy(chunk, marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


class PairedKL(NamedTuple):
    per_pair: np.ndarray  # [N] KL(ref_i || gen_i) in nats
    mean: float  # mean over the N pairs, the reported value


def paired_kl(p_gen: Any, p_ref: Any, mode: ProbabilityMode, eps: float = 1e-8, tol: float = 1e-5) -> PairedKL:
    """KL(ref_i || gen_i) in nats for each pair of generated `p_gen` [N, K] and reference `p_ref` [N, K]
    probabilities (row i of both: the same prompt / source clip).

    softmax: Σ_k r_k log(r_k / g_k), rows are distributions over the K classes.
    sigmoid: (1/K) Σ_k [r_k log(r_k / g_k) + (1 - r_k) log((1 - r_k) / (1 - g_k))], each class a Bernoulli.

    Guard: inside the logs both probabilities are floored at `eps` (0 log 0 = 0 outside), so a class the reference
    gives mass to and the generated clip gives none costs r log(r / eps) instead of infinity, and KL(p || p) = 0
    exactly. Values below `eps` change the result by at most ~eps log(1/eps) per class. `tol`: how far float32
    round-off may push a value outside [0, 1]; softmax rows must sum to 1 within ROW_SUM_TOL and are renormalised.
    """
    gen = _check_probs(p_gen, "paired_kl: p_gen", mode, tol)
    ref = _check_probs(p_ref, "paired_kl: p_ref", mode, tol)
    if gen.shape != ref.shape:
        raise ValueError(f"paired_kl: p_gen [N, K] = {list(gen.shape)} and p_ref = {list(ref.shape)} must match; "
                         "row i of each must come from the same prompt, with the same classifier's K classes")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"paired_kl: eps must lie in (0, 1), got {eps}")

    def kl_terms(r: np.ndarray, g: np.ndarray) -> np.ndarray:
        return xlogy(r, np.maximum(r, eps)) - xlogy(r, np.maximum(g, eps))

    if mode == "softmax":
        per_pair = kl_terms(ref, gen).sum(axis=1)
    else:
        per_pair = (kl_terms(ref, gen) + kl_terms(1.0 - ref, 1.0 - gen)).mean(axis=1)
    return PairedKL(per_pair, float(per_pair.mean()))
