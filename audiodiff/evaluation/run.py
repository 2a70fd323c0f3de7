"""One evaluation of a trained model on a built-in corpus's held-out prompts.

Generates a clip for each of `n` held-out prompts (the test split, captioned with held-back templates), then
computes every metric the configured embedders allow:

- attribute accuracy (the corpus's extractors read the asked-for attributes back from the audio);
- per embedder: FAD against the split's real clips with a bootstrap interval (optionally FAD∞), near copies of
  training clips with a threshold calibrated on the training set itself, and, for audio–text embedders, the
  prompt-adherence score (cosine of audio and prompt embeddings) beside the same score of the real clips;
- for classifier embedders: inception score and the KL between each generated clip's class distribution and that
  of the real clip the prompt was written for.

Reference and training embeddings are cached by file content and embedder (`EmbeddingCache`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from audiodiff import __version__
from audiodiff.audio.io import load_audio, save_audio
from audiodiff.audio.mel import DEFAULT_MEL, MelSpectrogram, log_compress
from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.attributes import asked_attributes, corpus_metrics
from audiodiff.data.manifest import ManifestRow, read_manifest
from audiodiff.evaluation.classifier_scores import inception_score, paired_kl
from audiodiff.evaluation.embedders.base import channel_handling
from audiodiff.evaluation.embedding_cache import EmbeddingCache
from audiodiff.evaluation.fad import fad_bootstrap, fad_infinity
from audiodiff.evaluation.memorization import calibrate_threshold, find_near_copies
from audiodiff.evaluation.report import spectrogram_grid
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.utils.hashing import file_sha256, set_sha256

GRID_CLIPS = 12  # spectrograms in the report's picture


class Embedder(Protocol):
    """What evaluation needs of an embedder: `id` (name + weights hash), `sample_rate`, and `embed`."""

    id: str
    sample_rate: int

    def embed(self, wavs: list[torch.Tensor], sample_rate: int) -> torch.Tensor: ...  # [C, T] each → [N, E]


@dataclass
class EvalSettings:
    corpus: str = "sfx"
    root: str = "data"
    split: str = "test"
    n: int = 200                  # held-out prompts (one generated clip each)
    seed: int = 0                 # picks the prompts and seeds the generation
    guidance: float | None = None  # None: the model's default
    steps: int | None = None
    sampler: str | None = None
    batch_size: int = 16
    n_reference: int = 1000       # real clips of the split for FAD
    n_train: int = 2000           # training clips for the near-copy search
    n_boot: int = 100
    fad_infinity: bool = False
    near_copy_quantile: float = 0.99
    cache: str = ".cache/embeddings"
    extra: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "clip"


def _pick(rows: list[ManifestRow], n: int, seed: int) -> list[ManifestRow]:
    """The same seeded choice as `audiodiff.evaluation.adherence.held_out_prompts`."""
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]


def _embed_files(embedder: Embedder, cache: EmbeddingCache, paths: list[Path], desc: str) -> np.ndarray:
    bar = tqdm(total=len(paths), desc=desc, unit="clip", leave=False)

    def embed(batch: list[Path]) -> torch.Tensor:
        wavs = [load_audio(p, sample_rate=embedder.sample_rate)[0] for p in batch]
        bar.update(len(batch))
        return embedder.embed(wavs, embedder.sample_rate)

    try:
        return np.stack(cache.embed_files(paths, embedder.id, embed, batch_size=16))
    finally:
        bar.close()


def _embed_tensors(embedder: Embedder, wavs: list[torch.Tensor], sample_rate: int, desc: str) -> np.ndarray:
    out = [embedder.embed(wavs[i: i + 16], sample_rate).detach().cpu().numpy()
           for i in tqdm(range(0, len(wavs), 16), desc=desc, unit="batch", leave=False)]
    return np.concatenate(out)


def evaluate_model(pipe: AudioDiffusionPipeline, settings: EvalSettings, out_dir: str | Path,
                   embedders: dict[str, Embedder]) -> dict[str, Any]:
    """Generate, score and return the report dict (card, summary, per-prompt rows, notes); audio goes to
    `out_dir/audio/`, the spectrograms of the first clips to `out_dir/spectrograms.png`."""
    out_dir = Path(out_dir)
    manifest = ensure_corpus(settings.corpus, settings.root)
    test_rows = read_manifest(manifest, split=settings.split)
    picked = _pick(test_rows, settings.n, settings.seed)
    prompts = [r.captions[0] for r in picked]
    truths = [asked_attributes(settings.corpus, r.captions[0], r.attributes or {}) for r in picked]
    gen_settings = pipe.settings(settings.steps, settings.guidance, settings.sampler)

    wavs: list[torch.Tensor] = []
    files: list[Path] = []
    for lo in tqdm(range(0, len(prompts), settings.batch_size), desc="generating", unit="batch"):
        chunk = prompts[lo: lo + settings.batch_size]
        with torch.inference_mode():
            result = pipe(chunk, steps=gen_settings.steps, guidance=gen_settings.guidance, sampler=gen_settings.name,
                          seed=settings.seed + lo)
        for i, clip in enumerate(result.audio):
            path = save_audio(out_dir / "audio" / f"{lo + i:04d}_{_slug(chunk[i])}.wav", clip, result.sample_rate)
            wavs.append(clip)
            files.append(path)
    rate = pipe.sample_rate
    mel = MelSpectrogram(sample_rate=rate, n_fft=DEFAULT_MEL.n_fft, hop_length=DEFAULT_MEL.hop_length,
                         n_mels=DEFAULT_MEL.n_mels, power=1.0)
    spectrogram_grid([log_compress(mel(w.mean(0))) for w in wavs[:GRID_CLIPS]], out_dir / "spectrograms.png")

    per_prompt: list[dict[str, Any]] = [{"prompt": p, "file": str(f.relative_to(out_dir)), "seed": settings.seed + i}
                                        for i, (p, f) in enumerate(zip(prompts, files, strict=True))]
    summary: dict[str, Any] = {}
    notes: list[str] = []

    extract, score = corpus_metrics(settings.corpus)
    predicted = [extract(w.numpy(), rate, reference=t)  # [C, T]: each extractor reads the channels it needs
                 for w, t in tqdm(list(zip(wavs, truths, strict=True)), desc="attributes", unit="clip", leave=False)]
    attribute_scores = score(predicted, truths)
    for name, s in attribute_scores.items():
        summary[f"attribute/{name}"] = s["accuracy"]
    summary["attribute/mean"] = float(np.mean([s["accuracy"] for s in attribute_scores.values()]))
    for row, pred, truth in zip(per_prompt, predicted, truths, strict=True):
        asked = [k for k in truth if k in pred]
        row["attributes_matched"] = f"{sum(pred[k] == truth[k] for k in asked)}/{len(asked)}"

    reference_rows = test_rows[: settings.n_reference]
    train_rows = read_manifest(manifest, split="train")[: settings.n_train]
    cache = EmbeddingCache(settings.cache)
    embedder_cards: dict[str, Any] = {}
    for name, embedder in embedders.items():
        embedder_cards[name] = {"id": embedder.id, "sample_rate": embedder.sample_rate,
                                "channels": channel_handling(embedder)}
        gen = _embed_tensors(embedder, wavs, rate, f"{name}: generated")
        ref = _embed_files(embedder, cache, [r.audio for r in reference_rows], f"{name}: reference")
        fad = fad_bootstrap(gen, ref, n_boot=settings.n_boot, seed=settings.seed)
        summary[f"{name}/fad"] = {"value": fad["value"], "low": fad["low"], "high": fad["high"]}
        if settings.fad_infinity:
            summary[f"{name}/fad_infinity"] = fad_infinity(gen, ref, seed=settings.seed)["value"]
        train = _embed_files(embedder, cache, [r.audio for r in train_rows], f"{name}: training set")
        threshold = calibrate_threshold(train, settings.near_copy_quantile, max_queries=2000, seed=settings.seed)
        copies = find_near_copies(gen, train, threshold.threshold)
        summary[f"{name}/near_copies"] = len(copies)
        embedder_cards[name]["near_copy_threshold"] = threshold.as_dict()
        for c in copies:
            per_prompt[int(c["generated"])].setdefault("near_copy", []).append(
                {"train_clip": str(train_rows[int(c["train"])].audio), "similarity": float(c["similarity"])})
        if hasattr(embedder, "embed_text"):
            text = embedder.embed_text(prompts).detach().cpu().numpy()
            adherence = _cosine(gen, text)
            real = _cosine(_embed_files(embedder, cache, [r.audio for r in picked], f"{name}: paired real"), text)
            summary[f"{name}/text_score"] = float(adherence.mean())
            summary[f"{name}/text_score_real_clips"] = float(real.mean())
            for row, value in zip(per_prompt, adherence, strict=True):
                row[f"{name}/text_score"] = float(value)
        if hasattr(embedder, "classify"):
            p_gen = embedder.classify(wavs, rate).detach().cpu().numpy()
            p_ref = embedder.classify([load_audio(r.audio, sample_rate=embedder.sample_rate)[0] for r in picked],
                                      embedder.sample_rate).detach().cpu().numpy()
            mode = getattr(embedder, "probability_mode", "sigmoid")
            kl = paired_kl(p_gen, p_ref, mode)
            summary[f"{name}/kl"] = float(kl.mean)
            if mode == "softmax":
                summary[f"{name}/inception_score"] = inception_score(p_gen)[0]
            for row, value in zip(per_prompt, kl.per_pair, strict=True):
                row[f"{name}/kl"] = float(value)
    if not embedders:
        notes.append("No embedder configured: FAD, near copies and text scores were not computed.")

    model_weights = Path(pipe.model_id) / "model.safetensors"
    card = {
        "model": pipe.model_id,
        "model_sha256": file_sha256(model_weights) if model_weights.is_file() else None,
        "audiodiff_version": __version__,
        "corpus": settings.corpus, "split": settings.split, "n_prompts": len(prompts),
        "prompts_sha256": set_sha256(prompts), "seed": settings.seed,
        "sample_rate": rate, "duration": pipe.model.duration,
        "sampler": {**asdict(gen_settings), "guidance_interval": list(gen_settings.guidance_interval)},
        "reference": {"split": settings.split, "n": len(reference_rows),
                      "sha256": set_sha256(file_sha256(r.audio) for r in reference_rows)},
        "training_clips": {"n": len(train_rows)},
        "embedders": embedder_cards,
        "bootstrap": {"n_boot": settings.n_boot, "confidence": 0.95, "resampled": "generated set"},
    }
    return {"card": card, "summary": summary, "per_prompt": per_prompt, "notes": notes,
            "attributes": attribute_scores}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(axis=1)
