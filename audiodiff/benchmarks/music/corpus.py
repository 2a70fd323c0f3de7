"""The built-in music corpus: short multi-instrument General MIDI pieces rendered with FluidSynth.

Each clip (4-10 s, 16 kHz mono PCM_16) has drums, bass, chords and a melody in one of seven styles, and
known ground truth: ``style``, ``tempo`` (BPM), ``key`` (tonic), ``mode``, ``lead`` (melody instrument),
``chords`` (chord instrument), ``bass`` and ``instruments`` (GM program names of lead, chords and bass).
Captions are filled from paraphrase templates; validation and test clips use templates that training
clips never see (:data:`CAPTION_TEMPLATES_EVAL`).

Build it with ``python -m audiodiff.prepare corpus=music`` or :func:`build`. The result is a pure
function of the seed and the clip count (not of the number of workers): every clip draws from its own
``numpy`` Generator seeded with ``(seed, index, stream)``.

Layout under ``out_dir``: ``audio/NNNNNN.wav``, ``midi/NNNNNN.mid`` (the score each clip was rendered
from), ``manifest.jsonl`` (one row per clip, written last) and ``corpus.json`` (vocabulary, counts and
the caption-template split).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch

from audiodiff.audio.loudness import integrated_loudness
from audiodiff.benchmarks.music.midi import GM_PROGRAM_NAMES, PITCH_CLASSES, STYLES, Arrangement, arrange, to_midi
from audiodiff.benchmarks.music.soundfont import (
    find_fluidsynth,
    find_soundfont,
    render_midi,
    soundfont_license,
)
from audiodiff.utils.files import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_NUM_CLIPS = 2400  # 2,000 train / 200 validation / 200 test
EVAL_FRACTION = 1 / 12  # of clips for validation, and again for test
DURATION_RANGE = (4.0, 10.0)  # seconds
CAPTIONS_PER_CLIP = 3
TARGET_LOUDNESS = -20.0  # LUFS (ITU-R BS.1770)
PEAK_LIMIT = 0.95
FADE_OUT = 0.03  # seconds, so that a clip cut mid-note does not end with a click
# FluidSynth idles ~0.1-0.2 s per render (its player polls in 100 ms sleeps), so each worker process keeps
# this many renders in flight.
RENDERS_PER_WORKER = 3
CHUNK = 12  # clips per task handed to a worker process

Split = Literal["train", "val", "test"]

STYLE_NAMES: tuple[str, ...] = tuple(STYLES)
TEMPO_RANGES: dict[str, tuple[int, int]] = {name: spec.tempo_range for name, spec in STYLES.items()}
METERS: dict[str, str] = {name: f"{spec.beats_per_bar}/4" for name, spec in STYLES.items()}

# Melody and chord timbres: caption name -> GM program (0-based).
INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "vibraphone": 11,
    "organ": 16,
    "acoustic guitar": 24,
    "electric guitar": 29,
    "strings": 48,
    "brass": 61,
    "saxophone": 65,
    "flute": 73,
    "synth lead": 81,
}
# The bass belongs to the style.
BASS_NAMES: dict[str, str] = {
    "rock": "electric bass",
    "waltz": "upright bass",
    "bossa nova": "fretless bass",
    "march": "tuba",
    "ballad": "electric bass",
    "techno": "synth bass",
    "swing": "upright bass",
}
STYLE_NOUNS: dict[str, str] = {
    "rock": "rock song",
    "waltz": "waltz",
    "bossa nova": "bossa nova",
    "march": "march",
    "ballad": "ballad",
    "techno": "techno track",
    "swing": "swing tune",
}
TEMPO_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slow", "slow", "leisurely"),
    "moderate": ("moderate", "moderate", "mid-tempo"),
    "fast": ("fast", "fast", "upbeat"),
}

ATTRIBUTE_VALUES: dict[str, list[Any]] = {
    "style": list(STYLE_NAMES),
    "tempo": list(range(min(map(min, TEMPO_RANGES.values())), max(map(max, TEMPO_RANGES.values())) + 1)),
    "key": list(PITCH_CLASSES),
    "mode": ["major", "minor"],
    "lead": list(INSTRUMENTS),
    "chords": list(INSTRUMENTS),
    "bass": sorted(set(BASS_NAMES.values())),
}

# Placeholders: {style} adjective, {style_noun}, {a_style_noun} with its article, {key} e.g. "E minor",
# {bpm}, {tempo} a tempo word, {a_tempo} with its article, {lead}, {chords}, {bass}.
CAPTION_TEMPLATES_TRAIN: tuple[str, ...] = (
    "{a_tempo} {style_noun} in {key} at {bpm} BPM with {lead} and {chords}",
    "{a_style_noun} in {key}, {tempo}, with the melody on {lead} over {chords} chords",
    "{lead} lead over {chords}, {style} style, {key}, {bpm} BPM",
    "{tempo} {style} music in {key} featuring {lead} with {chords} accompaniment",
    "instrumental {style_noun} at {bpm} BPM in {key}, {lead} on the melody and {chords} on the chords",
    "{key} {style_noun}, {tempo}, {lead} and {chords}",
    "{style} groove in {key} at {bpm} BPM with {lead} in front and {chords} backing",
    "{lead} melody, {chords} harmony, {style}, {key}, {tempo}",
    "{style_noun} played on {lead} and {chords} in {key}, {tempo} at {bpm} BPM",
    "{a_style_noun} in the key of {key} at {a_tempo} pace, {lead} carrying the tune over {chords}",
    "{tempo} {key} {style} with {lead} and {chords}",
    "{style} in {key} at {bpm} beats per minute, {lead} over {chords}",
    "music in {key}: {tempo} {style}, {lead} solo, {chords} accompaniment",
    "{lead} and {chords} play {a_style_noun} in {key} at {a_tempo} pace",
    "{a_tempo} {style} tune in {key} led by {lead}, with {chords} and {bass}",
    "{style_noun} ({key}, {bpm} BPM) with {lead} lead and {chords}",
    "{key} {style} at {bpm} BPM featuring {lead}, {chords}, {bass} and drums",
    "{tempo} {style} piece in {key}, the melody on {lead} and the chords on {chords}",
)
CAPTION_TEMPLATES_EVAL: tuple[str, ...] = (
    "{lead} over {chords} in {a_tempo} {style} feel, {key}, about {bpm} BPM",
    "{a_tempo} {style_noun} in {key} with {lead} on top and {chords} behind it",
    "{style}, {key}, {bpm} BPM, {lead} and {chords}",
    "{chords} backing under the {lead} melody: {style_noun}, {tempo}, {key}",
    "{key} {style_noun} at {bpm} BPM, {lead} lead, {chords} chords",
    "{tempo} {style} in {key} played by {lead} and {chords}",
    "{a_style_noun} in {key}, tempo {bpm}, melody on {lead}, harmony on {chords}",
)


def tempo_word(bpm: float) -> Literal["slow", "moderate", "fast"]:
    """The tempo class captions use: slow below 90 BPM, fast above 125 BPM, moderate between."""
    if bpm < 90:
        return "slow"
    if bpm > 125:
        return "fast"
    return "moderate"


def sample_attributes(rng: np.random.Generator, style: str | None = None) -> dict[str, Any]:
    """Draw one clip's ground truth.

    Args:
        rng: the clip's Generator.
        style: fix the style (the corpus cycles through styles to balance them); drawn uniformly if None.

    Returns:
        ``style``, ``tempo`` (int BPM within the style's range), ``key`` (tonic name), ``mode``,
        ``meter``, ``lead``, ``chords`` (two different timbres), ``bass`` and ``instruments`` (GM program
        names of lead, chords and bass).
    """
    if style is None:
        style = str(rng.choice(STYLE_NAMES))
    elif style not in STYLES:
        raise ValueError(f"style: expected one of {list(STYLE_NAMES)}, got {style!r}")
    lo, hi = TEMPO_RANGES[style]
    names = list(INSTRUMENTS)
    lead_index, chord_index = rng.choice(len(names), size=2, replace=False)
    lead, chords = names[int(lead_index)], names[int(chord_index)]
    return {
        "style": style,
        "tempo": int(rng.integers(lo, hi + 1)),
        "key": PITCH_CLASSES[int(rng.integers(12))],
        "mode": "major" if rng.random() < 0.5 else "minor",
        "meter": METERS[style],
        "lead": lead,
        "chords": chords,
        "bass": BASS_NAMES[style],
        "instruments": [
            GM_PROGRAM_NAMES[INSTRUMENTS[lead]],
            GM_PROGRAM_NAMES[INSTRUMENTS[chords]],
            GM_PROGRAM_NAMES[STYLES[style].bass_program],
        ],
    }


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def render_caption(attributes: dict[str, Any], rng: np.random.Generator, held_out: bool) -> str:
    """One caption for ``attributes`` from a template drawn with ``rng``.

    ``held_out`` draws from :data:`CAPTION_TEMPLATES_EVAL` (validation/test clips) instead of the training
    templates.
    """
    templates = CAPTION_TEMPLATES_EVAL if held_out else CAPTION_TEMPLATES_TRAIN
    template = templates[int(rng.integers(len(templates)))]
    return _fill(template, attributes, rng)


def _fill(template: str, attributes: dict[str, Any], rng: np.random.Generator) -> str:
    missing = {"style", "tempo", "key", "mode", "lead", "chords"} - set(attributes)
    if missing:
        raise KeyError(f"attributes: missing {sorted(missing)}")
    words = TEMPO_WORDS[tempo_word(attributes["tempo"])]
    tempo = words[int(rng.integers(len(words)))]
    style = attributes["style"]
    return template.format(
        style=style,
        style_noun=STYLE_NOUNS[style],
        a_style_noun=_with_article(STYLE_NOUNS[style]),
        key=f"{attributes['key']} {attributes['mode']}",
        bpm=attributes["tempo"],
        tempo=tempo,
        a_tempo=_with_article(tempo),
        lead=attributes["lead"],
        chords=attributes["chords"],
        bass=attributes.get("bass", BASS_NAMES[style]),
    )


def captions_for(attributes: dict[str, Any], rng: np.random.Generator, held_out: bool,
                 count: int = CAPTIONS_PER_CLIP) -> list[str]:
    """``count`` captions from distinct templates of the chosen set."""
    templates = CAPTION_TEMPLATES_EVAL if held_out else CAPTION_TEMPLATES_TRAIN
    chosen = rng.choice(len(templates), size=min(count, len(templates)), replace=False)
    return [_fill(templates[int(i)], attributes, rng) for i in chosen]


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render clip ``index``; a pure function of ``(seed, index, split)``."""

    index: int
    attributes: dict[str, Any]
    duration: float  # seconds, a multiple of 1 ms
    split: Split
    captions: list[str]
    arrangement_seed: tuple[int, int, int]


def _clip_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def assign_splits(styles: list[str], seed: int) -> list[Split]:
    """Stratified split: clips are ordered by (style, a seeded shuffle) and every 12th goes to validation,
    the next to test, so each style is split in the same proportions (1/12 val, 1/12 test)."""
    order = np.random.default_rng([seed, 1 << 20]).permutation(len(styles))
    ranked = sorted(range(len(styles)), key=lambda i: (styles[i], int(order[i])))
    period = round(1 / EVAL_FRACTION)
    splits: list[Split] = ["train"] * len(styles)
    for position, index in enumerate(ranked):
        phase = position % period
        if phase == period // 2:
            splits[index] = "val"
        elif phase == period // 2 + 1:
            splits[index] = "test"
    return splits


def plan_clips(seed: int, num_clips: int) -> list[ClipPlan]:
    """Attributes, durations, splits and captions of the first ``num_clips`` clips of corpus ``seed``."""
    if num_clips < 1:
        raise ValueError(f"num_clips: expected a positive count, got {num_clips}")
    drawn = []
    for index in range(num_clips):
        rng = _clip_rng(seed, index, 0)
        attributes = sample_attributes(rng, style=STYLE_NAMES[index % len(STYLE_NAMES)])
        duration = round(float(rng.uniform(*DURATION_RANGE)), 3)
        drawn.append((attributes, duration))
    splits = assign_splits([a["style"] for a, _ in drawn], seed)
    plans = []
    for index, ((attributes, duration), split) in enumerate(zip(drawn, splits, strict=True)):
        captions = captions_for(attributes, _clip_rng(seed, index, 1), held_out=split != "train")
        plans.append(ClipPlan(index, attributes, duration, split, captions, (seed, index, 2)))
    return plans


def arrangement_for(plan: ClipPlan) -> Arrangement:
    """The clip's :class:`~audiodiff.benchmarks.music.midi.Arrangement` (deterministic)."""
    a = plan.attributes
    return arrange(
        style=a["style"],
        tempo=a["tempo"],
        tonic=PITCH_CLASSES.index(a["key"]),
        mode=a["mode"],
        lead_program=INSTRUMENTS[a["lead"]],
        chord_program=INSTRUMENTS[a["chords"]],
        duration=plan.duration,
        rng=np.random.default_rng(list(plan.arrangement_seed)),
    )


def finish_audio(wav: np.ndarray, duration: float, sample_rate: int) -> np.ndarray:
    """Crop/pad ``wav`` [T] to ``duration`` s, fade out the last :data:`FADE_OUT` s, normalise loudness to
    :data:`TARGET_LOUDNESS` LUFS and keep the peak under :data:`PEAK_LIMIT`. Returns [round(duration·sr)]."""
    length = round(duration * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    out[: min(length, wav.shape[0])] = wav[:length]
    fade = min(length, round(FADE_OUT * sample_rate))
    out[length - fade:] *= np.linspace(1.0, 0.0, fade)
    loudness = integrated_loudness(torch.from_numpy(out), sample_rate)  # BS.1770 400 ms blocks (clips are 4-10 s)
    if np.isfinite(loudness):
        out *= 10.0 ** ((TARGET_LOUDNESS - loudness) / 20.0)
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    return out.astype(np.float32)


@dataclass(frozen=True)
class _RenderJob:
    plan: ClipPlan
    out_dir: str
    soundfont: str
    fluidsynth: str
    sample_rate: int
    license: str
    source: str


def _render(job: _RenderJob) -> dict[str, Any]:
    plan, out_dir = job.plan, Path(job.out_dir)
    name = f"{plan.index:06d}"
    midi = to_midi(arrangement_for(plan))
    midi.save(out_dir / "midi" / f"{name}.mid")
    wav = render_midi(midi, soundfont=Path(job.soundfont), sample_rate=job.sample_rate,
                      fluidsynth=Path(job.fluidsynth))
    wav = finish_audio(wav, plan.duration, job.sample_rate)
    audio_path = out_dir / "audio" / f"{name}.wav"
    with atomic_path(audio_path) as partial:
        sf.write(partial, wav, job.sample_rate, subtype="PCM_16", format="WAV")
    return {
        "audio": f"audio/{name}.wav",
        "caption": plan.captions,
        "duration": plan.duration,
        "sample_rate": job.sample_rate,
        "split": plan.split,
        "license": job.license,
        "source": job.source,
        "midi": f"midi/{name}.mid",
        "attributes": plan.attributes,
    }


def _render_chunk(jobs: list[_RenderJob]) -> list[dict[str, Any]]:
    """Render ``jobs`` with :data:`RENDERS_PER_WORKER` FluidSynth processes in flight; rows in job order."""
    with ThreadPoolExecutor(max_workers=RENDERS_PER_WORKER) as threads:
        return list(threads.map(_render, jobs))


def corpus_summary(plans: list[ClipPlan], *, seed: int, sample_rate: int, soundfont: Path,
                   license: str) -> dict[str, Any]:
    """The content of ``corpus.json``: vocabulary, per-split counts and the caption-template split."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("train", "val", "test"):
        rows = [p.attributes for p in plans if p.split == split]
        counts[split] = {"clips": {"total": len(rows)}}
        for attribute in ("style", "key", "mode", "lead", "chords", "bass"):
            counts[split][attribute] = dict(sorted(Counter(r[attribute] for r in rows).items()))
        counts[split]["tempo_word"] = dict(sorted(Counter(tempo_word(r["tempo"]) for r in rows).items()))
    return {
        "name": "music",
        "seed": seed,
        "num_clips": len(plans),
        "sample_rate": sample_rate,
        "duration_range": list(DURATION_RANGE),
        "total_seconds": round(sum(p.duration for p in plans), 3),
        "soundfont": soundfont.name,
        "license": license,
        "attribute_values": ATTRIBUTE_VALUES,
        "tempo_ranges": {k: list(v) for k, v in TEMPO_RANGES.items()},
        "meters": METERS,
        "counts": counts,
        "caption_templates": {"train": list(CAPTION_TEMPLATES_TRAIN), "eval": list(CAPTION_TEMPLATES_EVAL)},
    }


def build(
    out_dir: Path,
    *,
    seed: int = 0,
    num_clips: int | None = None,
    workers: int = 2,
    soundfont: str | Path | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Render the corpus into ``out_dir`` and return the path of its ``manifest.jsonl``.

    Args:
        out_dir: corpus folder (created).
        seed: corpus seed; the same seed and ``num_clips`` give identical files.
        num_clips: number of clips; :data:`DEFAULT_NUM_CLIPS` when None.
        workers: worker processes (1 renders from this process), each with :data:`RENDERS_PER_WORKER`
            renders in flight.
        soundfont: a General MIDI ``.sf2``; TimGM6mb from its Debian location when None.
        sample_rate: Hz.

    Raises:
        SynthesisError: FluidSynth or the SoundFont is missing, or a render failed.
    """
    out_dir = Path(out_dir)
    fluidsynth = find_fluidsynth()
    font = find_soundfont(soundfont)
    num_clips = DEFAULT_NUM_CLIPS if num_clips is None else int(num_clips)
    plans = plan_clips(seed, num_clips)
    license = f"CC0-1.0 (composition and MIDI); audio rendered with {font.name} ({soundfont_license(font)})"
    source = f"audiodiff built-in music corpus: General MIDI rendered by FluidSynth with {font.name}"
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "midi").mkdir(parents=True, exist_ok=True)
    jobs = [_RenderJob(plan, str(out_dir), str(font), str(fluidsynth), sample_rate, license, source)
            for plan in plans]
    log.info("rendering %d music clips into %s with %d worker(s)", num_clips, out_dir, workers)
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    if workers <= 1:
        rows = [row for chunk in chunks for row in _render_chunk(chunk)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [row for done in pool.map(_render_chunk, chunks) for row in done]
    summary = corpus_summary(plans, seed=seed, sample_rate=sample_rate, soundfont=font, license=license)
    write_json(out_dir / "corpus.json", summary, indent=2, ensure_ascii=True)
    manifest = out_dir / "manifest.jsonl"
    write_text(manifest, "".join(json.dumps(row) + "\n" for row in rows))
    return manifest
