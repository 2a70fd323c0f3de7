"""Input checks shared by the metric modules: numpy or torch in, finite float64 numpy matrices out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float64_matrix(x: Any, name: str, min_rows: int = 1) -> np.ndarray:
    """`x` ([N, E] numpy array, torch tensor or nested sequence) as a finite float64 array of shape [N, E].

    Raises ValueError naming `name` when `x` is not 2-D, has fewer than `min_rows` rows or holds NaN/inf.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    out = np.asarray(x, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, E], got shape {tuple(out.shape)}")
    if out.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} rows, got {out.shape[0]}")
    if out.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one column, got shape {tuple(out.shape)}")
    if not np.isfinite(out).all():
        bad = np.unique(np.nonzero(~np.isfinite(out))[0])
        raise ValueError(f"{name}: {bad.size} rows hold NaN or inf (first: row {int(bad[0])})")
    return out
