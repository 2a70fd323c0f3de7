"""Are long-form joins audible? Spectral flux at the joins against elsewhere, for windowed continuation and for
independent windows butted together (the seams a naive approach leaves).

    python bench/longform_seams.py model=runs/music_quick/seed0/export corpus=music n=8 duration=32

Prompts are the first `n` held-out prompts of the corpus's test split. For each clip `audiodiff.evaluation.seams`
compares the largest flux within ±0.1 s of each join with the same statistic over the rest of the clip: a ratio
near 1 (percentile near 50) means the joins are no more abrupt than the music around them.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.adherence import held_out_prompts
from audiodiff.evaluation.seams import seam_score
from audiodiff.pipeline import AudioDiffusionPipeline


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    pipe = AudioDiffusionPipeline.from_pretrained(args["model"], watermark=False)  # the model alone
    rows = read_manifest(ensure_corpus(args.get("corpus", "music"), args.get("root", "data")), split="test")
    prompts, _ = held_out_prompts(rows, int(args.get("n", 8)), seed=0)
    duration, steps = float(args.get("duration", 32)), int(args.get("steps", 25))
    window = pipe.model.duration
    start = time.perf_counter()
    long = pipe.long_form(prompts, duration, steps=steps, seed=0)
    windows = int(duration // window)
    naive = torch.cat([pipe(prompts, duration=window, steps=steps, seed=100 * j).audio for j in range(windows)], -1)
    naive_joins = [window * j for j in range(1, windows)]
    rows_out = {"windowed continuation": [seam_score(long.audio[i], pipe.sample_rate, long.joins)
                                          for i in range(len(prompts))],
                "independent windows": [seam_score(naive[i], pipe.sample_rate, naive_joins)
                                        for i in range(len(prompts))]}
    print(f"{args['model']}: {len(prompts)} prompts, {duration:g} s from {window:g} s windows, {steps} steps "
          f"({time.perf_counter() - start:.0f} s)\n")
    print("| method | joins per clip | flux ratio, median (range) | percentile, mean |\n|---|---|---|---|")
    for method, scores in rows_out.items():
        ratio = np.array([s["ratio"] for s in scores])
        pct = np.array([s["percentile"] for s in scores])
        joins = len(long.joins) if method.startswith("windowed") else len(naive_joins)
        print(f"| {method} | {joins} | {np.median(ratio):.2f} ({ratio.min():.2f}–{ratio.max():.2f}) "
              f"| {pct.mean():.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
