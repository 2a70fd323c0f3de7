"""Why fine-tuned models do not learn trills: the trill detector's features on real trills, on their round trips
through the quick-start model's representation, and on what models generate for trill prompts.

    python recipes/sfx/diagnose_trills.py --base runs/sfx_quick/seed0/export [--models RUN/export ...]
        [--data data/sfx_new_kinds] [--n 100]

Conditions, each over the test trills of the new-kinds set (`recipes/sfx/new_kinds_manifest.py`):

- ``clean``: the synthesised clips;
- ``mel+GL``: mel → the base model's decode (its Griffin-Lim vocoder), the quick-start decode path;
- ``patch-mean+GL``: the mel averaged over each group of `patch` frames (one spectrum per denoiser position,
  64 ms at patch 4), then decoded: what a model that resolves only one spectrum per position could give back;
- one row per `--models` export: its clip for the first held-out caption of each test trill (25 flow Heun steps,
  guidance 3, seed = the clip's index, as `eval_new_kinds.py`);
- with `--strengths`, one row per export and strength: the real trill noised to that strength and denoised by the
  model towards its caption (`AudioDiffusionPipeline.variation`): whether the model keeps trills it is shown;
- with `--one-step T`, one row per model (the base included): its single estimate x̂0 of the real trill from flow
  time T (x_T = (1 - T) z + T ε, seed = the clip's position), decoded: what the denoiser makes of a trill it almost
  sees.

For each: how often the clip is read as a trill (`extract_with_new_kinds`), how often the detector's classifier
says trill before the shape check, how often the pitch track has a trill's shape (`is_trill_shaped`), the medians of
the features that check uses (jump rate, tonal share, 10–90% pitch spread in octaves, tonal frames), and the trill
rate by register of the lower note; then whether two notes sound and whether they alternate: the level of the second
note (the strongest bin 2.5–6 semitones from the strongest one in the clip's mean spectrum, dB below it), the
correlation over time of the two notes' levels (a trill alternates: negative; one blended tone: positive) and the
sounding length (frames within 20 dB of the loudest). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiodiff.benchmarks.sfx.attributes import Analysis, analyse
from audiodiff.benchmarks.sfx.new_kinds_attributes import (
    _tonal_track,
    detector_features,
    extract_with_new_kinds,
    is_trill_shaped,
    load_detector,
    peak_jump_rate,
)
from audiodiff.evaluation.one_step import one_step_estimates
from audiodiff.pipeline import AudioDiffusionPipeline

BATCH = 50


def two_notes(a: Analysis) -> tuple[float, float, float]:
    """(second note's level below the first in dB, correlation of the two notes' frame levels, sounding seconds)."""
    spec = a.spec
    sounding = a.active & (spec.frame_db > spec.frame_db.max() - 20.0)
    band = (spec.freqs >= 60.0) & (spec.freqs <= 7800.0)
    mean = np.where(band, spec.power[:, sounding].mean(axis=1), 0.0)
    first = int(mean.argmax())
    semitones = np.abs(12.0 * np.log2(np.maximum(spec.freqs, 1.0) / spec.freqs[first]))
    second = int(np.where((semitones >= 2.5) & (semitones <= 6.0), mean, 0.0).argmax())
    level = 10.0 * np.log10(mean[second] / mean[first] + 1e-12)
    e1, e2 = (10.0 * np.log10(spec.power[b, sounding] + 1e-12) for b in (first, second))
    corr = float(np.corrcoef(e1, e2)[0, 1]) if sounding.sum() > 2 and e1.std() > 0 and e2.std() > 0 else 0.0
    return float(level), corr, float(sounding.sum() * 256 / 16000)


def trill_features(wav: np.ndarray) -> dict[str, float | str | bool]:
    """What the new-kind reader sees in one 16 kHz clip `wav [T]`."""
    a = analyse(wav)
    track, tonal = _tonal_track(a)
    spread = float(np.percentile(track, 90) - np.percentile(track, 10)) if track.size else 0.0
    level, corr, seconds = two_notes(a)
    return {"kind": str(extract_with_new_kinds(wav, 16000)["kind"]),
            "classifier": load_detector().predict(detector_features(a)[None])[0],
            "shaped": is_trill_shaped(a), "jumps": peak_jump_rate(a), "tonal": tonal, "spread": spread,
            "frames": float(track.size), "second_db": level, "corr": corr, "seconds": seconds}


def round_trip(pipe: AudioDiffusionPipeline, wav: np.ndarray, patch: int | None) -> np.ndarray:
    """`wav [T]` through the model's mel and back through its decoder; with `patch`, the mel is first averaged over
    each run of `patch` frames (a trailing partial run over what it has)."""
    rep = pipe.model.representation
    with torch.no_grad():
        z = rep.encode(torch.from_numpy(wav).float()[None, None])  # [1, D, L]
        if patch:
            length = z.shape[-1]
            padded = torch.nn.functional.pad(z, (0, (-length) % patch), mode="replicate")
            groups = padded.unflatten(-1, (-1, patch))
            z = groups.mean(-1, keepdim=True).expand_as(groups).flatten(-2)[..., :length]
        out = rep.decode(z)
    return out.reshape(-1)[:wav.size].numpy()


def generated(model: str, rows: list[dict]) -> list[np.ndarray]:
    """Clips `model` generates for the rows' first captions, as `eval_new_kinds.py` makes them."""
    pipe = AudioDiffusionPipeline.from_pretrained(model)
    clips = []
    for i in range(0, len(rows), BATCH):
        chunk = rows[i:i + BATCH]
        out = pipe([r["caption"][0] for r in chunk], duration=max(r["duration"] for r in chunk), steps=25,
                   guidance=3.0, seed=[r["index"] for r in chunk])
        clips += [clip[0, :int(r["duration"] * pipe.sample_rate)].numpy() for r, clip in zip(chunk, out.audio,
                                                                                             strict=True)]
    return clips


