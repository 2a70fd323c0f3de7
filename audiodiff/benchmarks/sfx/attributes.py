"""Read the attributes of an `sfx` corpus clip back from its audio.

`extract_sfx(wav, sample_rate)` names the kind with a small softmax classifier over interpretable features
(fitted on the corpus's train split and stored in `sfx_kind.json`; refit with
`python -m audiodiff.benchmarks.sfx.fit`) and reads every other attribute with a fixed rule:

- pitch: median spectral peak over the sounding frames (tonal kinds) or median spectral centroid (hiss),
  split at the geometric midpoints between the corpus's registers;
- count: events found by hysteresis on the frame energy (on at −22 dB, off at −32 dB below the loudest frame);
- direction: sign of the straight-line fit of the peak (sweep) or centroid (whoosh) log-frequency track;
- envelope: energy slope over the sound, "fading" when it loses more than 15 dB;
- loudness: BS.1770 loudness with 50 ms blocks, "loud" above −30 LUFS.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np

from audiodiff.audio.loudness import event_loudness
from audiodiff.benchmarks.classifier import SoftmaxClassifier
from audiodiff.benchmarks.features import (
    FRAME_RATE,
    N_FFT,
    SAMPLE_RATE,
    Spectrogram,
    mono_16k,
    power_spectrogram,
    segment_events,
    smooth,
)
from audiodiff.benchmarks.score import score_predictions
from audiodiff.benchmarks.sfx.corpus import (
    ATTRIBUTE_VALUES,
    HISS_HZ,
    KIND_ATTRIBUTES,
    KINDS,
    LOUDNESS_LUFS,
    TONE_HZ,
)

KIND_MODEL_PATH = Path(__file__).with_name("sfx_kind.json")

# Decision boundaries: geometric midpoints between neighbouring value ranges of the synthesiser.
TONE_SPLITS_HZ = (
    float(np.sqrt(TONE_HZ["low"][1] * TONE_HZ["mid"][0])),
    float(np.sqrt(TONE_HZ["mid"][1] * TONE_HZ["high"][0])),
)
HISS_SPLITS_HZ = (
    float(np.sqrt(HISS_HZ["low"][1] * HISS_HZ["mid"][0])),
    float(np.sqrt(HISS_HZ["mid"][1] * HISS_HZ["high"][0])),
)
LOUDNESS_SPLIT_LUFS = float(np.mean(list(LOUDNESS_LUFS.values())))
FADING_DB = 15.0  # energy lost over a held sound beyond which it counts as fading
ACTIVE_DB = 30.0  # frames within this many dB of the loudest frame count as sounding

_N_MELS = 64
_BAND_GROUPS = 8  # the 64 mel bands pooled into 8 groups of 8 for a coarse spectral shape


@functools.cache
def _mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=_N_MELS, fmin=0.0, fmax=8000.0)


@functools.cache
def load_kind_model(path: Path = KIND_MODEL_PATH) -> SoftmaxClassifier:
    """The kind classifier stored at `path` (cached)."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{path}: sfx kind classifier missing; build it with "
            "`python -m audiodiff.benchmarks.sfx.fit`"
        )
    model = SoftmaxClassifier.load(path)
    if model.features != FEATURE_NAMES or model.classes != KINDS:
        raise ValueError(
            f"{path}: fitted for features {list(model.features)} and kinds {list(model.classes)}, "
            f"but the extractor computes {list(FEATURE_NAMES)} for {list(KINDS)}; refit it with "
            "`python -m audiodiff.benchmarks.sfx.fit`"
        )
    return model


@dataclass(frozen=True)
class Analysis:
    """Everything measured once per clip and shared by the attribute rules.

    Attributes:
        spec: the clip's power spectrogram.
        active: `[N]` bool, frames within `ACTIVE_DB` of the loudest frame.
        events: sound events as (start, stop) frame ranges.
        peak_hz: `[N]` frequency of the strongest bin between 60 Hz and 7.8 kHz, per frame.
        centroid_hz: `[N]` spectral centroid per frame.
        loudness: BS.1770 loudness in LUFS (50 ms blocks).
    """

    spec: Spectrogram
    active: np.ndarray
    events: list[tuple[int, int]]
    peak_hz: np.ndarray
    centroid_hz: np.ndarray
    loudness: float


