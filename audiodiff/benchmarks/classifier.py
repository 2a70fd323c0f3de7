"""Multinomial logistic regression on standardised features, stored as a small JSON file.

Used to name the kind of a clip from a handful of interpretable DSP features; fitting needs scipy, prediction
only numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize


@dataclass(frozen=True)
class SoftmaxClassifier:
    """p(class | x) = softmax(W · (x − mean) / scale + b).

    Attributes:
        classes: `[K]` class names, in output order.
        features: `[D]` feature names, in input order.
        mean, scale: `[D]` standardisation fitted on the training features.
        weights: `[K, D]`; bias: `[K]`.
    """

    classes: tuple[str, ...]
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        """`x: [N, D]` (or `[D]`) raw features → `[N, K]` (or `[K]`) logits."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != len(self.features):
            raise ValueError(f"expected {len(self.features)} features {self.features}, got shape {x.shape}")
        return ((x - self.mean) / self.scale) @ self.weights.T + self.bias

    def predict(self, x: np.ndarray) -> list[str]:
        """`x: [N, D]` → N class names."""
        return [self.classes[i] for i in np.atleast_2d(self.logits(x)).argmax(axis=1)]

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "features": list(self.features),
            "mean": self.mean.round(8).tolist(),
            "scale": self.scale.round(8).tolist(),
            "weights": self.weights.round(8).tolist(),
            "bias": self.bias.round(8).tolist(),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SoftmaxClassifier:
        """Read a classifier written by `save`; raises ValueError naming the file if it is malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            out = cls(
                classes=tuple(data["classes"]),
                features=tuple(data["features"]),
                mean=np.asarray(data["mean"], dtype=np.float64),
                scale=np.asarray(data["scale"], dtype=np.float64),
                weights=np.asarray(data["weights"], dtype=np.float64),
                bias=np.asarray(data["bias"], dtype=np.float64),
            )
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a classifier file ({error})") from error
        k, d = len(out.classes), len(out.features)
        if (
            out.weights.shape != (k, d)
            or out.bias.shape != (k,)
            or out.mean.shape != (d,)
            or out.scale.shape != (d,)
        ):
            raise ValueError(
                f"{path}: expected weights [{k}, {d}], bias [{k}], mean/scale [{d}]; got "
                f"{out.weights.shape}, {out.bias.shape}, {out.mean.shape}, {out.scale.shape}"
            )
        return out


def fit_softmax(
    x: np.ndarray, labels: list[str], features: tuple[str, ...], classes: tuple[str, ...], l2: float = 1e-2
) -> SoftmaxClassifier:
    """Fit a `SoftmaxClassifier` by L-BFGS on mean cross-entropy + `l2`·‖W‖² (deterministic).

    Args:
        x: `[N, D]` features; labels: N class names, each in `classes`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape != (len(labels), len(features)):
        raise ValueError(f"x must be [N={len(labels)}, D={len(features)}], got {x.shape}")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among classes {list(classes)}")
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    z = (x - mean) / scale
    y = np.array([classes.index(label) for label in labels])
    k, d = len(classes), x.shape[1]
    onehot = np.eye(k)[y]

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[: k * d].reshape(k, d), params[k * d :]
        logits = z @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        value = -(onehot * logp).sum() / len(y) + l2 * (w**2).sum()
        grad_logits = (p - onehot) / len(y)
        grad_w = grad_logits.T @ z + 2 * l2 * w
        return value, np.concatenate([grad_w.ravel(), grad_logits.sum(axis=0)])

    result = scipy.optimize.minimize(
        loss, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 2000}
    )
    w, b = result.x[: k * d].reshape(k, d), result.x[k * d :]
    return SoftmaxClassifier(tuple(classes), tuple(features), mean, scale, w, b)
