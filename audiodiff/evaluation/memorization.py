"""Near-copy detection: generated clips whose embedding is closer to a training clip than training clips
usually are to each other.

Similarity is the cosine of clip embeddings (CLAP, PANNs, … — the caller's choice), computed in float64 in
chunks, so a bank of millions of training clips never needs an [N, M] matrix in memory. The threshold is
calibrated on the training set itself (leave-one-out): take each training clip's similarity to its nearest
*other* training clip; a generated clip more similar to some training clip than `quantile` of training clips are
to their nearest neighbour is flagged (the "memorization" checks of Carlini et al., 2023, and Somepalli et al.,
2023, for image diffusion; Bralios et al., 2024, for audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def _rows(x: Any, name: str) -> np.ndarray:
    """`x` [N, E] as a numpy array in its own float dtype (converted to float64 a chunk at a time)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty 2-D array [N, E], got shape {tuple(x.shape)}")
    return x


def _unit(x: np.ndarray, offset: int, name: str) -> np.ndarray:
    """Rows of `x` [n, E] in float64, scaled to unit length; `offset`: index of row 0 in the full array."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    bad = np.nonzero(~np.isfinite(norms) | (norms == 0))[0]
    if bad.size:
        raise ValueError(f"{name}: row {offset + int(bad[0])} is zero or not finite; cosine similarity needs a "
                         f"finite non-zero embedding ({bad.size} such rows in this chunk)")
    return x / norms[:, None]


def nearest_neighbours(query: Any, bank: Any, k: int = 1, chunk_size: int = 2048,
                       exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `bank` [M, E] most cosine-similar to each row of `query` [N, E].

    Returns (similarities [N, k] float64, indices [N, k] int64 into `bank`), each row sorted by decreasing
    similarity (ties: lower index first). Work is done in blocks of `chunk_size` query × `chunk_size` bank rows.
    exclude: optional [N] bank index to skip for each query row (leave-one-out when the queries are bank rows);
    -1 skips nothing.
    """
    query, bank = _rows(query, "nearest_neighbours: query"), _rows(bank, "nearest_neighbours: bank")
    n, m = query.shape[0], bank.shape[0]
    if query.shape[1] != bank.shape[1]:
        raise ValueError(f"nearest_neighbours: embedding widths differ: query [N, {query.shape[1]}], "
                         f"bank [M, {bank.shape[1]}]")
    if chunk_size < 1:
        raise ValueError(f"nearest_neighbours: chunk_size must be >= 1, got {chunk_size}")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (n,):
            raise ValueError(f"nearest_neighbours: exclude must have shape [N] = ({n},), got {exclude.shape}")
    available = m - (1 if exclude is not None and (exclude >= 0).any() else 0)
    if not 1 <= k <= available:
        raise ValueError(f"nearest_neighbours: k must lie in [1, {available}] for a bank of M={m} rows"
                         f"{' minus the excluded one' if available < m else ''}, got {k}")
    similarities = np.empty((n, k))
    indices = np.empty((n, k), dtype=np.int64)
    for q0 in range(0, n, chunk_size):
        q = _unit(query[q0: q0 + chunk_size], q0, "nearest_neighbours: query")
        rows = np.arange(q.shape[0])
        best_s = np.full((q.shape[0], k), -np.inf)
        best_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        for b0 in range(0, m, chunk_size):
            b = _unit(bank[b0: b0 + chunk_size], b0, "nearest_neighbours: bank")
            sims = q @ b.T  # [nq, nb]
            if exclude is not None:
                skip = exclude[q0: q0 + q.shape[0]] - b0
                inside = (skip >= 0) & (skip < b.shape[0])
                sims[rows[inside], skip[inside]] = -np.inf
            cand_s = np.concatenate([best_s, sims], axis=1)
            cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(b0, b0 + b.shape[0]), sims.shape)], axis=1)
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, top, axis=1)
            best_i = np.take_along_axis(cand_i, top, axis=1)
        order = np.lexsort((best_i, -best_s), axis=1)
        similarities[q0: q0 + q.shape[0]] = np.take_along_axis(best_s, order, axis=1)
        indices[q0: q0 + q.shape[0]] = np.take_along_axis(best_i, order, axis=1)
    return similarities, indices


@dataclass(frozen=True)
class NearCopyThreshold:
    threshold: float  # cosine similarity at `quantile` of the leave-one-out nearest-neighbour distribution
    quantile: float
    similarities: np.ndarray = field(repr=False)  # [n_queries] each queried training clip's nearest-other similarity
    query_indices: np.ndarray = field(repr=False)  # [n_queries] which training rows were queried

    @property
    def summary(self) -> dict[str, float]:
        s = self.similarities
        return {"n": int(s.size), "mean": float(s.mean()), "std": float(s.std()), "min": float(s.min()),
                "median": float(np.median(s)), "p90": float(np.quantile(s, 0.9)),
                "p99": float(np.quantile(s, 0.99)), "max": float(s.max())}

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "quantile": self.quantile, "distribution": self.summary}


def calibrate_threshold(train_emb: Any, quantile: float = 0.99, max_queries: int | None = None, seed: int = 0,
                        chunk_size: int = 2048) -> NearCopyThreshold:
    """Near-copy threshold from training embeddings `train_emb` [M, E], M >= 2.

    For each training clip (or `max_queries` of them, drawn with `seed`, to bound the O(M²) cost on large sets)
    find the cosine similarity to its nearest *other* training clip (its own row is excluded; true duplicates
    inside the training set still count, at similarity 1). The threshold is the `quantile` of that distribution
    (numpy's linear interpolation), so about 1 - quantile of training clips are themselves "near copies" of
    another training clip by this measure.
    """
    train = _rows(train_emb, "calibrate_threshold: train_emb")
    m = train.shape[0]
    if m < 2:
        raise ValueError(f"calibrate_threshold: need at least 2 training embeddings, got {m}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"calibrate_threshold: quantile must lie in [0, 1], got {quantile}")
    if max_queries is not None and max_queries < m:
        if max_queries < 1:
            raise ValueError(f"calibrate_threshold: max_queries must be >= 1, got {max_queries}")
        queried = np.sort(np.random.default_rng(seed).choice(m, size=max_queries, replace=False))
    else:
        queried = np.arange(m)
    sims, _ = nearest_neighbours(train[queried], train, k=1, chunk_size=chunk_size, exclude=queried)
    nearest = sims[:, 0]
    return NearCopyThreshold(float(np.quantile(nearest, quantile)), quantile, nearest, queried)


def find_near_copies(gen_emb: Any, train_emb: Any, threshold: float, k: int = 1,
                     chunk_size: int = 2048) -> list[dict[str, int | float]]:
    """Pairs (generated clip, training clip) with cosine similarity >= `threshold`.

    gen_emb [N, E], train_emb [M, E]; each generated clip contributes up to `k` pairs (its k nearest training
    clips). Returns [{"generated": row in gen_emb, "training": row in train_emb, "similarity": float}, ...]
    sorted by decreasing similarity (ties by generated then training index).
    """
    sims, idx = nearest_neighbours(gen_emb, train_emb, k=k, chunk_size=chunk_size)
    gen_rows, ranks = np.nonzero(sims >= threshold)
    found = [{"generated": int(g), "training": int(idx[g, r]), "similarity": float(sims[g, r])}
             for g, r in zip(gen_rows, ranks, strict=True)]
    return sorted(found, key=lambda d: (-d["similarity"], d["generated"], d["training"]))
