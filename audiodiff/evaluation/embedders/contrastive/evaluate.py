"""How well a contrastive embedder ties audio to text and separates sounds, on a manifest split it did not train on.

`python -m audiodiff.evaluation.embedders.contrastive.evaluate model=<export> [corpus=sfx root=data | manifest=<jsonl>]
[split=test n=400 label=kind seed=0 out=<report.json>]` (settings: `conf/contrastive_evaluate.yaml`, or `--help`)

Every caption of the chosen clips is a query against the clips' audio embeddings (text → audio retrieval):

- recall@k: share of queries whose own clip is among the k most cosine-similar clips (chance k / N); ties count
  in the query's favour;
- attribute recall@1: share of queries whose most similar clip has exactly the attributes of their own clip. In a
  synthetic corpus several clips share one attribute set and their captions cannot tell them apart, which caps
  recall@1 well below 1; this number has no such cap;
- matched / mismatched cosine: mean cosine of each caption with its own clip, and with every other clip;
- label accuracy: leave-one-out nearest-neighbour accuracy of the clips' audio embeddings for one attribute
  (`label`, e.g. the sfx `kind`), against the majority-class share as chance.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiodiff.audio.io import load_audio
from audiodiff.benchmarks import ensure_corpus
from audiodiff.data.manifest import ManifestRow, read_manifest
from audiodiff.evaluation.embedders.contrastive.embedder import ContrastiveEmbedder, load_embedder
from audiodiff.evaluation.memorization import nearest_neighbours
from audiodiff.utils.settings import text, whole


def _unit(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty 2-D array [N, E], got shape {x.shape}")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def retrieval_scores(text_emb: Any, audio_emb: Any, owner: Sequence[int], ks: Sequence[int] = (1, 5),
                     attributes: Sequence[dict] | None = None) -> dict[str, float]:
    """Text → audio retrieval numbers from embeddings (cosines in float64).

    text_emb: [Q, E] query (caption) embeddings; audio_emb: [N, E] clip embeddings; owner: [Q] the clip index of
    each query's own clip. attributes: optional N attribute dicts, for the attribute recall@1.
    Returns {"recall@k" for k in ks, "attribute_recall@1" (with attributes), "cos_matched", "cos_mismatched",
    "queries", "clips"}.
    """
    text, audio = _unit(text_emb, "retrieval_scores: text_emb"), _unit(audio_emb, "retrieval_scores: audio_emb")
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (text.shape[0],) or owner.min() < 0 or owner.max() >= audio.shape[0]:
        raise ValueError(f"retrieval_scores: owner must hold one clip index in [0, {audio.shape[0]}) per query "
                         f"({text.shape[0]}), got shape {owner.shape}")
    sims = text @ audio.T  # [Q, N]
    rows = np.arange(text.shape[0])
    own = sims[rows, owner]
    rank = (sims > own[:, None]).sum(axis=1)  # clips strictly more similar than the query's own
    out: dict[str, float] = {f"recall@{k}": float((rank < k).mean()) for k in ks}
    if attributes is not None:
        if len(attributes) != audio.shape[0]:
            raise ValueError(f"retrieval_scores: {len(attributes)} attribute dicts for {audio.shape[0]} clips")
        top = sims.argmax(axis=1)
        out["attribute_recall@1"] = float(np.mean([attributes[t] == attributes[o] for t, o in zip(top, owner,
                                                                                                  strict=True)]))
    others = np.ones_like(sims, dtype=bool)
    others[rows, owner] = False
    out.update({"cos_matched": float(own.mean()), "cos_mismatched": float(sims[others].mean()),
                "queries": int(text.shape[0]), "clips": int(audio.shape[0])})
    return out


def label_accuracy(audio_emb: Any, labels: Sequence[Any]) -> dict[str, float]:
    """Leave-one-out 1-nearest-neighbour (cosine) accuracy of `labels` [N] from `audio_emb` [N, E], N >= 2, and the
    majority-class share (what always guessing the commonest label scores)."""
    labels = list(labels)
    n = len(labels)
    if n < 2 or np.asarray(audio_emb).shape[0] != n:
        raise ValueError(f"label_accuracy: need N >= 2 embeddings and one label each, got "
                         f"{np.asarray(audio_emb).shape[0]} embeddings and {n} labels")
    _, index = nearest_neighbours(audio_emb, audio_emb, k=1, exclude=np.arange(n))
    hits = [labels[i] == labels[j] for i, j in enumerate(index[:, 0])]
    return {"accuracy": float(np.mean(hits)), "chance": Counter(labels).most_common(1)[0][1] / n}


def evaluate_rows(embedder: ContrastiveEmbedder, rows: list[ManifestRow], label: str | None = "kind",
                  batch_size: int = 32) -> dict[str, Any]:
    """Retrieval and label numbers (see the module docstring) of `rows`: every caption against every clip."""
    if len(rows) < 2:
        raise ValueError(f"evaluate_rows: need at least 2 clips, got {len(rows)}")
    audio = []
    for start in range(0, len(rows), batch_size):
        wavs = [load_audio(r.audio, sample_rate=embedder.sample_rate)[0] for r in rows[start: start + batch_size]]
        audio.append(embedder.embed(wavs, embedder.sample_rate).numpy())
    audio_emb = np.concatenate(audio)
    captions = [c for r in rows for c in r.captions]
    owner = [i for i, r in enumerate(rows) for _ in r.captions]
    text_emb = embedder.embed_text(captions).numpy()
    report: dict[str, Any] = {"embedder": embedder.id,
                              **retrieval_scores(text_emb, audio_emb, owner, attributes=[r.attributes for r in rows])}
    report["chance_recall@1"], report["chance_recall@5"] = 1 / len(rows), min(5, len(rows)) / len(rows)
    if label is not None:
        labelled = [i for i, r in enumerate(rows) if label in r.attributes]
        if len(labelled) >= 2:
            result = label_accuracy(audio_emb[labelled], [str(rows[i].attributes[label]) for i in labelled])
            report[f"{label}_nn_accuracy"], report[f"{label}_chance"] = result["accuracy"], result["chance"]
    return report


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Evaluate the embedder `cfg` (conf/contrastive_evaluate.yaml) names; print the report (and write `out`)."""
    model = text(cfg, "model", required=True)
    split, seed, n = text(cfg, "split", required=True), whole(cfg, "seed", minimum=0), whole(cfg, "n", minimum=1)
    manifest = text(cfg, "manifest") or ensure_corpus(text(cfg, "corpus", required=True),
                                                      text(cfg, "root", required=True))
    rows = read_manifest(manifest, split)
    n = len(rows) if n is None else n
    picked = [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[:n])]
    label = text(cfg, "label")
    report = {"manifest": str(manifest), "split": split, **evaluate_rows(load_embedder(model), picked, label)}
    text_out = json.dumps(report, indent=2)
    print(text_out)
    out = text(cfg, "out")
    if out is not None:
        Path(out).write_text(text_out + "\n")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.evaluation.embedders.contrastive.evaluate", "contrastive_evaluate", main, __doc__)
