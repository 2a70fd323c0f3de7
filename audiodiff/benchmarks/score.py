"""Attribute accuracy of predictions against ground truth, attribute by attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scipy.stats import binomtest


def score_predictions(
    predicted: Sequence[Mapping], truth: Sequence[Mapping], values: Mapping[str, Sequence]
) -> dict[str, dict[str, float]]:
    """Accuracy per attribute over the clips whose true attributes include it.

    An attribute counts for a clip when the truth has it (it applies to the true kind); a prediction that
    lacks it (because the predicted kind does not carry it) counts as wrong, so count, pitch, ... are measured
    whether or not the kind was recognised.

    Args:
        predicted: one attribute dict per clip, from an extractor.
        truth: one attribute dict per clip, as stored in the manifest.
        values: every attribute's possible values; chance = 1 / len(values[attribute]).

    Returns:
        `{attribute: {"accuracy", "n", "chance"}}` in `values` order, for attributes present in some truth.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"got {len(predicted)} predictions for {len(truth)} ground-truth rows")
    out: dict[str, dict[str, float]] = {}
    for name, options in values.items():
        pairs = [(p.get(name), t[name]) for p, t in zip(predicted, truth, strict=True) if name in t]
        if not pairs:
            continue
        correct = sum(p == t for p, t in pairs)
        out[name] = {"accuracy": correct / len(pairs), "n": len(pairs), "chance": 1.0 / len(options)}
    unknown = sorted({k for t in truth for k in t} - set(values))
    if unknown:
        raise ValueError(f"truth holds attributes {unknown} that are not in the vocabulary {list(values)}")
    return out


def markdown_table(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """`{column label: score_predictions(...)}` → markdown table: a row per attribute, accuracy in percent."""
    labels = list(scores)
    attributes = list(dict.fromkeys(a for s in scores.values() for a in s))
    lines = [
        "| attribute | chance | " + " | ".join(f"{label} (n)" for label in labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for attr in attributes:
        chance = next(s[attr]["chance"] for s in scores.values() if attr in s)
        cells = [
            f"{100 * s[attr]['accuracy']:.1f}% ({s[attr]['n']})" if attr in s else "–"
            for s in scores.values()
        ]
        lines.append(f"| {attr} | {100 * chance:.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def above_chance_p_value(accuracy: float, n: int, chance: float) -> float:
    """One-sided binomial p-value of scoring `accuracy` on `n` prompts where guessing scores `chance`: the
    probability of at least ``round(accuracy * n)`` hits from n independent guesses. 1.0 when n is 0."""
    if n <= 0:
        return 1.0
    if not 0.0 <= chance <= 1.0:
        raise ValueError(f"above_chance_p_value: chance must lie in [0, 1], got {chance}")
    return float(binomtest(round(accuracy * n), n, chance, alternative="greater").pvalue)
