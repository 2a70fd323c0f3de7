"""Spectrogram pictures for previews and reports (PIL only; no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

# Five anchor colours of a perceptually ordered dark-to-bright map (magma-like), interpolated linearly.
_ANCHORS = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float64)


def colorize(values: np.ndarray) -> np.ndarray:
    """values [H, W] in [0, 1] → uint8 RGB [H, W, 3]."""
    x = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (x - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).round().astype(np.uint8)


def spectrogram_image(log_mel: Tensor | np.ndarray, db_range: float = 80.0, scale: int = 2) -> np.ndarray:
    """log_mel [n_mels, F] (natural-log magnitude) → RGB [n_mels·scale, F, 3], low frequencies at the bottom."""
    arr = log_mel.detach().float().cpu().numpy() if isinstance(log_mel, Tensor) else np.asarray(log_mel, np.float64)
    db = arr * (20.0 / np.log(10.0))
    top = db.max()
    img = colorize((db - (top - db_range)) / db_range)[::-1]
    return np.repeat(img, scale, axis=0)


def save_spectrogram(path: str | Path, log_mel: Tensor | np.ndarray) -> Path:
    """Write `spectrogram_image(log_mel)` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(spectrogram_image(log_mel)).save(path)
    return path
