"""Watermark robustness and false positives: prints a markdown table (results in bench/README.md).

    python bench/watermark.py --model runs/sfx_quick/cached/export --clips 100 --unmarked 3000 [--part marked|unmarked]

Marked clips: the model's held-out prompts generated unmarked (watermark off), then marked exactly as the pipeline
marks them, and checked after each edit: MP3 and Opus at about 64 kbit/s (soundfile; the measured bitrate is
printed), resampling to half the model's rate and back, +-6 dB, white noise at 20 dB SNR; reported without a goal:
a 1 s excerpt, a 10% speed change and mixing with another clip at -6 dB. Unmarked clips: corpus clips and the
generated clips before marking; the false-positive rate is the share the detector calls marked at p < 1% and
p < 0.1%.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiodiff.audio.io import load_audio
from audiodiff.audio.transforms import resample
from audiodiff.benchmarks import ensure_corpus
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.adherence import held_out_prompts
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.watermark import watermarker
from audiodiff.watermark.perceptual import frame_rms_dbfs, segmental_snr

CODECS = {"mp3": ("MP3", "MPEG_LAYER_III", 0.6), "opus": ("OGG", "OPUS", None)}


def codec(wav: torch.Tensor, rate: int, name: str, level: float | None) -> tuple[torch.Tensor, float]:
    """wav [1, T] encoded and decoded; returns it and the bitrate in kbit/s."""
    fmt, subtype, _ = CODECS[name]
    buffer = io.BytesIO()
    mode = "CONSTANT" if name == "mp3" else None  # libsndfile sets no constant bitrate for Opus
    sf.write(buffer, wav[0].clamp(-1, 1).numpy(), rate, format=fmt, subtype=subtype, compression_level=level,
             bitrate_mode=mode)
    kbps = len(buffer.getvalue()) * 8 / (wav.shape[-1] / rate) / 1000
    buffer.seek(0)
    data, got = sf.read(buffer, dtype="float64")
    out = torch.from_numpy(data).unsqueeze(0)
    return (resample(out, got, rate) if got != rate else out), kbps


def opus_level(clips: list[torch.Tensor], rate: int, target: float = 64.0) -> float:
    """The Opus compression level whose mean bitrate over `clips` ([1, T] each) is nearest `target` kbit/s."""
    levels = np.round(np.arange(0.6, 0.95, 0.02), 2)
    rates = [np.mean([codec(clip, rate, "opus", float(level))[1] for clip in clips]) for level in levels]
    return float(levels[int(np.argmin([abs(r - target) for r in rates]))])


def edits(wav: torch.Tensor, rate: int, other: torch.Tensor, g: torch.Generator,
          opus: float) -> dict[str, tuple[torch.Tensor, float | None]]:
    """Each edit of wav [1, T] at `rate` Hz: name → (edited audio, bitrate or None)."""
    noise = torch.randn(wav.shape, generator=g, dtype=torch.float64)
    noise *= wav.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() * 10 ** (-20 / 20)
    mp3, mp3_kbps = codec(wav, rate, "mp3", CODECS["mp3"][2])
    ogg, ogg_kbps = codec(wav, rate, "opus", opus)
    start = (wav.shape[-1] - rate) // 2
    return {"none": (wav, None), "mp3 64k": (mp3, mp3_kbps), "opus 64k": (ogg, ogg_kbps),
            "half rate and back": (resample(resample(wav, rate, rate // 2), rate // 2, rate), None),
            "+6 dB": (wav * 2.0, None), "-6 dB": (wav * 0.5, None), "noise 20 dB SNR": (wav + noise, None),
            "1 s excerpt (no goal)": (wav[:, start: start + rate], None),
            "speed +10% (no goal)": (resample(wav, round(rate * 1.1), rate), None),
            "mixed with a clip at -6 dB (no goal)": (wav + 0.5 * other[:, : wav.shape[-1]], None)}


def marked_part(pipe: AudioDiffusionPipeline, prompts: list[str], out: dict) -> list[torch.Tensor]:
    mark = watermarker()
    bits = pipe.watermark_bits if pipe.watermark is not None else None
    raw = []
    for i in range(0, len(prompts), 8):
        raw += list(pipe(prompts[i: i + 8], seed=list(range(i, i + len(prompts[i: i + 8])))).audio[:, :1].double())
    rate = pipe.sample_rate
    opus = opus_level(raw[:10], rate)
    g = torch.Generator().manual_seed(0)
    hits: dict[str, list[bool]] = {}
    bit_ok: dict[str, list[float]] = {}
    kbps: dict[str, list[float]] = {}
    snrs, embed_s, detect_s, audible = [], 0.0, 0.0, []
    for i, clean in enumerate(raw):
        t = time.perf_counter()
        marked = mark.embed(clean, rate, bits)
        embed_s += time.perf_counter() - t
        snrs.append(segmental_snr(clean, marked, rate)[0])
        audible.append(float((frame_rms_dbfs(clean, rate) >= -60).float().mean()) * clean.shape[-1] / rate)
        for name, (wav, rate_kbps) in edits(marked, rate, raw[(i + 1) % len(raw)], g, opus).items():
            t = time.perf_counter()
            found = mark.detect(wav, rate)
            detect_s += time.perf_counter() - t
            hits.setdefault(name, []).append(found.marked)
            bit_ok.setdefault(name, []).append(np.mean(np.array(found.bits) == np.array(bits))
                                               if found.bits is not None else np.nan)
            if rate_kbps is not None:
                kbps.setdefault(name, []).append(rate_kbps)
    out.update(hits=hits, bit_ok=bit_ok, kbps=kbps, snrs=snrs, audible=audible, opus_level=opus,
               embed_ms=1000 * embed_s / len(raw), detect_ms=1000 * detect_s / (len(raw) * len(hits)),
               seconds=raw[0].shape[-1] / rate)
    return raw


def unmarked_part(pipe: AudioDiffusionPipeline, rows: list, raw: list[torch.Tensor], count: int, out: dict) -> None:
    mark = watermarker()
    pvalues = []
    for wav in raw:
        pvalues.append(mark.detect(wav, pipe.sample_rate).p_value)
    for row in rows[: max(0, count - len(raw))]:
        wav, rate = load_audio(row.audio)
        pvalues.append(mark.detect(wav, rate).p_value)
    out.update(pvalues=pvalues, generated_unmarked=len(raw), corpus_unmarked=len(pvalues) - len(raw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/sfx_quick/cached/export")
    parser.add_argument("--corpus", default="sfx")
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--clips", type=int, default=100, help="generated clips to mark")
    parser.add_argument("--unmarked", type=int, default=3000, help="unmarked clips (generated first, then corpus)")
    parser.add_argument("--part", choices=["both", "marked", "unmarked"], default="both")
    args = parser.parse_args()
    torch.manual_seed(0)
    corpus = ensure_corpus(args.corpus, args.root)
    rows = read_manifest(corpus)
    prompts, _ = held_out_prompts([r for r in rows if r.split == "test"], args.clips, 0, corpus=args.corpus)
    pipe = AudioDiffusionPipeline.from_pretrained(args.model)
    plain = AudioDiffusionPipeline.from_pretrained(args.model, watermark=False)
    plain.watermark, bits_from = None, pipe
    results: dict = {}
    raw: list[torch.Tensor] = []
    if args.part in ("both", "marked"):
        plain.watermark = None
        raw = marked_part(_Unmarked(plain, bits_from), prompts, results)
        print(f"marked: {len(raw)} generated clips of {results['seconds']:.1f} s from {args.model}; segmental SNR "
              f"min {min(results['snrs']):.1f} dB; embed {results['embed_ms']:.0f} ms, detect "
              f"{results['detect_ms']:.0f} ms per clip (CPU, 1 thread); Opus level {results['opus_level']:.2f}")
        audible = np.array(results["audible"])
        print(f"\n| edit | detected (all {len(raw)}) | detected (>= 1 s above -60 dBFS: {int((audible >= 1).sum())}) "
              f"| message bits right | bitrate kbit/s |\n|---|---|---|---|---|")
        for name, hits in results["hits"].items():
            hits_a = np.array(hits)
            rate = results["kbps"].get(name)
            print(f"| {name} | {100 * hits_a.mean():.1f}% | {100 * hits_a[audible >= 1].mean():.1f}% | "
                  f"{100 * np.nanmean(results['bit_ok'][name]) if np.any(hits_a) else float('nan'):.1f}% | "
                  f"{np.mean(rate):.0f} |" if rate else
                  f"| {name} | {100 * hits_a.mean():.1f}% | {100 * hits_a[audible >= 1].mean():.1f}% | "
                  f"{100 * np.nanmean(results['bit_ok'][name]) if np.any(hits_a) else float('nan'):.1f}% | |")
    if args.part in ("both", "unmarked"):
        if not raw:
            count = min(len(prompts), args.unmarked)
            raw = [clip[:1].double() for i in range(0, count, 8)
                   for clip in plain(prompts[i: min(i + 8, count)], seed=list(range(i, min(i + 8, count)))).audio]
        unmarked_part(plain, rows, raw, args.unmarked, results)
        p = np.array(results["pvalues"])
        print(f"\nunmarked: {len(p)} clips ({results['generated_unmarked']} generated, {results['corpus_unmarked']} "
              f"corpus): called marked at p < 1%: {100 * (p < 0.01).mean():.2f}%, at p < 0.1%: "
              f"{100 * (p < 0.001).mean():.3f}% ({int((p < 0.001).sum())} clips)")


class _Unmarked:
    """The unmarked pipeline, carrying the marked pipeline's message bits (the model's id)."""

    def __init__(self, pipe: AudioDiffusionPipeline, marked: AudioDiffusionPipeline) -> None:
        self.pipe, self.watermark_bits, self.watermark = pipe, marked.watermark_bits, marked.watermark
        self.sample_rate = pipe.sample_rate

    def __call__(self, *args, **kwargs):
        return self.pipe(*args, **kwargs)


if __name__ == "__main__":
    main()
