"""Accuracy of a corpus's attribute extractors on its own clips, clean and after mel → Griffin-Lim.

    python -m audiodiff.benchmarks.check corpus=sfx [root=data split=test n=400 griffinlim=true
                                                             speckle_db=0]

Takes the first `n` rows of `split` from `<root>/<corpus>/manifest.jsonl` (building the corpus if needed),
reads each clip's attributes back with the corpus extractor, and prints a markdown table (accuracy and n per
attribute, chance level) for the clean audio and, with `griffinlim=true`, for the same clips decoded from
their log-mel by the Griffin-Lim vocoder, as generated audio is, and with `speckle_db=8` for a mel
speckled by 8 dB per bin before vocoding. Also prints the extraction time per clip. Settings:
`conf/attributes_check.yaml` (`--help` lists them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.attributes import corpus_metrics, markdown_table
from audiodiff.data.manifest import read_manifest
from audiodiff.utils.settings import flag, number, text, whole


def check(
    corpus: str,
    root: str | Path = "data",
    split: str = "test",
    n: int = 400,
    griffinlim: bool = True,
    speckle_db: float = 0.0,
) -> dict[str, dict]:
    """Scores of the extractors on the first `n` clips of `split`.

    Args:
        griffinlim: also score the clips after mel → Griffin-Lim.
        speckle_db: if > 0, also score them after Griffin-Lim from a mel with that much log-normal speckle
            (std in dB per bin), a stand-in for an imperfectly generated spectrogram.

    Returns:
        `{"n": clips, "scores": {condition: s}, "seconds per clip": {...}}` where conditions are "clean",
        "griffin-lim" and "griffin-lim + N dB speckle" as requested, and each `s` maps attribute →
        {accuracy, n, chance}.
    """
    extract, score = corpus_metrics(corpus)
    rows = read_manifest(ensure_corpus(corpus, root), split=split)[:n]
    if not rows:
        raise ValueError(f"{root}/{corpus}: no rows in split {split!r}")
    clips = [(wav.T if wav.ndim == 2 else wav, sr)  # [C, T] for multichannel files, as the extractors take them
             for wav, sr in (sf.read(r.audio, dtype="float32") for r in rows)]
    truth = [dict(r.attributes) for r in rows]
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    predicted = [extract(wav, sr) for wav, sr in clips]
    timings["clean"] = (time.perf_counter() - start) / len(rows)
    results["clean"] = score(predicted, truth)
    conditions = ([("griffin-lim", 0.0)] if griffinlim else []) + (
        [(f"griffin-lim + {speckle_db:g} dB speckle", speckle_db)] if speckle_db > 0 else []
    )
    if conditions:
        from audiodiff.benchmarks.roundtrip import griffinlim_roundtrip

        rates = {sr for _, sr in clips}
        if len(rates) != 1:
            raise ValueError(f"{root}/{corpus}: clips at several sample rates {sorted(rates)}")
        rate = rates.pop()
    for label, noise_db in conditions:
        start = time.perf_counter()
        channels = [np.atleast_2d(wav) for wav, _ in clips]  # each channel goes through the mel on its own
        flat = griffinlim_roundtrip([c for wav in channels for c in wav], sample_rate=rate, mel_noise_db=noise_db)
        bounds = np.cumsum([0] + [len(wav) for wav in channels])
        vocoded = [np.stack(flat[a:b]) if b - a > 1 else flat[a] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        timings[f"{label} synthesis"] = (time.perf_counter() - start) / len(rows)
        start = time.perf_counter()
        predicted = [extract(wav, rate) for wav in vocoded]
        timings[label] = (time.perf_counter() - start) / len(rows)
        results[label] = score(predicted, truth)
    return {"n": len(rows), "scores": results, "seconds per clip": timings}


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Score the extractors as `cfg` (conf/attributes_check.yaml) says and print the tables."""
    corpus, split = text(cfg, "corpus", required=True), text(cfg, "split", required=True)
    out = check(
        corpus,
        text(cfg, "root", required=True),
        split,
        whole(cfg, "n", minimum=1),
        flag(cfg, "griffinlim"),
        number(cfg, "speckle_db", minimum=0.0),
    )
    print(f"{corpus} / {split}: attribute accuracy on {out['n']} clips\n")
    print(markdown_table(out["scores"]))
    print(
        "\nextraction: "
        + ", ".join(f"{k} {1000 * v:.1f} ms/clip" for k, v in out["seconds per clip"].items())
    )


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.benchmarks.check", "attributes_check", main, __doc__)
