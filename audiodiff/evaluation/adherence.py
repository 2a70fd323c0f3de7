"""Prompt adherence: generate audio for held-out prompts and check its attributes with the corpus extractors.

This is the project's guard against models that run but output noise: the score is the share of generated
clips whose attributes, recovered from audio alone, match the ones the prompt asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from audiodiff.benchmarks.attributes import asked_attributes, corpus_metrics
from audiodiff.benchmarks.score import above_chance_p_value
from audiodiff.data.manifest import ManifestRow
from audiodiff.pipeline import AudioDiffusionPipeline


@dataclass(frozen=True)
class AdherenceResult:
    guidance: float
    scores: dict[str, dict[str, float]]  # attribute → {accuracy, n, chance, p_value}
    seconds: float  # wall time of generation + extraction
    predictions: tuple[dict, ...] = ()  # what the extractor read from each clip, in prompt order

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean([s["accuracy"] for s in self.scores.values()]))

    def as_dict(self) -> dict[str, Any]:
        return {"guidance": self.guidance, "scores": self.scores, "mean_accuracy": self.mean_accuracy,
                "seconds": self.seconds}


def held_out_prompts(rows: list[ManifestRow], n: int, seed: int = 0,
                     corpus: str | None = None) -> tuple[list[str], list[dict]]:
    """Up to n (prompt, attributes) pairs from rows (e.g. the test split, captioned with held-back templates),
    chosen with a seeded permutation. With `corpus`, the attributes are those the prompt states
    (`audiodiff.benchmarks.attributes.asked_attributes`)."""
    if not rows:
        raise ValueError("held_out_prompts: no rows (is the split name right?)")
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    picked = [rows[i] for i in order]
    prompts = [r.captions[0] for r in picked]
    if corpus is None:
        return prompts, [dict(r.attributes or {}) for r in picked]
    return prompts, [asked_attributes(corpus, p, r.attributes or {}) for p, r in zip(prompts, picked, strict=True)]


def evaluate_adherence(pipe: AudioDiffusionPipeline, prompts: list[str], truths: list[dict], corpus: str,
                       guidance: float, steps: int | None = None, sampler: str | None = None, seed: int = 0,
                       batch_size: int = 32, duration: float | None = None,
                       progress: bool = True) -> AdherenceResult:
    """Generate one clip per prompt at `guidance` (0 = unconditional) and score its attributes against `truths`.

    Each attribute's score carries its one-sided binomial p-value against chance (:func:`above_chance_p_value`).
    Each attribute is scored on its own: the extractor reads the attributes of the kind the prompt asked for
    (a sweep's direction, a beep train's count) from the audio, while `kind` is scored by the classifier alone.
    """
    extract, _ = corpus_metrics(corpus)
    start = time.perf_counter()
    predicted: list[dict] = []
    batches = range(0, len(prompts), batch_size)
    for lo in tqdm(batches, desc=f"guidance {guidance:g}", disable=not progress, unit="batch"):
        chunk = prompts[lo: lo + batch_size]
        with torch.inference_mode():
            out = pipe(chunk, duration=duration, steps=steps, guidance=guidance, seed=seed + lo, sampler=sampler)
        for clip, asked in zip(out.audio, truths[lo: lo + batch_size], strict=True):
            predicted.append(extract(clip.numpy(), out.sample_rate, reference=asked))  # [C, T]
    return AdherenceResult(guidance, attribute_scores(predicted, truths, corpus), time.perf_counter() - start,
                           tuple(predicted))


def attribute_scores(predicted: list[dict], truths: list[dict], corpus: str) -> dict[str, dict[str, float]]:
    """Each attribute's {accuracy, n, chance, p_value} for what the corpus extractor read from the clips
    (`predicted`, in prompt order) against what the prompts asked (`truths`); p_value: one-sided binomial against
    chance (:func:`above_chance_p_value`)."""
    _, score = corpus_metrics(corpus)
    return {name: {**s, "p_value": above_chance_p_value(s["accuracy"], int(s["n"]), s["chance"])}
            for name, s in score(predicted, truths).items()}


def markdown_table(results: dict[str, list[AdherenceResult]]) -> str:
    """One row per attribute, one column per guidance label; cells 'mean' or 'mean (min–max)' over seeds."""
    labels = list(results)
    attributes = list(results[labels[0]][0].scores)
    lines = ["| attribute | n | chance | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]

    def cell(values: list[float]) -> str:
        pct = [100 * v for v in values]
        if len(pct) == 1:
            return f"{pct[0]:.0f}%"
        return f"{np.mean(pct):.0f}% ({min(pct):.0f}–{max(pct):.0f})"

    for attr in attributes:
        first = results[labels[0]][0].scores[attr]
        row = [cell([r.scores[attr]["accuracy"] for r in results[label]]) for label in labels]
        lines.append(f"| {attr} | {first['n']:.0f} | {100 * first['chance']:.0f}% | " + " | ".join(row) + " |")
    lines.append("| **mean** | | | " + " | ".join(cell([r.mean_accuracy for r in results[label]])
                                                for label in labels) + " |")
    return "\n".join(lines)
