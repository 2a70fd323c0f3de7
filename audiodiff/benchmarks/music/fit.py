"""Fit the music extractors' models on the corpus's train split.

    python -m audiodiff.benchmarks.music.fit [root=data griffinlim=500 epochs=40 workers=2 out_dir=null]

Reads every train clip of `<root>/music/manifest.jsonl` (building the corpus if needed) and the Griffin-Lim
reconstructions of the first `griffinlim` of them, half of them from a mel with 8 dB of speckle (so that
the models also know vocoded and imperfect audio, as generated audio is), then fits and writes next to this
module:

- `music_style.json`: softmax classifier on `style_features` (`audiodiff.benchmarks.classifier`);
- `music_key.json`: the 24 key profiles, by maximum likelihood of a softmax over the 24 keys (a conditional
  logit whose scores are the profile-chroma products of `KeyProfiles.logits`);
- `music_instruments.npz`: the lead/chord `InstrumentNet`.

Validation and test clips are never read. Takes about 25 minutes on 2 busy CPU cores. Settings:
`conf/fit_music.yaml` (`--help` lists them).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import soundfile as sf

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.classifier import fit_softmax
from audiodiff.benchmarks.music.attributes import (
    CHROMA_PARTS,
    INSTRUMENT_MODEL_PATH,
    KEY_LABELS,
    KEY_MODEL_PATH,
    STYLE_FEATURE_NAMES,
    STYLE_MODEL_PATH,
    KeyProfiles,
    analyse_music,
    rotate_chroma,
    style_features,
)
from audiodiff.benchmarks.music.corpus import INSTRUMENTS, STYLE_NAMES
from audiodiff.benchmarks.music.instrument_net import train_instrument_net
from audiodiff.benchmarks.roundtrip import griffinlim_roundtrip
from audiodiff.data.manifest import read_manifest
from audiodiff.utils.settings import text, whole

STYLE_L2 = 1e-2  # weight decay of the style softmax on standardised features
KEY_L2 = 1e-3  # weight decay of the key profiles
SPECKLE_DB = 8.0  # the second half of the vocoded clips come from a mel with this much log-normal speckle


def fit_key_profiles(chroma: np.ndarray, keys: list[str], l2: float = KEY_L2) -> KeyProfiles:
    """Key profiles maximising the likelihood of the true keys under a softmax over the 24 key scores.

    Args:
        chroma: ``[N, P, 12]`` chroma parts per clip (``audiodiff.benchmarks.music.attributes.chroma_parts``).
        keys: N labels from :data:`KEY_LABELS` (``"E minor"``).
        l2: weight decay.
    """
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.ndim != 3 or chroma.shape[0] != len(keys) or chroma.shape[2] != 12:
        raise ValueError(f"chroma must be [N={len(keys)}, P, 12], got {chroma.shape}")
    unknown = sorted(set(keys) - set(KEY_LABELS))
    if unknown:
        raise ValueError(f"keys {unknown} are not among {list(KEY_LABELS)}")
    n, parts = chroma.shape[:2]
    if parts != len(CHROMA_PARTS):
        raise ValueError(f"chroma must hold the {len(CHROMA_PARTS)} parts {CHROMA_PARTS}, got {parts}")
    x = rotate_chroma(chroma).reshape(n, 12, parts * 12)  # [N, tonic, features]
    onehot = np.eye(24)[[KEY_LABELS.index(k) for k in keys]]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        weights = w.reshape(2, parts * 12)
        logits = np.einsum("ntd,md->nmt", x, weights).reshape(n, 24)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        grad_logits = (np.exp(logp) - onehot).reshape(n, 2, 12) / n
        grad = np.einsum("nmt,ntd->md", grad_logits, x) + 2 * l2 * weights
        return float(-(onehot * logp).sum() / n + l2 * (weights**2).sum()), grad.ravel()

    result = scipy.optimize.minimize(loss, np.zeros(2 * parts * 12), jac=True, method="L-BFGS-B",
                                     options={"maxiter": 1000})
    return KeyProfiles(CHROMA_PARTS, result.x.reshape(2, parts, 12))


def _measure(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = analyse_music(wav)
    return a.log_mel, style_features(a), a.chroma


def _measure_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _measure(sf.read(path, dtype="float32")[0])


def fit(root: str | Path = "data", griffinlim: int = 500, epochs: int = 40, workers: int = 2,
        out_dir: str | Path | None = None) -> list[Path]:
    """Fit and save the three music models from the train clips under ``root``; returns the files written."""
    rows = read_manifest(ensure_corpus("music", root), split="train")
    if not rows:
        raise ValueError(f"{root}/music: no train clips")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        measured = list(pool.map(_measure_file, [str(r.audio) for r in rows], chunksize=16))
        print(f"measured {len(rows)} train clips: {time.perf_counter() - start:.0f} s")
        vocoded_rows = rows[:griffinlim]
        if vocoded_rows:
            start = time.perf_counter()
            half = len(vocoded_rows) // 2
            wavs = [sf.read(r.audio, dtype="float32")[0] for r in vocoded_rows]
            vocoded = griffinlim_roundtrip(wavs[:half])
            vocoded += griffinlim_roundtrip(wavs[half:], mel_noise_db=SPECKLE_DB)
            measured += list(pool.map(_measure, vocoded, chunksize=16))
            print(f"Griffin-Lim and measured {len(vocoded_rows)} clips: {time.perf_counter() - start:.0f} s")
    attributes = [r.attributes for r in rows] + [r.attributes for r in vocoded_rows]
    log_mels = [m[0] for m in measured]
    features = np.stack([m[1] for m in measured])
    chroma = np.stack([m[2] for m in measured])

    out = Path(out_dir) if out_dir is not None else STYLE_MODEL_PATH.parent
    styles = [a["style"] for a in attributes]
    style_model = fit_softmax(features, styles, STYLE_FEATURE_NAMES, STYLE_NAMES, l2=STYLE_L2)
    accuracy = np.mean([p == t for p, t in zip(style_model.predict(features), styles, strict=True)])
    print(f"style: train accuracy {accuracy:.4f}")
    keys = [f"{a['key']} {a['mode']}" for a in attributes]
    profiles = fit_key_profiles(chroma, keys)
    predicted = [KEY_LABELS[i] for i in profiles.logits(chroma).argmax(axis=1)]
    print(f"key: train accuracy {np.mean([p == t for p, t in zip(predicted, keys, strict=True)]):.4f}")
    start = time.perf_counter()
    net = train_instrument_net(log_mels, [a["lead"] for a in attributes], [a["chords"] for a in attributes],
                               list(INSTRUMENTS), epochs=epochs)
    print(f"instrument net: {time.perf_counter() - start:.0f} s")
    return [
        style_model.save(out / STYLE_MODEL_PATH.name),
        profiles.save(out / KEY_MODEL_PATH.name),
        net.save(out / INSTRUMENT_MODEL_PATH.name),
    ]


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Fit and save the three models as `cfg` (conf/fit_music.yaml) says."""
    written = fit(text(cfg, "root", required=True), whole(cfg, "griffinlim", minimum=0),
                  whole(cfg, "epochs", minimum=1), whole(cfg, "workers", minimum=1), text(cfg, "out_dir"))
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.benchmarks.music.fit", "fit_music", main, __doc__)
