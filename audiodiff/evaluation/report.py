"""Evaluation reports: the card that says what was measured, comparison of two reports, and the markdown page.

A report's numbers only compare with another's when everything but the model is the same: the prompts, the
reference clips, the embedders and their weights, the sample rates, the seed and the sampler. The card records
each of these; `compare_reports` refuses two reports whose cards differ (naming the fields) unless forced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from audiodiff.audio.image import spectrogram_image

# Card fields that may differ between two comparable reports.
MODEL_FIELDS = ("model", "model_sha256", "audiodiff_version", "created")


class ReportMismatchError(ValueError):
    """Two reports measured under different conditions."""


def card_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Card fields (dotted paths) whose values differ, ignoring MODEL_FIELDS."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                if not path and key in MODEL_FIELDS:
                    continue
                walk(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif x != y:
            out.append(f"{path}: {x!r} vs {y!r}")

    walk(a, b, "")
    return out


def compare_reports(paths: Sequence[str | Path], force: bool = False) -> str:
    """A markdown table of the headline metrics of several report.json files side by side.

    Raises ReportMismatchError naming every differing card field unless `force` (then the table says so)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    problems = [f"{paths[i]} vs {paths[0]}: " + "; ".join(diff) for i, r in enumerate(reports[1:], start=1)
                if (diff := card_differences(reports[0]["card"], r["card"]))]
    if problems and not force:
        raise ReportMismatchError("reports were measured under different conditions (force=true to compare "
                                  "anyway):\n" + "\n".join(problems))
    keys = sorted({k for r in reports for k in r["summary"]})
    lines = ["| metric | " + " | ".join(str(r["card"]["model"]) for r in reports) + " |",
             "|---|" + "---|" * len(reports)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(r["summary"].get(key)) for r in reports) + " |")
    if problems:
        lines += ["", "**Warning: compared despite differing cards:**", *[f"- {p}" for p in problems]]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "value" in value:
        low, high = value.get("low"), value.get("high")
        return f"{value['value']:.4g}" + (f" [{low:.4g}, {high:.4g}]" if low is not None else "")
    return "" if value is None else str(value)


def spectrogram_grid(log_mels: Sequence[Tensor | np.ndarray], path: str | Path, columns: int = 4,
                     gap: int = 4) -> Path:
    """Tile spectrogram pictures of log-mels [n_mels, F] (natural-log magnitude) into one PNG, row-major."""
    if not log_mels:
        raise ValueError("spectrogram_grid: no spectrograms")
    tiles = [spectrogram_image(m) for m in log_mels]
    height, width = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) - gap, min(columns, len(tiles)) * (width + gap) - gap, 3), 255,
                     np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * (height + gap): r * (height + gap) + tile.shape[0],
               c * (width + gap): c * (width + gap) + tile.shape[1]] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def markdown_report(report: dict[str, Any], grid: str | None, per_prompt_columns: Sequence[str]) -> str:
    """The human-readable page of a report.json dict."""
    card, summary = report["card"], report["summary"]
    lines = [f"# Evaluation of `{card['model']}`", "", "## Summary", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    for note in report.get("notes", []):
        lines.append(f"\n> {note}")
    if grid:
        lines += ["", "## Spectrograms", "", f"![first generated clips]({grid})"]
    lines += ["", "## Card", "", "```json", json.dumps(card, indent=2), "```", "", "## Per prompt", "",
              "| # | prompt | file | " + " | ".join(per_prompt_columns) + " |",
              "|---|---|---|" + "---|" * len(per_prompt_columns)]
    for i, row in enumerate(report["per_prompt"]):
        cells = [_fmt(row.get(c)) for c in per_prompt_columns]
        lines.append(f"| {i} | {row['prompt']} | [{Path(row['file']).name}]({row['file']}) | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"
