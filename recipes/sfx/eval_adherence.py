"""Score trained sfx models on held-out prompts (test split, phrased with held-back caption templates).

    python recipes/sfx/eval_adherence.py runs/sfx_quick/seed0 runs/sfx_quick/seed1 --n 300 --guidance 0 1 3

Without --guidance each model is scored at its own default guidance (a few-step student's is 1: its guidance is
in its weights) and with its own default sampler and steps.

Prints a markdown table (accuracy per attribute, chance level, mean over seeds with the min–max spread) and writes
it with the raw numbers to --out (default: adherence.{md,json} beside the first model), with each attribute's
one-sided binomial p-value against chance. For the music corpus it also prints how the measured tempo follows the
asked BPM within each style (`tempo_following`: Spearman correlation and its permutation p-value; 0 is chance).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.music.attributes import tempo_following
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.adherence import evaluate_adherence, held_out_prompts, markdown_table
from audiodiff.pipeline import AudioDiffusionPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="run directories or export folders (one per training seed)")
    parser.add_argument("--corpus", default="sfx")
    parser.add_argument("--root", default="data", help="where the built-in corpora live")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=300, help="held-out prompts")
    parser.add_argument("--guidance", type=float, nargs="+", default=None,
                        help="guidance scales to score (default: each model's own, e.g. 1 for a few-step student)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--watermark", choices=["on", "off"], default="on",
                        help="score outputs as users get them (on, the default) or unmarked (off)")
    args = parser.parse_args()

    rows = read_manifest(ensure_corpus(args.corpus, args.root), split=args.split)
    prompts, truths = held_out_prompts(rows, args.n, args.seed, corpus=args.corpus)
    results: dict[str, list] = {}
    raw = []
    lines: list[str] = []
    for model in args.models:
        pipe = AudioDiffusionPipeline.from_pretrained(model, device=args.device, watermark=args.watermark == "on")
        for g in args.guidance or [pipe.model.sampler.guidance]:
            label = ("unconditional" if g == 0 else f"guidance {g:g}") if args.guidance else "default guidance"
            res = evaluate_adherence(pipe, prompts, truths, args.corpus, g, args.steps, args.sampler, args.seed)
            results.setdefault(label, []).append(res)
            raw.append({"model": str(model), **res.as_dict()})
            print(f"{model} {label}: mean {100 * res.mean_accuracy:.1f}% ({res.seconds:.0f} s)", flush=True)
            if g != 0:
                lines.append(f"- {model} {label}: one-sided binomial p against chance: " + ", ".join(
                    f"{name} {s['p_value']:.2g}" for name, s in res.scores.items()))
                print(lines[-1], flush=True)
            if args.corpus == "music":
                following = tempo_following(res.predictions, truths)
                raw[-1]["tempo_following"] = following
                lines.append(f"- {model} {label}: tempo follows the asked BPM within styles with Spearman "
                             f"{following['spearman']:.2f} (one-sided permutation p = {following['p_value']:.4f}, "
                             f"n = {following['n']:.0f}; chance 0); read within the asked style's range it is within "
                             f"4% of the asked BPM for {100 * following['accuracy']:.0f}% (chance "
                             f"{100 * following['chance']:.0f}%, one-sided binomial p = "
                             f"{following['accuracy_p_value']:.2g})")
                print(lines[-1], flush=True)
    table = markdown_table(results) + ("\n\n" + "\n".join(lines) if lines else "")
    header = (f"{len(prompts)} held-out prompts ({args.corpus}/{args.split}), models: {', '.join(args.models)}; "
              f"cells: mean over models (min–max)\n\n")
    print(header + table)
    out = args.out or Path(args.models[0]).parent / "adherence"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(header + table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"n": len(prompts), "results": raw}, indent=2) + "\n")


if __name__ == "__main__":
    main()
