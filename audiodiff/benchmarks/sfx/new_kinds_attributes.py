"""Read the attributes of a clip that may be one of the new kinds (:mod:`audiodiff.benchmarks.sfx.new_kinds`).

A detector, a softmax classifier over the sfx extractor's own features (`kind_features`) and the rate of pitch jumps
(:func:`peak_jump_rate`: a trill's notes alternate, no sfx kind's peak jumps by semitones while it sounds) with the
classes
``trill``, ``drips`` and ``other``, fitted by :mod:`audiodiff.benchmarks.sfx.new_kinds_fit` and stored in
`sfx_new_kinds.json`, says first whether the clip is a new kind. When it is not, the clip goes to the corpus's own
extractor (:func:`audiodiff.benchmarks.sfx.attributes.extract_sfx`) unchanged, so scores on the old kinds mean what
they meant before (so does a clip the detector takes for a trill whose pitch track is not a trill's,
:func:`is_trill_shaped`); when it is a new kind, its attributes are read with the corpus's rules:

- trill pitch: the register of the lower note, the 25th percentile of the peak frequency over the sounding frames
  (the upper note lies 3–5 semitones above, which could cross a register boundary);
- trill envelope and drips count: as the corpus reads them (energy drop; events by hysteresis);
- loudness: as the corpus reads it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from audiodiff.benchmarks.classifier import SoftmaxClassifier
from audiodiff.benchmarks.features import SAMPLE_RATE, mono_16k
from audiodiff.benchmarks.sfx.attributes import (
    FEATURE_NAMES,
    LOUDNESS_SPLIT_LUFS,
    TONE_SPLITS_HZ,
    Analysis,
    _envelope,
    _register,
    analyse,
    extract_sfx,
    kind_features,
)
from audiodiff.benchmarks.sfx.new_kinds import NEW_KIND_ATTRIBUTES, NEW_KINDS

DETECTOR_PATH = Path(__file__).with_name("sfx_new_kinds.json")
OTHER = "other"
DETECTOR_CLASSES: tuple[str, ...] = (*NEW_KINDS, OTHER)
DETECTOR_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, "peak_jump_rate")
JUMP_OCTAVES = 1.5 / 12  # a change of the peak over two frames (32 ms) that counts as a jump


TONAL_SHARE = 0.5  # a frame whose 5 strongest bins hold more than this share of its power is tonal
# What a trill is, besides what the detector says (clean, vocoded and speckled trills all pass; held sfx tones have
# no jumps, sirens span more than 0.57 octave, noise bands have few tonal frames):
MIN_TRILL_JUMPS = 0.1  # share of tonal frames with a jump (trills: >= 0.2)
MIN_TRILL_TONAL = 0.85  # share of the sounding frames that are tonal (trills: >= 0.9)
TRILL_SPREAD_OCT = (0.2, 0.55)  # 10th to 90th percentile of the peak's log-frequency (trills: 0.25-0.52)
MIN_TRILL_FRAMES = 24  # tonal frames (0.38 s; trills: >= 32 even vocoded with speckle; a beep or knock: < 15)


def _tonal_track(a: Analysis) -> tuple[np.ndarray, float]:
    """(log2 peak frequency over the tonal sounding frames, the share of sounding frames that are tonal)."""
    power = a.spec.power
    share = np.sort(power, axis=0)[-5:].sum(axis=0) / np.maximum(power.sum(axis=0), 1e-20)
    sounding = a.active & (a.spec.frame_db > a.spec.frame_db.max() - 20.0)
    tonal = sounding & (share > TONAL_SHARE)
    return np.log2(a.peak_hz[tonal]), float(tonal.sum() / max(int(sounding.sum()), 1))


def peak_jump_rate(a: Analysis) -> float:
    """Share of tonal sounding frames (within 20 dB of the loudest, `TONAL_SHARE`) whose spectral peak two such
    frames on lies more than `JUMP_OCTAVES` away: two frames, so that the 64 ms window's smearing of a note change
    still shows; tonal frames only, so that noise, whose peak wanders anywhere, counts no jumps."""
    track, _ = _tonal_track(a)
    return float(np.mean(np.abs(track[2:] - track[:-2]) > JUMP_OCTAVES)) if track.size > 2 else 0.0


def is_trill_shaped(a: Analysis) -> bool:
    """Whether the clip has a trill's pitch track: long enough (`MIN_TRILL_FRAMES`), jumping (`MIN_TRILL_JUMPS`),
    mostly tonal (`MIN_TRILL_TONAL`), between two notes a few semitones apart (`TRILL_SPREAD_OCT`)."""
    track, tonal = _tonal_track(a)
    if track.size < MIN_TRILL_FRAMES:
        return False
    spread = float(np.percentile(track, 90) - np.percentile(track, 10))
    return (peak_jump_rate(a) >= MIN_TRILL_JUMPS and tonal >= MIN_TRILL_TONAL
            and TRILL_SPREAD_OCT[0] <= spread <= TRILL_SPREAD_OCT[1])


def detector_features(a: Analysis) -> np.ndarray:
    """`[len(DETECTOR_FEATURES)]`: `kind_features` and `peak_jump_rate`."""
    return np.append(kind_features(a), peak_jump_rate(a))


@functools.cache
def load_detector(path: Path = DETECTOR_PATH) -> SoftmaxClassifier:
    """The new-kind detector stored at `path` (cached); FileNotFoundError / ValueError saying how to refit it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: new-kind detector missing; fit it with "
                                "`python -m audiodiff.benchmarks.sfx.new_kinds_fit`")
    model = SoftmaxClassifier.load(path)
    if model.features != DETECTOR_FEATURES or model.classes != DETECTOR_CLASSES:
        raise ValueError(f"{path}: fitted for features {list(model.features)} and classes {list(model.classes)}, "
                         f"expected {list(DETECTOR_FEATURES)} and {list(DETECTOR_CLASSES)}; refit it with "
                         "`python -m audiodiff.benchmarks.sfx.new_kinds_fit`")
    return model


