"""What a newcomer's quick-start model does, next to what README.md promises.

    python recipes/sfx/check_quickstart.py runs/sfx_quick/seed0/export [--n 100] [--seeds 8]

1. The README's example prompts (recipes/sfx/readme_prompts.json, with the attributes each asks for), each generated
   with seeds 0-7: how many clips have every asked attribute read back (the README's bar: 6 of 8).
2. Adherence on `--n` held-out prompts at guidance 3 (test split, held-back caption templates), per attribute, beside
   the README's numbers for the full quick start (recipes/sfx/promised.json, with its step count).
Exits 0 whatever the numbers: it reports, the training already happened.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiodiff.benchmarks import ensure_corpus
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.adherence import evaluate_adherence, held_out_prompts
from audiodiff.evaluation.prompt_check import check_prompts, markdown_checks
from audiodiff.pipeline import AudioDiffusionPipeline

HERE = Path(__file__).parent
NEED = 6  # of 8 seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="export folder or run directory")
    parser.add_argument("--n", type=int, default=100, help="held-out prompts")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per README example")
    parser.add_argument("--root", default="data")
    args = parser.parse_args()

    pipe = AudioDiffusionPipeline.from_pretrained(args.model)
    asked = json.loads((HERE / "readme_prompts.json").read_text())
    checks = check_prompts(pipe, "sfx", asked, seeds=args.seeds, guidance=3.0)
    need = round(NEED * args.seeds / 8)
    print(f"\nREADME examples, {args.seeds} seeds each (every asked attribute read back; bar: {need}):\n")
    print(markdown_checks(checks, need))

    rows = read_manifest(ensure_corpus("sfx", args.root), split="test")
    prompts, truths = held_out_prompts(rows, args.n, seed=0, corpus="sfx")
    result = evaluate_adherence(pipe, prompts, truths, "sfx", 3.0, progress=False)
    promised = json.loads((HERE / "promised.json").read_text())
    print(f"\nAdherence on {len(prompts)} held-out prompts, guidance 3 ({result.seconds:.0f} s), beside README.md:\n")
    print(f"| attribute | chance | this model | README ({promised['steps']:,} steps, mean of seeds 0 and 1) |")
    print("|---|---|---|---|")
    for name, score in result.scores.items():
        print(f"| {name} | {100 * score['chance']:.0f}% | {100 * score['accuracy']:.0f}% | "
              f"{promised['guidance 3'].get(name, float('nan')):.0f}% |")
    print(f"| **mean** | | **{100 * result.mean_accuracy:.0f}%** | **{promised['guidance 3']['mean']:.0f}%** |")


if __name__ == "__main__":
    main()
