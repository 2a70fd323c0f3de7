"""The built-in `sfx_stereo` corpus: the `sfx` clips panned left, centre or right, the pan named in every caption.

Clip `i` of `sfx_stereo` with seed `s` is clip `i` of `sfx` with seed `s` (same kind, attributes, audio and
captions) placed in a stereo field by a constant-power pan law, plus a `pan` attribute drawn uniformly from
left / centre / right with a generator of its own (so the mono corpus is untouched). Pan positions p in [-1, 1]
(-1 hard left) are drawn from `PAN_POSITIONS`; the gains are `(cos θ, sin θ)` with `θ = (p + 1) π / 4`, so
`gL² + gR² = 1` and the clip's BS.1770 loudness (which sums the two channels' powers) is the mono clip's. Left and
right clips differ by 12.4–22.1 dB between the channels, centred ones by at most 1.4 dB.

Each caption is the mono clip's caption with the pan phrased once ("on the left", "from the right", "in the
middle", ...): appended on training rows, put first on held-out (val / test) rows, so that held-out captions stay
unseen. 16 kHz, 2 channels, PCM_16.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from audiodiff.benchmarks.sfx.corpus import (
    ATTRIBUTE_VALUES as MONO_ATTRIBUTE_VALUES,
)
from audiodiff.benchmarks.sfx.corpus import (
    DEFAULT_NUM_CLIPS,
    LICENSE,
    SAMPLE_RATE,
    corpus_summary,
    make_clip,
    plan,
    render_rows,
)
from audiodiff.data.manifest import write_manifest
from audiodiff.utils.files import atomic_folder

VERSION = 1
CHANNELS = 2
PANS: tuple[str, ...] = ("left", "centre", "right")
ATTRIBUTE_VALUES: dict[str, tuple] = {**MONO_ATTRIBUTE_VALUES, "pan": PANS}
PAN_POSITIONS: dict[str, tuple[float, float]] = {  # p in [-1 (hard left), 1 (hard right)], drawn uniformly
    "left": (-0.9, -0.7),
    "centre": (-0.1, 0.1),
    "right": (0.7, 0.9),
}
PAN_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "from the left", "in the left channel", "panned to the left"),
    "centre": ("in the middle", "in the centre", "from the centre", "panned to the middle"),
    "right": ("on the right", "from the right", "in the right channel", "panned to the right"),
}


def pan_gains(position: float) -> tuple[float, float]:
    """Constant-power gains (left, right) for pan `position` in [-1, 1]: `gL² + gR² = 1`, equal at 0."""
    if not -1.0 <= position <= 1.0:
        raise ValueError(f"pan position must lie in [-1, 1], got {position}")
    theta = (position + 1.0) * np.pi / 4.0
    return float(np.cos(theta)), float(np.sin(theta))


def pan_clip(wav: np.ndarray, position: float) -> np.ndarray:
    """Mono `wav: [T]` → stereo `[2, T]` float32 at pan `position` (constant power)."""
    left, right = pan_gains(position)
    return np.stack([left * wav, right * wav]).astype(np.float32)


def pan_caption(caption: str, pan: str, rng: np.random.Generator, held_out: bool) -> str:
    """`caption` with `pan` phrased once: after it (training) or before it (held out)."""
    if pan not in PAN_WORDS:
        raise ValueError(f"unknown pan {pan!r}; expected one of {list(PANS)}")
    words = PAN_WORDS[pan][int(rng.integers(len(PAN_WORDS[pan])))]
    if held_out:
        return f"{words[0].upper()}{words[1:]}, {caption}"
    return f"{caption}, {words}" if rng.random() < 0.5 else f"{caption} {words}"


def pan_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip `index`'s pan choices (independent of the mono clip's own generator)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))


def make_stereo_clip(seed: int, index: int, kind: str, split: str) -> tuple[dict, np.ndarray]:
    """Manifest row (without the audio path) and waveform `[2, T]` float32 of stereo clip `index`."""
    row, mono = make_clip(seed, index, kind, split)
    rng = pan_rng(seed, index)
    pan = PANS[int(rng.integers(len(PANS)))]
    position = float(rng.uniform(*PAN_POSITIONS[pan]))
    held_out = split != "train"
    captions = [pan_caption(c, pan, rng, held_out) for c in row["caption"]]
    row = {**row, "caption": captions, "source": source_line(seed),
           "attributes": {**row["attributes"], "pan": pan}}
    return row, pan_clip(mono, position)


def source_line(seed: int) -> str:
    return f"audiodiff sfx_stereo synthesiser v{VERSION}, seed {seed}"


def _write_clip(job: tuple[int, int, str, str], audio_dir: str) -> dict:
    seed, index, kind, split = job
    row, wav = make_stereo_clip(seed, index, kind, split)
    name = f"{index:06d}.wav"
    sf.write(Path(audio_dir) / name, wav.T, SAMPLE_RATE, subtype="PCM_16")
    return {"audio": f"audio/{name}", **row}


def _readme(summary: dict) -> str:
    pans = ", ".join(f"{v}: {n}" for v, n in summary["clips_per_value"]["pan"].items())
    words = "\n".join(f"- {pan}: " + ", ".join(f"`{w}`" for w in PAN_WORDS[pan]) for pan in PANS)
    return f"""# sfx_stereo: the sfx sound effects, panned