def variations(model: str, rows: list[dict], clean: list[np.ndarray], strength: float) -> list[np.ndarray]:
    """The real trills noised to `strength` and denoised by `model` towards their first captions."""
    pipe = AudioDiffusionPipeline.from_pretrained(model)
    clips = []
    for i in range(0, len(rows), BATCH):
        chunk, wavs = rows[i:i + BATCH], clean[i:i + BATCH]
        length = max(w.size for w in wavs)
        batch = torch.stack([torch.from_numpy(np.pad(w, (0, length - w.size)))[None] for w in wavs]).float()
        out = pipe.variation(batch, [r["caption"][0] for r in chunk], strength=strength, steps=25, guidance=3.0,
                             seed=[r["index"] for r in chunk])
        clips += [clip[0, :w.size].numpy() for w, clip in zip(wavs, out.audio, strict=True)]
    return clips


def notes_row(name: str, features: list[dict]) -> str:
    """One markdown row of the two-note measures (medians)."""
    return (f"| {name} | {np.median([f['second_db'] for f in features]):.1f} | "
            f"{np.median([f['corr'] for f in features]):.2f} | "
            f"{100 * np.mean([f['corr'] < 0 for f in features]):.0f}% | "
            f"{np.median([f['seconds'] for f in features]):.2f} |")


def summary(name: str, features: list[dict], registers: list[str]) -> str:
    """One markdown row."""
    n = len(features)

    def share(key: str, value: object = True) -> str:
        return f"{100 * sum(f[key] == value for f in features) / n:.0f}%"

    def median(key: str) -> str:
        return f"{np.median([f[key] for f in features]):.2f}"

    by_register = " / ".join(
        f"{100 * np.mean([f['kind'] == 'trill' for f, r in zip(features, registers, strict=True) if r == reg]):.0f}%"
        for reg in ("low", "mid", "high"))
    heard = ", ".join(f"{k} {v}" for k, v in Counter(f["kind"] for f in features).most_common(3))
    return (f"| {name} | {share('kind', 'trill')} | {share('classifier', 'trill')} | {share('shaped')} | "
            f"{median('jumps')} | {median('tonal')} | {median('spread')} | {median('frames')} | {by_register} | "
            f"{heard} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the export whose representation and decoder round-trip")
    parser.add_argument("--models", nargs="*", default=[], help="exports whose trill clips are read back")
    parser.add_argument("--data", default="data/sfx_new_kinds")
    parser.add_argument("--n", type=int, default=100, help="test trills to use")
    parser.add_argument("--patch", type=int, default=4, help="frames per denoiser position")
    parser.add_argument("--strengths", type=float, nargs="*", default=[], help="variation strengths to try")
    parser.add_argument("--one-step", type=float, default=None, help="flow time of the one-step estimates")
    args = parser.parse_args()

    data = Path(args.data)
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    rows = [{**r, "index": i} for i, r in enumerate(r for r in rows if r["split"] == "test")]
    rows = [r for r in rows if r["attributes"]["kind"] == "trill"][:args.n]
    registers = [r["attributes"]["pitch"] for r in rows]
    clean = [sf.read(data / r["audio"], dtype="float32")[0] for r in rows]
    base = AudioDiffusionPipeline.from_pretrained(args.base)
    conditions = {"clean": clean,
                  "mel+GL": [round_trip(base, w, None) for w in clean],
                  f"patch-mean+GL (patch {args.patch})": [round_trip(base, w, args.patch) for w in clean]}
    if args.one_step is not None:
        for model in [args.base, *args.models]:
            conditions[f"one step from t={args.one_step}: {model}"] = one_step_estimates(
                AudioDiffusionPipeline.from_pretrained(model), clean, [r["caption"][0] for r in rows], args.one_step)
    for model in args.models:
        conditions[f"generated: {model}"] = generated(model, rows)
        for strength in args.strengths:
            conditions[f"variation {strength}: {model}"] = variations(model, rows, clean, strength)
    print(f"{len(rows)} test trills of {data} (registers {dict(Counter(registers))})\n")
    print("| clips | read as trill | classifier: trill | trill-shaped | jump rate | tonal share | spread (oct) | "
          "tonal frames | trill by register low / mid / high | heard as |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    features = {}
    for name, clips in conditions.items():
        features[name] = [trill_features(w) for w in clips]
        print(summary(name, features[name], registers), flush=True)
    print("\n| clips | second note (dB below the first) | two notes' level correlation | alternating (corr < 0) "
          "| sounding (s) |")
    print("|---|---|---|---|---|")
    for name, values in features.items():
        print(notes_row(name, values))


if __name__ == "__main__":
    main()