def _trill_pitch(a: Analysis) -> str:
    sounding = a.active & (a.spec.frame_db > a.spec.frame_db.max() - 20.0)
    return _register(float(np.exp(np.percentile(np.log(a.peak_hz[sounding]), 25))), TONE_SPLITS_HZ)


def extract_with_new_kinds(wav: object, sample_rate: int, reference: dict | None = None) -> dict[str, str | int]:
    """Every attribute of a clip of the sfx corpus or of a new kind, read from its audio alone.

    Args:
        wav: `[T]` or `[1, T]` numpy array or torch tensor, float samples in [-1, 1].
        sample_rate: Hz (resampled to 16 kHz when different).
        reference: the attributes a prompt asked for, or None; as in `extract_sfx` (a new kind asked for has its
            attributes read by its own rules; `kind` is always the prediction).

    Returns:
        `{"kind": ..., "loudness": ...}` plus the attributes of the kind (see the module docstring).
    """
    x = mono_16k(wav, sample_rate, "extract_with_new_kinds")
    a = analyse(x)
    features = detector_features(a)
    detected = load_detector().predict(features[None])[0]
    if detected == "trill" and not is_trill_shaped(a):
        detected = OTHER  # no trill without a trill's pitch track, however alike the rest looks
    if detected == OTHER:
        return extract_sfx(x, SAMPLE_RATE, reference)
    out: dict[str, str | int] = {"kind": detected}
    kind = reference["kind"] if reference and reference.get("kind") in NEW_KIND_ATTRIBUTES else detected
    if kind == "trill":
        out["pitch"], out["envelope"] = _trill_pitch(a), _envelope(a)
    else:
        out["count"] = int(np.clip(len(a.events), 1, 3))
    out["loudness"] = "loud" if a.loudness > LOUDNESS_SPLIT_LUFS else "quiet"
    return out