{summary["num_clips"]} clips of 1–4 s, 16 kHz stereo PCM_16 (`audio/NNNNNN.wav`), licence {LICENSE}, made by
{summary["source"]} (`python -m audiodiff.prepare corpus=sfx_stereo seed={summary["seed"]}`; same seed, same bytes).
Clip i is clip i of `sfx` with the same seed (see its README for kinds, attributes and caption templates), panned
by a constant-power law to the left (p in {PAN_POSITIONS["left"]}), centre ({PAN_POSITIONS["centre"]}) or right
({PAN_POSITIONS["right"]}); the `pan` attribute counts {pans}. Splits: {summary["splits"]}.

Each caption names the pan once, after the sfx caption on training rows and before it on val / test rows:
{words}

Read every attribute back with `audiodiff.benchmarks.sfx.stereo_attributes.extract_sfx_stereo`.
"""


def build(out_dir: Path, *, seed: int = 0, num_clips: int | None = None, workers: int = 2) -> Path:
    """Synthesise the stereo corpus into `out_dir` and return its manifest path (as the sfx corpus's `build`:
    written to a sibling folder and moved into place; the same bytes for any `workers`).

    Raises:
        FileExistsError: `out_dir` exists, is not empty and does not hold a corpus.
        ValueError: `num_clips` or `workers` is below 1.
    """
    out_dir = Path(out_dir)
    num_clips = DEFAULT_NUM_CLIPS if num_clips is None else int(num_clips)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus.json").exists():
        raise FileExistsError(f"{out_dir}: exists and is not an sfx_stereo corpus (no corpus.json); refusing to "
                              f"replace it")
    jobs = [(seed, i, kind, split) for i, (kind, split) in enumerate(plan(seed, num_clips))]
    with atomic_folder(out_dir) as work:
        (work / "audio").mkdir()
        write = functools.partial(_write_clip, audio_dir=str(work / "audio"))
        rows = render_rows(write, jobs, workers)
        summary = corpus_summary([{**r, "attributes": {k: v for k, v in r["attributes"].items() if k != "pan"}}
                                  for r in rows], seed)
        summary.update(name="sfx_stereo", version=VERSION, channels=CHANNELS, source=source_line(seed),
                       attribute_values={k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
                       pan_positions=PAN_POSITIONS, pan_words=PAN_WORDS)
        summary["clips_per_value"]["pan"] = {p: sum(r["attributes"]["pan"] == p for r in rows) for p in PANS}
        (work / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
        (work / "README.md").write_text(_readme(summary))
        write_manifest(work / "manifest.jsonl", rows)
    return out_dir / "manifest.jsonl"
