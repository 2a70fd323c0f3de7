"""Adherence scoring plumbing: held-out prompt selection and the multi-seed table."""

import math
from pathlib import Path

import pytest

from audiodiff.benchmarks.score import above_chance_p_value
from audiodiff.data.manifest import ManifestRow
from audiodiff.evaluation.adherence import AdherenceResult, held_out_prompts, markdown_table


def row(i: int) -> ManifestRow:
    return ManifestRow(audio=Path(f"/x/{i}.wav"), captions=(f"caption {i}", "other"), line=i + 1, split="test",
                       attributes={"kind": "beeps", "count": i % 3 + 1})


def test_held_out_prompts_are_seeded_first_captions():
    rows = [row(i) for i in range(10)]
    prompts, truths = held_out_prompts(rows, 4, seed=1)
    again, _ = held_out_prompts(rows, 4, seed=1)
    assert prompts == again and len(set(prompts)) == 4
    assert all(p.startswith("caption ") for p in prompts)
    assert truths[0]["count"] == int(prompts[0].split()[1]) % 3 + 1
    with pytest.raises(ValueError, match="no rows"):
        held_out_prompts([], 3)


def test_table_reports_mean_and_spread_over_seeds():
    a = AdherenceResult(3.0, {"kind": {"accuracy": 0.8, "n": 300, "chance": 1 / 14},
                              "count": {"accuracy": 0.6, "n": 90, "chance": 1 / 3}}, 1.0)
    b = AdherenceResult(3.0, {"kind": {"accuracy": 0.6, "n": 300, "chance": 1 / 14},
                              "count": {"accuracy": 0.7, "n": 90, "chance": 1 / 3}}, 1.0)
    assert a.mean_accuracy == pytest.approx(0.7)
    table = markdown_table({"guidance 3": [a, b]})
    assert "| kind | 300 | 7% | 70% (60–80) |" in table
    assert "| count | 90 | 33% | 65% (60–70) |" in table
    assert "| **mean** | | | 68% (65–70) |" in table


def test_above_chance_p_value_is_the_binomial_upper_tail() -> None:
    """36 of 109 right where guessing scores 24%: P(X >= 36) for X ~ Binomial(109, 0.24), summed directly."""
    n, hits, chance = 109, 36, 0.24
    tail = sum(math.comb(n, k) * chance**k * (1 - chance) ** (n - k) for k in range(hits, n + 1))
    assert above_chance_p_value(hits / n, n, chance) == pytest.approx(tail, rel=1e-9)
    assert 0.01 < tail < 0.05                                    # two standard errors above chance
    assert above_chance_p_value(0.24, n, chance) > 0.4           # at chance: no evidence
    assert above_chance_p_value(0.5, 0, chance) == 1.0           # nothing scored
    with pytest.raises(ValueError, match=r"chance must lie in \[0, 1\], got 1.5"):
        above_chance_p_value(0.5, 10, 1.5)
