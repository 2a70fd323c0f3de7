"""Score a few-step student beside its teacher on held-out prompts (test split, held-back caption templates).

    python recipes/sfx/eval_few_step.py runs/sfx_quick/seed0/export runs/sfx_quick_distill/seed0/export \\
        --n 300 --seeds 0,1 --embedder runs/sfx/seed0/embedder/export

Models come in TEACHER STUDENT pairs (several pairs: one per training seed). The teacher runs its own sampler at
--teacher-steps with guidance --guidance, the student its own (the distilled default: flow_euler, guidance 1) at
--student-steps. Each configuration generates one clip per prompt and generation seed (--seeds), unwatermarked, in
batches of --batch. The table has the accuracy per attribute and its mean (mean over pairs and seeds, min–max),
the FAD of all its clips against the prompts' real clips in the embedding of the contrastive embedder (--embedder,
an export of the sfx recipe's embedder stage; bias-corrected bootstrap 95% interval, `fad_bootstrap`), and the
seconds per clip of sampling (text encoding and denoiser steps) and end to end (sampling plus decoding), on this
machine with the threads torch uses. Writes the table and the raw numbers to --out (.md and .json).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audiodiff.audio.io import load_audio
from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.attributes import corpus_metrics
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.adherence import attribute_scores, held_out_prompts
from audiodiff.evaluation.fad import fad_bootstrap
from audiodiff.pipeline import AudioDiffusionPipeline


@dataclass
class Configuration:
    """One table row: a role (teacher or student) at a step count, with what each (pair, seed) run measured."""

    label: str
    steps: int
    guidance: float | None  # None: the model's own
    scores: list[dict[str, dict[str, float]]] = field(default_factory=list)
    sampling: list[float] = field(default_factory=list)  # seconds per clip
    end_to_end: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)


def generate_and_score(pipe: AudioDiffusionPipeline, prompts: list[str], truths: list[dict], steps: int,
                       guidance: float | None, seed: int, batch: int,
                       embedder: object | None) -> tuple[dict, float, float, np.ndarray | None]:
    """(attribute scores, sampling s/clip, end-to-end s/clip, embeddings [N, E] or None) of one clip per prompt,
    prompt i drawn from seed `seed * 1_000_000 + i`, as `pipe` generates (sample_latents, then decode)."""
    model = pipe.model
    settings = pipe.settings(steps=steps, guidance=guidance)
    frames = model.representation.num_frames(model.duration)
    samples = int(round(model.duration * model.sample_rate))
    extract, _ = corpus_metrics("sfx")
    predicted, clips, sampling, total = [], [], 0.0, 0.0
    for lo in range(0, len(prompts), batch):
        chunk = prompts[lo: lo + batch]
        seeds = [seed * 1_000_000 + lo + i for i in range(len(chunk))]
        with torch.inference_mode():
            start = time.perf_counter()
            z = model.sample_latents(chunk, frames, seeds, settings)
            sampled = time.perf_counter()
            wav = model.representation.decode(z)[..., :samples].float().cpu()
            done = time.perf_counter()
        sampling, total = sampling + sampled - start, total + done - start
        for clip, asked in zip(wav, truths[lo: lo + batch], strict=True):
            predicted.append(extract(clip.numpy(), model.sample_rate, reference=asked))
        if embedder is not None:
            clips.extend(wav)
    emb = None
    if embedder is not None:
        emb = np.concatenate([embedder.embed(clips[i: i + 32], model.sample_rate).numpy()
                              for i in range(0, len(clips), 32)])
    return attribute_scores(predicted, truths, "sfx"), sampling / len(prompts), total / len(prompts), emb


def cell(values: list[float], scale: float = 100.0, digits: int = 0, unit: str = "%") -> str:
    """'mean' or 'mean (min–max)' of `values` · scale."""
    v = [scale * x for x in values]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}{unit}"
    return f"{np.mean(v):.{digits}f}{unit} ({min(v):.{digits}f}–{max(v):.{digits}f})"


def table(rows: list[Configuration], fads: dict[str, dict]) -> str:
    attributes = list(rows[0].scores[0])
    head = ["model", "steps", "guidance", *attributes, "mean", "FAD [95% interval]", "sampling s/clip",
            "end-to-end s/clip"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        guidance = "own" if row.guidance is None else f"{row.guidance:g}"
        accuracy = [cell([s[a]["accuracy"] for s in row.scores]) for a in attributes]
        mean = cell([float(np.mean([s[a]["accuracy"] for a in attributes])) for s in row.scores])
        f = fads.get(f"{row.label} {row.steps}")
        fad_cell = f"{f['value']:.3f} [{f['low']:.3f}–{f['high']:.3f}]" if f else "–"
        lines.append(f"| {row.label} | {row.steps} | {guidance} | " + " | ".join(accuracy) + f" | **{mean}** | "
                     f"{fad_cell} | {cell(row.sampling, 1.0, 3, '')} | {cell(row.end_to_end, 1.0, 3, '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="TEACHER STUDENT export folders or run dirs, one pair per seed")
    parser.add_argument("--root", default="data", help="where the built-in corpora live")
    parser.add_argument("--n", type=int, default=300, help="held-out prompts")
    parser.add_argument("--seeds", default="0,1", help="generation seeds, comma-separated")
    parser.add_argument("--teacher-steps", default="1,2,4,8,25")
    parser.add_argument("--student-steps", default="1,2,4,8")
    parser.add_argument("--guidance", type=float, default=3.0, help="the teacher's classifier-free guidance")
    parser.add_argument("--embedder", type=Path, default=None, help="contrastive embedder export, for FAD")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if len(args.models) % 2:
        parser.error("models: expected TEACHER STUDENT pairs")
    pairs = list(zip(args.models[::2], args.models[1::2], strict=True))
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = read_manifest(ensure_corpus("sfx", args.root), split="test")
    prompts, truths = held_out_prompts(rows, args.n, 0, corpus="sfx")
    picked = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[: args.n]]  # held_out_prompts' rows
    embedder, reference = None, None
    if args.embedder is not None:
        from audiodiff.evaluation.embedders.contrastive.embedder import load_embedder

        embedder = load_embedder(args.embedder)
        real = [load_audio(r.audio, sample_rate=embedder.sample_rate)[0] for r in picked]
        reference = np.concatenate([embedder.embed(real[i: i + 32], embedder.sample_rate).numpy()
                                    for i in range(0, len(real), 32)])
    configs = [Configuration("teacher", int(k), args.guidance) for k in args.teacher_steps.split(",")]
    configs += [Configuration("student", int(k), None) for k in args.student_steps.split(",")]
    for teacher, student in pairs:
        for role, path in (("teacher", teacher), ("student", student)):
            pipe = AudioDiffusionPipeline.from_pretrained(path, watermark=False)
            for config in (c for c in configs if c.label == role):
                for seed in seeds:
                    scores, sampling, total, emb = generate_and_score(pipe, prompts, truths, config.steps,
                                                                      config.guidance, seed, args.batch, embedder)
                    config.scores.append(scores)
                    config.sampling.append(sampling)
                    config.end_to_end.append(total)
                    if emb is not None:
                        config.embeddings.append(emb)
                    mean = np.mean([s["accuracy"] for s in scores.values()])
                    print(f"{path} {role} {config.steps} steps seed {seed}: mean {100 * mean:.1f}%, sampling "
                          f"{sampling:.3f} s/clip, end to end {total:.3f} s/clip", flush=True)
    fads = {f"{c.label} {c.steps}": fad_bootstrap(np.concatenate(c.embeddings), reference)
            for c in configs if c.embeddings}
    header = (f"{len(prompts)} held-out prompts (sfx/test), generation seeds {seeds}, pairs: {pairs}; teacher "
              f"guidance {args.guidance:g}; cells: mean over pairs and seeds (min–max); times on "
              f"{torch.get_num_threads()} thread(s), batch {args.batch}"
              + (f"; FAD in the embedding of {args.embedder} against the prompts' real clips" if embedder else "")
              + "\n\n")
    text = header + table(configs, fads)
    print(text)
    out = args.out or Path(pairs[0][1]).parent / "few_step"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    raw = [{"label": c.label, "steps": c.steps, "guidance": c.guidance, "scores": c.scores, "sampling": c.sampling,
            "end_to_end": c.end_to_end, "fad": fads.get(f"{c.label} {c.steps}")} for c in configs]
    out.with_suffix(".json").write_text(json.dumps({"n": len(prompts), "pairs": pairs, "seeds": seeds,
                                                    "results": raw}, indent=2) + "\n")


if __name__ == "__main__":
    main()
