"""Which sfx kinds a model draws, and whether its denoiser keeps a kind it is almost shown.

    python recipes/sfx/diagnose_kinds.py runs/sfx_quick/seed0/export [MORE ...] [--n 10] [--one-step 0.05 0.2]

Over the test split of the sfx corpus, `--n` clips per kind (the first ones), the kind classifier's read-back of:

- ``clean``: the synthesised clips; ``mel+GL``: through the first model's mel and its Griffin-Lim decoder;
- per model and `--one-step` time T: its single estimate x̂0 of the real clip from x_T = (1 - T) z + T ε (text: the
  clip's first caption, ε seeded by the clip's position), decoded. A denoiser that loses a kind here cannot draw it
  either, whatever the sampler: the last steps of every sampler are such estimates;
- per model: its clip for the row's first caption (25 flow Heun steps, guidance 3, seed = the clip's position).

Prints one markdown table: a row per kind, a column per condition (share read back as the kind), and the kinds each
model's generated clips are most often heard as.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.sfx.attributes import extract_sfx
from audiodiff.benchmarks.sfx.corpus import KINDS
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.one_step import one_step_estimates, round_trip
from audiodiff.pipeline import AudioDiffusionPipeline

BATCH = 50


def generated(pipe: AudioDiffusionPipeline, captions: list[str], durations: list[float]) -> list[np.ndarray]:
    """The model's clips for `captions` (25 flow Heun steps, guidance 3, seed = position)."""
    clips = []
    for i in range(0, len(captions), BATCH):
        chunk, lengths = captions[i:i + BATCH], durations[i:i + BATCH]
        out = pipe(chunk, duration=max(lengths), steps=25, guidance=3.0, sampler="flow_heun",
                   seed=list(range(i, i + len(chunk))))
        clips += [clip[0, :int(d * pipe.sample_rate)].numpy() for d, clip in zip(lengths, out.audio, strict=True)]
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="export folders or run directories")
    parser.add_argument("--n", type=int, default=10, help="test clips per kind")
    parser.add_argument("--one-step", type=float, nargs="*", default=[0.05, 0.2], help="flow times T")
    parser.add_argument("--no-generate", action="store_true", help="skip the generated clips")
    parser.add_argument("--root", default="data")
    args = parser.parse_args()

    root = ensure_corpus("sfx", args.root)
    rows = read_manifest(root, split="test")
    per_kind: dict[str, list] = defaultdict(list)
    for row in rows:
        if len(per_kind[row.attributes["kind"]]) < args.n:
            per_kind[row.attributes["kind"]].append(row)
    rows = [r for kind in KINDS for r in per_kind[kind]]
    kinds = [r.attributes["kind"] for r in rows]
    captions = [r.captions[0] for r in rows]
    clean = [sf.read(r.audio, dtype="float32")[0] for r in rows]
    pipes = {m: AudioDiffusionPipeline.from_pretrained(m, watermark=False) for m in args.models}
    first = next(iter(pipes.values()))
    conditions = {"clean": clean, "mel+GL": [round_trip(first, w) for w in clean]}
    for model, pipe in pipes.items():
        label = Path(model).parent.name if Path(model).name == "export" else model  # the run's name
        for t in args.one_step:
            conditions[f"{label} x̂0 from t={t:g}"] = one_step_estimates(pipe, clean, captions, t)
        if not args.no_generate:
            conditions[f"{label} generated"] = generated(pipe, captions, [float(r.duration) for r in rows])
    heard = {name: [extract_sfx(w, first.sample_rate)["kind"] for w in clips] for name, clips in conditions.items()}
    names = list(heard)
    print(f"{args.n} test clips per kind ({root.parent}); cells: share read back as the kind\n")
    print("| kind | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for kind in KINDS:
        cells = []
        for name in names:
            got = [h for h, k in zip(heard[name], kinds, strict=True) if k == kind]
            cells.append(f"{100 * np.mean([g == kind for g in got]):.0f}%")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("| **all** | " + " | ".join(
        f"{100 * np.mean([h == k for h, k in zip(heard[n], kinds, strict=True)]):.0f}%" for n in names) + " |")
    for name in names:
        if name in ("clean", "mel+GL"):
            continue
        wrong = Counter((k, h) for h, k in zip(heard[name], kinds, strict=True) if h != k)
        print(f"\n{name}: most common confusions (asked → heard): "
              + ", ".join(f"{k} → {h} {c}" for (k, h), c in wrong.most_common(6)))


if __name__ == "__main__":
    main()