def analyse(wav: np.ndarray) -> Analysis:
    """Shared measurements of `wav: [T]` at 16 kHz."""
    spec = power_spectrogram(wav)
    level = smooth(spec.frame_db, 3)
    active = level > level.max() - ACTIVE_DB
    events = segment_events(level, on_db=22.0, off_db=32.0, min_gap_frames=5, min_len_frames=1)
    freqs, power = spec.freqs, spec.power
    band = (freqs >= 60.0) & (freqs <= 7800.0)
    idx = np.argmax(power[band], axis=0)
    peak_hz = _refine_peaks(power[band], idx, freqs[band])
    total = np.maximum(power.sum(axis=0), 1e-20)
    centroid_hz = (freqs[:, None] * power).sum(axis=0) / total
    return Analysis(
        spec, active, events, peak_hz, np.maximum(centroid_hz, 1.0), event_loudness(wav, SAMPLE_RATE)
    )


def _refine_peaks(power: np.ndarray, idx: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Parabolic interpolation of log-power around each frame's peak bin → `[N]` Hz."""
    cols = np.arange(power.shape[1])
    lo = np.clip(idx - 1, 0, power.shape[0] - 1)
    hi = np.clip(idx + 1, 0, power.shape[0] - 1)
    a, b, c = (np.log(power[i, cols] + 1e-20) for i in (lo, idx, hi))
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    step = freqs[1] - freqs[0]
    return np.maximum(freqs[idx] + np.clip(shift, -0.5, 0.5) * step, 1.0)


def _line_fit(y: np.ndarray) -> tuple[float, float]:
    """Slope per frame and residual std of a least-squares line through `y: [n]`."""
    if y.size < 3:
        return 0.0, 0.0
    x = np.arange(y.size, dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(np.std(y - (slope * x + intercept)))


FEATURE_NAMES: tuple[str, ...] = (
    "flatness",
    "log_centroid",
    "centroid_spread",
    "log_bandwidth",
    "tonality",
    "low_ratio",
    "num_events",
    "log_event_s",
    "log_max_event_s",
    "fill",
    "event_decay_db",
    "attack_s",
    "peak_glide_oct",
    "peak_wobble_oct",
    "centroid_glide_oct",
    "centroid_wobble_oct",
    "am_depth_db",
    "flux_db",
    *(f"band_{i}" for i in range(_BAND_GROUPS)),
)


def kind_features(a: Analysis) -> np.ndarray:
    """`[len(FEATURE_NAMES)]` features the kind classifier reads (see `FEATURE_NAMES`)."""
    power = a.spec.power[:, a.active]
    db = a.spec.frame_db
    eps = 1e-20
    body = power[2:500] + eps
    flatness = np.exp(np.log(body).mean(axis=0)) / body.mean(axis=0)
    weights = power.sum(axis=0) + eps  # eps: digital silence gets uniform frame weights
    w = weights / weights.sum()
    log_centroid = np.log2(a.centroid_hz[a.active])
    mean_lc = float((w * log_centroid).sum())
    freqs = a.spec.freqs[:, None]
    spread = np.sqrt((((freqs - a.centroid_hz[a.active]) ** 2) * power).sum(axis=0) / (weights + eps))
    top = np.sort(power, axis=0)[-5:].sum(axis=0) / (weights + eps)
    low = power[a.spec.freqs < 120.0].sum(axis=0) / (weights + eps)

    events = a.events or [(int(np.argmax(db)), int(np.argmax(db)) + 1)]
    lengths = np.array([b - s for s, b in events], dtype=np.float64) / FRAME_RATE
    span = events[-1][1] - events[0][0]
    decays, attacks = [], []
    for s, b in events:
        seg = db[s:b]
        decays.append(float(seg.max() - seg.mean()))
        attacks.append(min(float(np.argmax(seg)), 8.0) / FRAME_RATE)  # rise time, capped at 128 ms

    peak_track = np.log2(a.peak_hz[a.active])
    cent_track = log_centroid
    n_active = max(int(a.active.sum()), 1)
    p_slope, p_res = _line_fit(peak_track)
    c_slope, c_res = _line_fit(cent_track)

    level = db[a.active]
    am = float(np.std(level - smooth(level, 15))) if level.size > 15 else 0.0
    mel = np.log10(_mel_basis() @ a.spec.power[:, a.active] + 1e-10) * 10.0
    flux = float(np.mean(np.abs(np.diff(mel, axis=1)))) if mel.shape[1] > 1 else 0.0
    bands = (_mel_basis() @ power).reshape(_BAND_GROUPS, -1, power.shape[1]).sum(axis=1).sum(axis=1)
    bands_db = np.maximum(10.0 * np.log10(bands / (bands.sum() + eps) + 1e-8), -40.0)  # energy share, floored

    return np.array(
        [
            float(np.mean(np.log10(flatness + eps))),
            mean_lc,
            float(np.std(log_centroid)),
            float(np.log2(np.average(spread, weights=w) + 1.0)),
            float(np.average(top, weights=w)),
            float(np.average(low, weights=w)),
            float(min(len(events), 4)),
            float(np.log(lengths.mean())),
            float(np.log(lengths.max())),
            float(lengths.sum() * FRAME_RATE / max(span, 1)),
            float(np.mean(decays)),
            float(np.mean(attacks)),
            p_slope * n_active,
            p_res,
            c_slope * n_active,
            c_res,
            am,
            flux,
            *bands_db.tolist(),
        ]
    )


def _register(hz: float, splits: tuple[float, float]) -> str:
    return "low" if hz < splits[0] else ("mid" if hz < splits[1] else "high")


def _pitch(kind: str, a: Analysis) -> str:
    if kind == "hiss":
        return _register(float(np.median(a.centroid_hz[a.active])), HISS_SPLITS_HZ)
    sounding = a.active & (a.spec.frame_db > a.spec.frame_db.max() - 20.0)
    return _register(float(np.exp(np.median(np.log(a.peak_hz[sounding])))), TONE_SPLITS_HZ)


def _direction(kind: str, a: Analysis) -> str:
    track = a.peak_hz if kind == "sweep" else a.centroid_hz
    slope, _ = _line_fit(np.log2(track[a.active]))
    return "rising" if slope > 0 else "falling"


def _envelope(a: Analysis) -> str:
    db = a.spec.frame_db
    idx = np.flatnonzero(db > db.max() - 45.0)
    level = smooth(db[idx[0] : idx[-1] + 1], 9)
    n = level.size
    edge = max(1, n // 4)
    drop = float(np.median(level[:edge]) - np.median(level[n - edge :]))
    return "fading" if drop > FADING_DB else "steady"


def extract_sfx(wav: object, sample_rate: int, reference: dict | None = None) -> dict[str, str | int]:
    """Every attribute of an sfx clip, read from its audio alone.

    Args:
        wav: `[T]` or `[1, T]` numpy array or torch tensor, float samples in [-1, 1].
        sample_rate: Hz (resampled to 16 kHz when different).
        reference: the attributes a prompt asked for, or None. When given, the attributes of the *asked* kind are
            read (a sweep's direction from its pitch track, a hiss's pitch from its centroid, ...), so each attribute
            is scored on its own; `kind` is always the classifier's prediction, never taken from the reference.

    Returns:
        `{"kind": ..., "loudness": ...}` plus whichever of pitch / count / direction / envelope the predicted
        kind carries (values as in `audiodiff.benchmarks.sfx.corpus.ATTRIBUTE_VALUES`).
    """
    x = mono_16k(wav, sample_rate, "extract_sfx")
    a = analyse(x)
    predicted = load_kind_model().predict(kind_features(a)[None])[0]
    out: dict[str, str | int] = {"kind": predicted}
    kind = reference["kind"] if reference and reference.get("kind") in KIND_ATTRIBUTES else predicted
    names = KIND_ATTRIBUTES[kind]
    if "pitch" in names:
        out["pitch"] = _pitch(kind, a)
    if "count" in names:
        out["count"] = int(np.clip(len(a.events), 1, 3))
    if "direction" in names:
        out["direction"] = _direction(kind, a)
    if "envelope" in names:
        out["envelope"] = _envelope(a)
    out["loudness"] = "loud" if a.loudness > LOUDNESS_SPLIT_LUFS else "quiet"
    return out


def score_attributes(predicted: list[dict], truth: list[dict]) -> dict[str, dict[str, float]]:
    """Accuracy, n and chance per sfx attribute (`audiodiff.benchmarks.score.score_predictions`)."""
    return score_predictions(predicted, truth, ATTRIBUTE_VALUES)
