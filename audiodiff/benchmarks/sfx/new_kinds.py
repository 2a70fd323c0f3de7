"""Two kinds of sound the `sfx` corpus does not hold, for measuring what fine-tuning teaches a model.

============ =============================================================== ======================================
kind         sound                                                           attributes besides `kind`, `loudness`
============ =============================================================== ======================================
trill        a tone alternating with one 3–5 semitones above, 7–11 notes/s    pitch (the lower note), envelope
drips        water drops: ~60 ms sine blips gliding up 1–1.6 octaves          count
============ =============================================================== ======================================

They are synthesised like the corpus (same registers, loudness levels, event spacing, clip lengths, 16 kHz; see
:mod:`audiodiff.benchmarks.sfx.corpus`) and captioned from the corpus's templates with nouns of their own, so a
caption of a new kind reads like any other (`"a loud high-pitched steady trill"`, `"two quiet water drips"`).
`build(out_dir, seed, train_per_kind, val_per_kind, test_per_kind)` writes `audio/`, `manifest.jsonl` (rows with
`split` and `attributes`, training captions from the training templates, held-out ones from the held-out templates)
and `README.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from audiodiff.benchmarks.sfx.captions import caption_for
from audiodiff.benchmarks.sfx.corpus import (
    ATTRIBUTE_VALUES,
    LICENSE,
    SAMPLE_RATE,
    TONE_HZ,
    _decay,
    _frame_held,
    _held_duration,
    _loguniform,
    _place_events,
    _ramps,
    _sustain_envelope,
    distinct_captions,
    finish,
)
from audiodiff.data.manifest import write_manifest
from audiodiff.utils.files import atomic_folder

VERSION = 1
NEW_KINDS: tuple[str, ...] = ("trill", "drips")
NEW_KIND_ATTRIBUTES: dict[str, tuple[str, ...]] = {"trill": ("pitch", "envelope"), "drips": ("count",)}
TRILL_RATE = (7.0, 11.0)  # notes per second
TRILL_INTERVAL_SEMITONES = (3.0, 5.0)  # the upper note above the lower (at least 3: resolvable at 160 Hz)
DRIP_START_HZ = (500.0, 900.0)
DRIP_GLIDE_OCTAVES = (1.0, 1.6)
NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "trill": (("trill", ""), ("warbling tone", ""), ("two-note trill", "")),
    "drips": (("water drip", "water drips"), ("drip", "drips"), ("drop of water", "drops of water")),
}
VERBS: dict[str, tuple[str, ...]] = {
    "trill": ("trills", "warbles", "sounds"),
    "drips": ("falls", "drips", "is heard"),
}


def attributes_of(kind: str) -> tuple[str, ...]:
    """Every attribute name a clip of new kind `kind` carries, in `ATTRIBUTE_VALUES` order."""
    if kind not in NEW_KIND_ATTRIBUTES:
        raise ValueError(f"unknown new kind {kind!r}; expected one of {list(NEW_KINDS)}")
    names = {"kind", "loudness", *NEW_KIND_ATTRIBUTES[kind]}
    return tuple(name for name in ATTRIBUTE_VALUES if name in names)


def sample_attributes(rng: np.random.Generator, kind: str) -> dict[str, str | int]:
    """Attributes of one clip of `kind`: every value uniform over the corpus's values."""
    out: dict[str, str | int] = {}
    for name in attributes_of(kind):
        values = ATTRIBUTE_VALUES[name]
        out[name] = kind if name == "kind" else values[int(rng.integers(len(values)))]
    return out


