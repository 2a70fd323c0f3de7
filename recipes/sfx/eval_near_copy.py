"""Measure the near-copy guard (`audiodiff.guard`) against an independent definition of a copy.

    python recipes/sfx/eval_near_copy.py [normal=/path/to/sfx_quick/export] [out=runs/guard_eval] [minutes=4]

1. Trains a deliberately memorising model: the sfx_quick architecture, from scratch, on 8 training clips of the sfx
   corpus (one per kind) with their captions, for `minutes` on one CPU thread, and exports it with its near-copy
   index (the 8 clips).
2. Generates from its training captions and from held-out captions, with watermark=False, and labels each output a
   copy when its aligned log-mel correlation with one of the 8 clips reaches 0.9
   (`audiodiff.evaluation.copies`, which uses no embedding of the guard's); reports the share of copies the guard
   flags (goal >= 95%).
3. Generates from 240 held-out captions of the sfx corpus with a normally trained model (`normal=`, trained on
   data/sfx's 5,600 training clips), builds that model's index into `out`, and reports the share the guard flags
   (goal <= 1%); its copies by the same definition are searched among each output's 5 nearest training clips in
   the guard's embedding (a full search of 5,600 clips per output is too slow here), so that count is a lower bound.
Prints a markdown table. Rerunning reuses the trained memorising model and the indexes in `out`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from audiodiff.audio.io import load_audio
from audiodiff.conditioning.types import Conditioning
from audiodiff.data.manifest import read_manifest, write_manifest
from audiodiff.evaluation.copies import COPY_THRESHOLD, CopyScorer
from audiodiff.evaluation.memorization import nearest_neighbours
from audiodiff.guard import NearCopyGuard, index_manifest
from audiodiff.models.build import build_model
from audiodiff.models.export_format import TEXT_ENCODER_PREFIX, read_export, write_export
from audiodiff.pipeline import AudioDiffusionPipeline

ROOT = Path(__file__).resolve().parents[2]
NORMAL = "/work/main/runs/sfx_quick/x_shift3_s0/export"
MANIFEST = ROOT / "data" / "sfx" / "manifest.jsonl"
CLIPS = 8
SEEDS_PER_CAPTION = 4
OTHER_PROMPTS = 64
NORMAL_PROMPTS = 240
BATCH = 8


def pick_clips(rows: list, count: int) -> list:
    """`count` training rows of different kinds, the longest of each kind (most content to memorise)."""
    by_kind: dict[str, object] = {}
    for row in sorted(rows, key=lambda r: -(r.duration or 0.0)):
        by_kind.setdefault(str(row.attributes.get("kind")), row)
    return list(by_kind.values())[:count]


def subset(cond: Conditioning, index: list[int]) -> Conditioning:
    return Conditioning(cond.tokens[index], cond.mask[index], None if cond.pooled is None else cond.pooled[index])


def train_memorising(normal: Path, out: Path, minutes: float) -> Path:
    """Train and export the memorising model into `out/memorise/export` with its index; returns that folder."""
    export = out / "memorise" / "export"
    if (export / "near_copy_index.json").is_file():
        return export
    torch.manual_seed(0)
    rows = pick_clips(read_manifest(MANIFEST, split="train"), CLIPS)
    manifest = write_manifest(out / "memorise" / "manifest.jsonl", [
        {"audio": str(r.audio), "caption": list(r.captions), "split": "train", "license": r.license or "CC0-1.0",
         "attributes": r.attributes} for r in rows])
    cfg, state = read_export(normal)
    model = build_model(cfg)
    model.representation.load_state_dict({k[len("representation."):]: v for k, v in state.items()
                                          if k.startswith("representation.")})
    model.train()
    samples = int(model.duration * model.sample_rate)
    wavs = []
    for row in rows:
        wav, _ = load_audio(row.audio, sample_rate=model.sample_rate, channels=1)
        wavs.append(torch.nn.functional.pad(wav, (0, samples - wav.shape[-1]))[..., :samples])
    with torch.no_grad():
        x0 = model.representation.encode(torch.stack(wavs))  # [8, D, L]
    captions = [c for r in rows for c in r.captions] + [""]
    owner = [i for i, r in enumerate(rows) for _ in r.captions]
    with torch.no_grad():
        cond_all = model.encode_text(captions)
    by_clip = [[j for j, o in enumerate(owner) if o == i] for i in range(len(rows))]
    params = [p for p in model.net.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    start, step = time.time(), 0
    while time.time() - start < minutes * 60:
        pick = [random.choice(by_clip[i]) if random.random() >= 0.1 else len(captions) - 1
                for i in range(len(rows)) for _ in range(2)]
        loss = model.objective.loss(model.net, x0.repeat_interleave(2, 0), subset(cond_all, pick), gen)
        optim.zero_grad()
        loss.backward()
        optim.step()
        step += 1
        if step % 100 == 0:
            print(f"memorising model: step {step}, loss {loss.item():.4f}, {time.time() - start:.0f} s", flush=True)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(TEXT_ENCODER_PREFIX)}
    write_export(export, weights, cfg, {"recipe": "sfx memorising (guard evaluation)", "global_step": step,
                                        "training_data": str(manifest)})
    index_manifest(export, manifest)
    return export


def generate(pipe: AudioDiffusionPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """Unmarked clips [N, C, T] for prompts[i] with seeds[i], BATCH at a time."""
    parts = []
    for i in range(0, len(prompts), BATCH):
        parts.append(pipe(prompts[i: i + BATCH], seed=seeds[i: i + BATCH]).audio)
        print(f"  generated {min(i + BATCH, len(prompts))}/{len(prompts)}", flush=True)
    return torch.cat(parts)


def held_out_captions(count: int, seed: int = 0) -> list[str]:
    captions = sorted({c for r in read_manifest(MANIFEST, split="test") for c in r.captions})
    return random.Random(seed).sample(captions, count)


def main(argv: list[str]) -> None:
    options = dict(a.split("=", 1) for a in argv)
    normal, out = Path(options.get("normal", NORMAL)), Path(options.get("out", ROOT / "runs" / "guard_eval"))
    torch.set_num_threads(1)
    export = train_memorising(normal, out, float(options.get("minutes", 4)))
    scorer = CopyScorer()
    results: dict[str, dict[str, float]] = {}

    # the memorising model: its own index, outputs labelled by aligned log-mel correlation with its 8 clips
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    guard = NearCopyGuard.from_export(export)
    train_rows = read_manifest(out / "memorise" / "manifest.jsonl")
    refs = [scorer.spectrogram(load_audio(r.audio)[0], load_audio(r.audio)[1]) for r in train_rows]
    trained = [c for r in train_rows for c in r.captions]
    groups = {"training captions": ([c for c in trained for _ in range(SEEDS_PER_CAPTION)],
                                    [s for _ in trained for s in range(SEEDS_PER_CAPTION)]),
              "held-out captions": (held_out_captions(OTHER_PROMPTS, 1), list(range(OTHER_PROMPTS)))}
    all_copy, all_flag, all_sim, records = [], [], [], []
    for name, (prompts, seeds) in groups.items():
        print(f"memorising model, {name}: {len(prompts)} clips", flush=True)
        audio = generate(pipe, prompts, seeds)
        verdicts = guard.check(audio, pipe.sample_rate)
        for prompt, seed, wav, verdict in zip(prompts, seeds, audio, verdicts, strict=True):
            spec = scorer.spectrogram(wav, pipe.sample_rate)
            scores = [scorer.score(spec, ref)[0] for ref in refs]
            best = max(range(len(refs)), key=lambda j: scores[j])
            copy = scores[best] >= COPY_THRESHOLD
            all_copy.append(copy)
            all_flag.append(verdict.flagged)
            all_sim.append(verdict.similarity)
            records.append({"group": name, "prompt": prompt, "seed": seed, "copy_score": scores[best],
                            "copy_of": str(train_rows[best].audio), "copy": copy, "guard": verdict.as_dict()})
    copies = sum(all_copy)
    caught = sum(c and f for c, f in zip(all_copy, all_flag, strict=True))
    copy_sims = [s for s, c in zip(all_sim, all_copy, strict=True) if c] or [float("nan")]
    results["memorising model (8 clips)"] = {"outputs": len(all_copy), "copies": copies, "caught": caught,
                                             "flagged": sum(all_flag), "threshold": guard.threshold,
                                             "similarity": (min(copy_sims), max(copy_sims))}

    # the normal model: an index of its 5,600 training clips, outputs from held-out captions
    normal_index = out / "normal_index"
    if not (normal_index / "near_copy_index.json").is_file():
        index_manifest(normal, MANIFEST, out=normal_index)
    pipe = AudioDiffusionPipeline.from_pretrained(normal, watermark=False)
    guard = NearCopyGuard.from_export(normal_index)
    prompts = held_out_captions(NORMAL_PROMPTS, 2)
    print(f"normal model: {len(prompts)} clips", flush=True)
    audio = generate(pipe, prompts, list(range(len(prompts))))
    verdicts = guard.check(audio, pipe.sample_rate)
    flagged = [v.flagged for v in verdicts]
    # copies by the independent definition, searched among each output's 5 nearest training clips (not all 5,600)
    _, nearest = nearest_neighbours(guard.embedder.embed(audio, pipe.sample_rate).double().numpy(),
                                    guard.index.embeddings.double().numpy(), k=5)
    copies, caught = 0, 0
    for prompt, wav, verdict, rows in zip(prompts, audio, verdicts, nearest, strict=True):
        spec = scorer.spectrogram(wav, pipe.sample_rate)
        score = max(scorer.score(spec, scorer.spectrogram(*load_audio(guard.index.clips[int(j)]["audio"])))[0]
                    for j in rows)
        copies += score >= COPY_THRESHOLD
        caught += score >= COPY_THRESHOLD and verdict.flagged
        records.append({"group": "normal", "prompt": prompt, "copy_score_nearest5": score, "guard": verdict.as_dict()})
    sims = [v.similarity for v in verdicts]
    results["normal sfx_quick model (5,600 clips)"] = {"outputs": len(flagged), "copies": copies, "caught": caught,
                                                       "flagged": sum(flagged), "threshold": guard.threshold,
                                                       "similarity": (min(sims), max(sims))}
    (out / "near_copy_records.json").write_text(json.dumps({"results": results, "records": records}, indent=1))
    print("\n| model (index) | outputs | copies (aligned log-mel r >= 0.9) | copies caught | outputs flagged "
          "| guard threshold | guard similarity (copies / all) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        low, high = r["similarity"]
        print(f"| {name} | {r['outputs']} | {r['copies']} | {r['caught']}/{r['copies']} "
              f"({100 * r['caught'] / max(r['copies'], 1):.1f}%) | {r['flagged']}/{r['outputs']} "
              f"({100 * r['flagged'] / r['outputs']:.1f}%) | {r['threshold']:.5f} | {low:.4f}–{high:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
