"""Fit the new-kind detector (`sfx_new_kinds.json`) and report how well it and the extractor read held-out clips.

    python -m audiodiff.benchmarks.sfx.new_kinds_fit [root=data other_per_kind=40 griffinlim_per_kind=20 out=null]

Trains on the new kinds' train clips (`<root>/sfx_new_kinds`, built when missing) against `other_per_kind` train
clips of every sfx kind (`<root>/sfx`, built when missing), classes balanced, plus Griffin-Lim reconstructions
(clean and with `NOISY_MEL_DB` speckle, as the sfx kind classifier is fitted) of the first `griffinlim_per_kind`
clips of every class, so that vocoded audio is read too. Then prints, on clips it never saw (the new kinds' test
split and the sfx test split): the new kinds' kind and attribute accuracy, and how often an sfx clip is taken for a
new kind.
Settings: `conf/fit_new_kinds.yaml`.

The stored `sfx_new_kinds.json` was fitted with the defaults on the default new-kinds build (seed 0) and the train
split of a 1,400-clip sfx build (`ensure_corpus("sfx", root, num_clips=1400)`, seed 0). With the trill shape check
of `extract_with_new_kinds`, on the 100 held-out clips of each new kind and the 176 sfx val and test clips of that
build: kind and every attribute of both new kinds 100% right, clean and after the mel → Griffin-Lim round trip, and
no sfx clip taken for a new kind; with 8 dB mel speckle besides, trill kind 94% (drips 100%) and 2.3% of the sfx
clips (low hiss) taken for a trill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.classifier import fit_softmax
from audiodiff.benchmarks.roundtrip import griffinlim_roundtrip
from audiodiff.benchmarks.sfx.attributes import analyse
from audiodiff.benchmarks.sfx.corpus import KINDS
from audiodiff.benchmarks.sfx.fit import L2, NOISY_MEL_DB
from audiodiff.benchmarks.sfx.new_kinds import NEW_KINDS, build
from audiodiff.benchmarks.sfx.new_kinds_attributes import (
    DETECTOR_CLASSES,
    DETECTOR_FEATURES,
    DETECTOR_PATH,
    OTHER,
    detector_features,
)
from audiodiff.data.manifest import ManifestRow, read_manifest
from audiodiff.utils.settings import text, whole

NEW_KINDS_DIR = "sfx_new_kinds"


def ensure_new_kinds(root: str | Path) -> Path:
    """The new kinds' manifest under `root`, built with the default sizes when missing."""
    manifest = Path(root) / NEW_KINDS_DIR / "manifest.jsonl"
    return manifest if manifest.exists() else build(Path(root) / NEW_KINDS_DIR)


def _label(row: ManifestRow) -> str:
    kind = row.attributes["kind"]
    return kind if kind in NEW_KINDS else OTHER


def fit(root: str | Path = "data", other_per_kind: int = 40, griffinlim_per_kind: int = 20,
        out: str | Path = DETECTOR_PATH) -> Path:
    """Fit and save the detector from train clips under `root`; returns the file written."""
    new = read_manifest(ensure_new_kinds(root), split="train")
    old = read_manifest(ensure_corpus("sfx", root), split="train")
    picked = [[r for r in new if r.attributes["kind"] == k] for k in NEW_KINDS]
    picked += [[r for r in old if r.attributes["kind"] == k][:other_per_kind] for k in KINDS]
    rows = [r for group in picked for r in group]
    vocoded_rows = [r for group in picked for r in group[:griffinlim_per_kind]]
    sources = [sf.read(r.audio, dtype="float32")[0] for r in vocoded_rows]
    vocoded = (griffinlim_roundtrip(sources, seed=1) + griffinlim_roundtrip(sources, seed=2,
                                                                            mel_noise_db=NOISY_MEL_DB)
               if sources else [])
    examples = [sf.read(r.audio, dtype="float32")[0] for r in rows] + vocoded
    labels = [_label(r) for r in rows] + [_label(r) for r in vocoded_rows] * 2
    features = np.stack([detector_features(analyse(w)) for w in examples])
    # Balanced classes: each new kind's examples repeat until they weigh about as much as the sfx ones together, so
    # that the detector is not biased towards "other" (which it would be by 14 kinds to 1).
    counts = {label: labels.count(label) for label in DETECTOR_CLASSES}
    repeats = np.array([max(1, round(counts[OTHER] / counts[label])) for label in labels])
    repeated = [label for label, k in zip(labels, repeats, strict=True) for _ in range(k)]
    model = fit_softmax(np.repeat(features, repeats, axis=0), repeated, DETECTOR_FEATURES, DETECTOR_CLASSES, l2=L2)
    accuracy = np.mean([p == t for p, t in zip(model.predict(features), labels, strict=True)])
    print(f"fitted on {len(rows)} clean + {len(vocoded)} vocoded train clips; train accuracy {accuracy:.4f}")
    return model.save(out)


def held_out_report(root: str | Path) -> dict[str, float]:
    """Accuracy of `extract_with_new_kinds` on the new kinds' test clips (kind, and each attribute) and the share
    of sfx test clips it takes for a new kind."""
    from audiodiff.benchmarks.sfx.new_kinds_attributes import extract_with_new_kinds, load_detector

    load_detector.cache_clear()
    report: dict[str, float] = {}
    hits: dict[str, list[bool]] = {}
    for row in read_manifest(ensure_new_kinds(root), split="test"):
        wav = sf.read(row.audio, dtype="float32")[0]
        got = extract_with_new_kinds(wav, 16000, reference=row.attributes)
        for name, value in row.attributes.items():
            key = f"{row.attributes['kind']}/{name}"
            hits.setdefault(key, []).append(got.get(name) == value)
    report.update({k: float(np.mean(v)) for k, v in sorted(hits.items())})
    old = read_manifest(ensure_corpus("sfx", root), split="test")
    taken = [extract_with_new_kinds(sf.read(r.audio, dtype="float32")[0], 16000)["kind"] in NEW_KINDS for r in old]
    report["sfx_taken_for_new"] = float(np.mean(taken)) if taken else 0.0
    return report


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Fit, save and report as `cfg` (conf/fit_new_kinds.yaml) says."""
    root = text(cfg, "root", required=True)
    written = fit(root, whole(cfg, "other_per_kind", minimum=1), whole(cfg, "griffinlim_per_kind", minimum=0),
                  text(cfg, "out") or DETECTOR_PATH)
    print(f"wrote {written}")
    if text(cfg, "out") is None:
        for key, value in held_out_report(root).items():
            print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.benchmarks.sfx.new_kinds_fit", "fit_new_kinds", main, __doc__)