def _trill(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Lower note at a register's fundamental, the upper 3–5 semitones above; 5 ms glides between notes."""
    lead, dur, tail = _held_duration(rng)
    n = int(dur * sr)
    low = _loguniform(rng, *TONE_HZ[attrs["pitch"]])
    high = low * 2.0 ** (rng.uniform(*TRILL_INTERVAL_SEMITONES) / 12.0)
    rate = rng.uniform(*TRILL_RATE)
    upper = (np.floor(np.arange(n) / sr * rate) % 2).astype(np.float64)
    glide = np.convolve(upper, np.ones(int(0.005 * sr)) / int(0.005 * sr), mode="same")
    track = low * (high / low) ** glide
    phase = 2.0 * np.pi * np.cumsum(track) / sr + rng.uniform(0, 2 * np.pi)
    sound = np.sin(phase) + 0.12 * np.sin(2.0 * phase)
    return _frame_held(sound * _sustain_envelope(n, sr, attrs["envelope"]), lead, tail, sr)


def _drip(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.09 * sr)
    t = np.arange(n) / sr
    start, octaves = rng.uniform(*DRIP_START_HZ), rng.uniform(*DRIP_GLIDE_OCTAVES)
    track = start * 2.0 ** (octaves * (1.0 - np.exp(-t / 0.012)))
    return np.sin(2.0 * np.pi * np.cumsum(track) / sr) * _decay(n, sr, rng.uniform(0.014, 0.02)) * \
        _ramps(n, sr, 0.001, 0.01)


def _drips(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    count = int(attrs["count"])
    return _place_events(rng, [_drip(rng, sr) for _ in range(count)], [0.06] * count, sr)


def synthesize(attributes: dict, rng: np.random.Generator) -> np.ndarray:
    """Render one clip of a new kind: `wav [T]` float32 at 16 kHz, 1–4 s, at its loudness (see the corpus)."""
    kind = attributes.get("kind")
    if kind not in NEW_KIND_ATTRIBUTES or set(attributes) != set(attributes_of(kind)):
        raise ValueError(f"expected the attributes {list(attributes_of(kind)) if kind in NEW_KIND_ATTRIBUTES else ''} "
                         f"of a new kind {list(NEW_KINDS)}, got {attributes}")
    wav = _trill(attributes, rng, SAMPLE_RATE) if kind == "trill" else _drips(attributes, rng, SAMPLE_RATE)
    return finish(wav, attributes, rng)


def render_caption(attributes: dict, rng: np.random.Generator, held_out: bool) -> str:
    """One caption naming every attribute, from the corpus's held-out templates if `held_out`, else its training
    templates."""
    return caption_for(attributes, rng, held_out, NOUNS, VERBS)


def clip_rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    """The generator of clip `index` of `kind` in `split` (independent of every other clip)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, NEW_KINDS.index(kind),
                                                                         ("train", "val", "test").index(split), index)))


def make_clip(seed: int, kind: str, split: str, index: int) -> tuple[dict, np.ndarray]:
    """Manifest row (without the audio path) and waveform `[T]` float32 of one clip."""
    rng = clip_rng(seed, kind, split, index)
    attributes = sample_attributes(rng, kind)
    wav = synthesize(attributes, rng)
    captions = distinct_captions(render_caption, attributes, rng, held_out=split != "train")
    return {"caption": captions, "duration": round(wav.size / SAMPLE_RATE, 4), "sample_rate": SAMPLE_RATE,
            "split": split, "license": LICENSE, "source": f"audiodiff sfx new kinds v{VERSION}, seed {seed}",
            "attributes": attributes}, wav


def build(out_dir: str | Path, *, seed: int = 0, train_per_kind: int = 60, val_per_kind: int = 10,
          test_per_kind: int = 100) -> Path:
    """Synthesise the new-kinds set into `out_dir` (atomically, replacing an earlier build); returns its manifest."""
    counts = {"train": train_per_kind, "val": val_per_kind, "test": test_per_kind}
    rows = []
    with atomic_folder(out_dir) as work:
        (work / "audio").mkdir()
        for kind in NEW_KINDS:
            for split, count in counts.items():
                for index in range(count):
                    row, wav = make_clip(seed, kind, split, index)
                    name = f"{kind}_{split}_{index:04d}.wav"
                    sf.write(work / "audio" / name, wav, SAMPLE_RATE, subtype="PCM_16")
                    rows.append({"audio": f"audio/{name}", **row})
        write_manifest(work / "manifest.jsonl", rows)
        summary = {"name": "sfx_new_kinds", "version": VERSION, "seed": seed, "kinds": list(NEW_KINDS),
                   "kind_attributes": {k: list(attributes_of(k)) for k in NEW_KINDS}, "clips_per_split": counts}
        (work / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
        (work / "README.md").write_text(
            f"# sfx new kinds\n\n{', '.join(NEW_KINDS)}: {counts} clips per kind, made by "
            f"`audiodiff.benchmarks.sfx.new_kinds.build(seed={seed})`; see that module for the sounds.\n")
    return Path(out_dir) / "manifest.jsonl"
