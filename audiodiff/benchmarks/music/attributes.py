"""Read the attributes of a `music` corpus clip back from its audio.

`extract_music(wav, sample_rate)` returns ``style``, ``tempo``, ``key``, ``mode``, ``lead``, ``chords`` and
``instruments`` (as in :mod:`audiodiff.benchmarks.music.corpus`):

- style: a softmax classifier (``music_style.json``) over drum-kit timbre (mean and spread of the percussive
  log-mel), bass timbre (mean harmonic log-mel) and rhythm (onset-envelope autocorrelation in four bands);
- tempo: onset-strength autocorrelation scored at 1-4 beat periods for every tempo from 50 to 200 BPM, then
  the best-scoring tempo inside the predicted style's tempo range. Every style's range spans less than an
  octave, so the range settles octave errors (half/double tempo) that the autocorrelation alone cannot: a
  ballad's eighth-note hi-hat is as periodic as its quarter-note beat;
- key and mode: chroma (treble and bass bands over the clip, and both bands over its first and last sixth,
  where the corpus places the tonic chord) scored against 24 key profiles (``music_key.json``): the
  Krumhansl-Schmuckler method with the profiles estimated from the train split's audio, so that they include
  the instruments' overtones, which push plain Krumhansl-Kessler profiles towards the dominant and the
  parallel mode;
- lead and chords: :class:`~audiodiff.benchmarks.music.instrument_net.InstrumentNet` over the log-mel
  (``music_instruments.npz``); ``instruments`` lists their GM program names and the predicted style's bass.

The three model files are fitted on the corpus's train split only:
``python -m audiodiff.benchmarks.music.fit`` (see that module).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
from scipy.stats import rankdata

from audiodiff.benchmarks.classifier import SoftmaxClassifier
from audiodiff.benchmarks.features import (
    FRAME_RATE,
    HOP,
    N_FFT,
    SAMPLE_RATE,
    mono_16k,
    power_spectrogram,
)
from audiodiff.benchmarks.music.corpus import ATTRIBUTE_VALUES, INSTRUMENTS, TEMPO_RANGES
from audiodiff.benchmarks.music.instrument_net import InstrumentNet
from audiodiff.benchmarks.music.midi import GM_PROGRAM_NAMES, PITCH_CLASSES, STYLES
from audiodiff.benchmarks.score import above_chance_p_value

STYLE_MODEL_PATH = Path(__file__).with_name("music_style.json")
KEY_MODEL_PATH = Path(__file__).with_name("music_key.json")
INSTRUMENT_MODEL_PATH = Path(__file__).with_name("music_instruments.npz")
FIT_COMMAND = "python -m audiodiff.benchmarks.music.fit"

TEMPO_TOLERANCE = 0.04  # a tempo counts as right within 4% of the truth
N_MELS = 64
MEL_FLOOR = 1e-6  # log10 floor of the mel power
ONSET_RATE = FRAME_RATE  # the onset envelope is the mean log-mel flux, 62.5 frames per second
HPSS_KERNEL = (17, 9)  # median filters over 17 frames (harmonic) and 9 mel bands (percussive)
TEMPO_GRID = np.exp(np.linspace(np.log(50.0), np.log(200.0), 1400))  # BPM candidates, 0.1% apart
TEMPO_HARMONICS = (1, 2, 3, 4)  # beat multiples whose autocorrelation scores a tempo
RHYTHM_LAGS = range(3, 126)  # onset-autocorrelation lags (frames of 16 ms, 48 ms to 2 s) for the style
RHYTHM_BANDS = {"low": slice(0, 10), "mid": slice(10, 40), "high": slice(40, 64)}  # mel bands
CHROMA_FFT = 4096  # 3.9 Hz bins resolve semitones from ~70 Hz up
CHROMA_HOP = 1024
BASS_HZ = (50.0, 260.0)
TREBLE_HZ = (260.0, 2500.0)
CHROMA_PARTS = ("treble", "bass", "start", "end")
EDGE_FRACTION = 1 / 6  # the clip's first and last sixth make the start and end chroma
KEY_LABELS: tuple[str, ...] = tuple(f"{pc} {mode}" for mode in ("major", "minor") for pc in PITCH_CLASSES)


class ModelMissingError(FileNotFoundError):
    """A fitted model file of the music extractors is missing."""


@functools.cache
def _mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2)


@dataclass(frozen=True)
class MusicAnalysis:
    """What the extractors measure once per clip.

    Attributes:
        log_mel: ``[64, N]`` log10 mel power (n_fft 1024, hop 256: 62.5 frames per second).
        harmonic_mel, percussive_mel: ``[64, N]`` the same for the harmonic and percussive parts of the mel
            spectrogram (median filtering, Fitzgerald 2010).
        onset_envelope: ``[N]`` onset strength (mean positive log-mel flux) at :data:`ONSET_RATE` frames per
            second.
        chroma: ``[4, 12]`` unit-norm chroma of :data:`CHROMA_PARTS`, index 0 = C.
    """

    log_mel: np.ndarray
    harmonic_mel: np.ndarray
    percussive_mel: np.ndarray
    onset_envelope: np.ndarray
    chroma: np.ndarray


def chroma_parts(wav: np.ndarray) -> np.ndarray:
    """``[4, 12]`` chroma of ``wav: [T]`` at 16 kHz: treble band, bass band, and both bands over the first and
    the last sixth of the clip.

    Each STFT bin (4096 points) adds its log-compressed magnitude to the pitch class of the nearest
    semitone, weighted by how close it lies to that semitone (1 on it, 0 half way between two).
    """
    magnitude = np.abs(librosa.stft(wav, n_fft=CHROMA_FFT, hop_length=CHROMA_HOP))
    freqs = np.fft.rfftfreq(CHROMA_FFT, 1.0 / SAMPLE_RATE)
    midi = 69.0 + 12.0 * np.log2(np.maximum(freqs, 1e-3) / 440.0)
    weight = np.maximum(0.0, 1.0 - 2.0 * np.abs(midi - np.round(midi)))
    pitch_class = np.round(midi).astype(int) % 12

    def projection(lo: float, hi: float) -> np.ndarray:
        bins = np.flatnonzero((freqs >= lo) & (freqs < hi))
        matrix = np.zeros((12, freqs.size))
        matrix[pitch_class[bins], bins] = weight[bins]
        return matrix

    compressed = np.log1p(100.0 * magnitude / (magnitude.max() + 1e-12))
    treble = projection(*TREBLE_HZ) @ compressed
    bass = projection(*BASS_HZ) @ compressed
    edge = max(1, int(round(treble.shape[1] * EDGE_FRACTION)))
    parts = np.stack([
        treble.mean(axis=1),
        bass.mean(axis=1),
        (treble[:, :edge] + bass[:, :edge]).mean(axis=1),
        (treble[:, -edge:] + bass[:, -edge:]).mean(axis=1),
    ])
    return parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-12)


def analyse_music(wav: np.ndarray) -> MusicAnalysis:
    """Shared measurements of ``wav: [T]`` float32 at 16 kHz."""
    mel = _mel_basis() @ power_spectrogram(wav).power
    harmonic, percussive = librosa.decompose.hpss(mel, kernel_size=HPSS_KERNEL)
    log_mel = np.log10(mel + MEL_FLOOR)
    onset = librosa.onset.onset_strength(S=10.0 * log_mel, sr=SAMPLE_RATE, hop_length=HOP)
    return MusicAnalysis(
        log_mel=log_mel.astype(np.float32),
        harmonic_mel=np.log10(harmonic + MEL_FLOOR).astype(np.float32),
        percussive_mel=np.log10(percussive + MEL_FLOOR).astype(np.float32),
        onset_envelope=onset.astype(np.float64),
        chroma=chroma_parts(wav),
    )


# ----------------------------------------------------------------------------------------------------- tempo
def tempo_salience(onset_envelope: np.ndarray, frame_rate: float = ONSET_RATE) -> np.ndarray:
    """``[len(TEMPO_GRID)]`` periodicity score of each candidate tempo.

    The normalised autocorrelation of the onset envelope, linearly interpolated at 1, 2, 3 and 4 beat periods
    and summed; lags beyond the clip score 0. A tempo and its double both score high (the double's period
    divides the beat), which is what :func:`estimate_tempo`'s range settles.
    """
    env = np.asarray(onset_envelope, dtype=np.float64)
    env = env - env.mean()
    max_lag = int(np.ceil(max(TEMPO_HARMONICS) * 60.0 * frame_rate / TEMPO_GRID[0])) + 2
    ac = librosa.autocorrelate(env, max_size=min(max_lag, env.size))
    if ac.size < 2 or ac[0] <= 0:
        return np.zeros_like(TEMPO_GRID)
    ac = ac / ac[0]
    score = np.zeros_like(TEMPO_GRID)
    for multiple in TEMPO_HARMONICS:
        lag = multiple * 60.0 * frame_rate / TEMPO_GRID
        score += np.interp(lag, np.arange(ac.size), ac, right=0.0)
    return score


def estimate_tempo(onset_envelope: np.ndarray, tempo_range: tuple[float, float] | None = None) -> float:
    """Tempo in BPM: the most salient candidate (see :func:`tempo_salience`) within ``tempo_range`` widened by
    :data:`TEMPO_TOLERANCE`, or over 50-200 BPM when the range is None."""
    score = tempo_salience(onset_envelope)
    allowed = np.ones_like(TEMPO_GRID, dtype=bool)
    if tempo_range is not None:
        lo, hi = tempo_range
        allowed = (TEMPO_GRID >= lo * (1 - TEMPO_TOLERANCE)) & (TEMPO_GRID <= hi * (1 + TEMPO_TOLERANCE))
    candidates = np.flatnonzero(allowed)
    best = int(candidates[np.argmax(score[candidates])])
    if 0 < best < TEMPO_GRID.size - 1:  # parabolic refinement on the log-tempo grid
        a, b, c = score[best - 1 : best + 2]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        step = np.log(TEMPO_GRID[1] / TEMPO_GRID[0])
        return float(TEMPO_GRID[best] * np.exp(np.clip(shift, -0.5, 0.5) * step))
    return float(TEMPO_GRID[best])


# ----------------------------------------------------------------------------------------------------- style
STYLE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"perc_mean_{i}" for i in range(N_MELS)),
    *(f"perc_std_{i}" for i in range(N_MELS)),
    *(f"harm_mean_{i}" for i in range(N_MELS)),
    *(f"onset_ac_{part}_{band}_{lag}" for part, bands in (("perc", RHYTHM_BANDS), ("harm", {"low": None}))
      for band in bands for lag in RHYTHM_LAGS),
)


def _onset_autocorrelation(log_mel: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of the band's mean positive log-mel flux at :data:`RHYTHM_LAGS` frames."""
    flux = np.maximum(np.diff(log_mel, axis=1), 0.0).mean(axis=0)
    flux = flux - flux.mean()
    ac = np.zeros(RHYTHM_LAGS.stop)
    full = librosa.autocorrelate(flux, max_size=min(RHYTHM_LAGS.stop, flux.size))
    ac[: full.size] = full
    return ac[RHYTHM_LAGS.start :] / (ac[0] + 1e-9)


def style_features(a: MusicAnalysis) -> np.ndarray:
    """``[len(STYLE_FEATURE_NAMES)]`` features of the style classifier."""
    rhythm = [_onset_autocorrelation(a.percussive_mel[band]) for band in RHYTHM_BANDS.values()]
    rhythm.append(_onset_autocorrelation(a.harmonic_mel[RHYTHM_BANDS["low"]]))
    return np.concatenate([
        a.percussive_mel.mean(axis=1), a.percussive_mel.std(axis=1), a.harmonic_mel.mean(axis=1), *rhythm,
    ]).astype(np.float64)


# ------------------------------------------------------------------------------------------------------- key
@dataclass(frozen=True)
class KeyProfiles:
    """Key-finding profiles: key ``(tonic t, mode m)`` scores
    ``sum_p,i weights[m, p, i] * chroma[p, (t + i) % 12]``.

    Attributes:
        parts: names of the chroma rows the profiles read (:data:`CHROMA_PARTS`).
        weights: ``[2, P, 12]``; mode 0 major, 1 minor; index i = semitones above the tonic.
    """

    parts: tuple[str, ...]
    weights: np.ndarray

    def logits(self, chroma: np.ndarray) -> np.ndarray:
        """``chroma: [N, P, 12]`` (or ``[P, 12]``) -> ``[N, 24]`` (or ``[24]``) scores in KEY_LABELS order."""
        chroma = np.asarray(chroma, dtype=np.float64)
        single = chroma.ndim == 2
        chroma = np.atleast_3d(chroma[None] if single else chroma)
        if chroma.shape[1:] != self.weights.shape[1:]:
            raise ValueError(f"chroma must be [N, {self.weights.shape[1]}, 12], got {chroma.shape}")
        rotated = rotate_chroma(chroma)  # [N, 12 tonics, P, 12]
        out = np.einsum("ntpi,mpi->nmt", rotated, self.weights).reshape(len(chroma), 24)
        return out[0] if single else out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {"parts": list(self.parts), "labels": ["major", "minor"],
                   "weights": np.round(self.weights, 8).tolist()}
        path.write_text(json.dumps(payload, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> KeyProfiles:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            profiles = cls(tuple(data["parts"]), np.asarray(data["weights"], dtype=np.float64))
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a key-profile file ({error})") from error
        if profiles.weights.shape != (2, len(profiles.parts), 12):
            raise ValueError(f"{path}: expected weights [2, {len(profiles.parts)}, 12], "
                             f"got {profiles.weights.shape}")
        return profiles


def rotate_chroma(chroma: np.ndarray) -> np.ndarray:
    """``[N, P, 12]`` -> ``[N, 12, P, 12]``: entry ``[n, t, p, i]`` is ``chroma[n, p, (t + i) % 12]``."""
    return np.stack([np.roll(chroma, -t, axis=-1) for t in range(12)], axis=1)


def key_from_logits(logits: np.ndarray) -> tuple[str, str]:
    """``[24]`` scores in :data:`KEY_LABELS` order -> (tonic name, mode)."""
    tonic, mode = KEY_LABELS[int(np.argmax(logits))].split(" ")
    return tonic, mode


# ------------------------------------------------------------------------------------------------ the models
def _missing(path: Path) -> ModelMissingError:
    return ModelMissingError(f"{path}: music extractor model missing; fit it on the train split with "
                             f"`{FIT_COMMAND}`")


@functools.cache
def load_style_model(path: Path = STYLE_MODEL_PATH) -> SoftmaxClassifier:
    """The style classifier stored at ``path`` (cached)."""
    if not Path(path).exists():
        raise _missing(Path(path))
    model = SoftmaxClassifier.load(path)
    if model.features != STYLE_FEATURE_NAMES:
        raise ValueError(f"{path}: fitted on features other than STYLE_FEATURE_NAMES; refit: `{FIT_COMMAND}`")
    return model


@functools.cache
def load_key_model(path: Path = KEY_MODEL_PATH) -> KeyProfiles:
    """The key profiles stored at ``path`` (cached)."""
    if not Path(path).exists():
        raise _missing(Path(path))
    return KeyProfiles.load(path)


@functools.cache
def load_instrument_model(path: Path = INSTRUMENT_MODEL_PATH) -> InstrumentNet:
    """The instrument network stored at ``path`` (cached)."""
    if not Path(path).exists():
        raise _missing(Path(path))
    return InstrumentNet.load(path)


# --------------------------------------------------------------------------------------------- public API
def extract_music(wav: object, sample_rate: int, reference: dict | None = None) -> dict[str, Any]:
    """Every attribute of a music clip, read from its audio alone. With a `reference` (the prompt's attributes) that
    names a style, ``tempo_in_asked_style`` is the tempo read within that style's range as well (what
    :func:`tempo_following` correlates); every other attribute ignores it.

    Args:
        wav: ``[T]`` or ``[1, T]`` numpy array or torch tensor, float samples in [-1, 1].
        sample_rate: Hz (resampled to 16 kHz when different).

    Returns:
        ``{"style": str, "tempo": float BPM, "key": tonic name, "mode": "major"|"minor", "lead": str,
        "chords": str, "instruments": [lead, chords, bass GM program names]}``, and ``"tempo_in_asked_style"``
        (float BPM) with a reference style.
    """
    x = mono_16k(wav, sample_rate, "extract_music")
    a = analyse_music(x)
    style = load_style_model().predict(style_features(a)[None])[0]
    tempo = estimate_tempo(a.onset_envelope, TEMPO_RANGES[style])
    tonic, mode = key_from_logits(load_key_model().logits(a.chroma))
    lead, chords = load_instrument_model().predict(a.log_mel)
    asked_style = (reference or {}).get("style")
    extra: dict[str, float] = {}
    if asked_style in TEMPO_RANGES:
        asked_tempo = tempo if asked_style == style else estimate_tempo(a.onset_envelope, TEMPO_RANGES[asked_style])
        extra["tempo_in_asked_style"] = round(asked_tempo, 1)
    return {**extra,
        "style": style,
        "tempo": round(tempo, 1),
        "key": tonic,
        "mode": mode,
        "lead": lead,
        "chords": chords,
        "instruments": [
            GM_PROGRAM_NAMES[INSTRUMENTS[lead]],
            GM_PROGRAM_NAMES[INSTRUMENTS[chords]],
            GM_PROGRAM_NAMES[STYLES[style].bass_program],
        ],
    }


SCORED_ATTRIBUTES = ("style", "tempo", "key", "mode", "lead", "chords", "instruments")


def typical_tempo(style: str) -> float:
    """A style's typical tempo in BPM: the middle of its range (the guess that tempo chance levels assume)."""
    return sum(TEMPO_RANGES[style]) / 2


def tempo_within(predicted: object, true_bpm: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether ``predicted`` (a number, or None) lies within ``tolerance`` (relative) of ``true_bpm``."""
    if predicted is None or isinstance(predicted, bool) or not isinstance(predicted, int | float):
        return False
    return abs(float(predicted) / float(true_bpm) - 1.0) <= tolerance


def asked_music(caption: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a music caption asks for: all of ``attributes`` except ``tempo`` when the caption gives no
    BPM (captions such as "a slow waltz in F major" name a tempo class, which a 4% tolerance cannot score)."""
    asked = dict(attributes)
    bpm = asked.get("tempo")
    if bpm is not None and not re.search(rf"(?<![\d.]){round(float(bpm))}(?!\d|\.\d)", caption):
        del asked["tempo"]
    return asked


def score_music(predicted: Sequence[Mapping], truth: Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """Accuracy of extracted attributes against the manifest's, per attribute.

    A missing prediction counts as wrong. ``tempo`` is right within :data:`TEMPO_TOLERANCE` (4%);
    ``instruments`` when lead, chords and bass (GM names, in that order) all match.

    Chance levels: for categorical attributes, guessing uniformly among the corpus's values
    (``1 / len(ATTRIBUTE_VALUES[name])``; instruments: 1 / (10 x 9 lead-chord pairs x 6 bass programs)).
    For tempo, the fraction of the clips whose tempo lies within 4% of the middle of their (true) style's
    tempo range, i.e. what guessing each style's typical tempo scores.

    Returns:
        ``{attribute: {"accuracy", "n", "chance"}}`` for the attributes in :data:`SCORED_ATTRIBUTES` that
        some truth row holds.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"got {len(predicted)} predictions for {len(truth)} ground-truth rows")
    out: dict[str, dict[str, float]] = {}
    for name in SCORED_ATTRIBUTES:
        pairs = [(p.get(name), t[name], t) for p, t in zip(predicted, truth, strict=True) if name in t]
        if not pairs:
            continue
        if name == "tempo":
            correct = sum(tempo_within(p, t) for p, t, _ in pairs)
            chance = sum(tempo_within(typical_tempo(row["style"]), t) for _, t, row in pairs
                         if row.get("style") in TEMPO_RANGES) / len(pairs)
        else:
            correct = sum(_same(p, t) for p, t, _ in pairs)
            if name == "instruments":
                timbres = len(ATTRIBUTE_VALUES["lead"])
                chance = 1.0 / (timbres * (timbres - 1) * len({s.bass_program for s in STYLES.values()}))
            else:
                chance = 1.0 / len(ATTRIBUTE_VALUES[name])
        out[name] = {"accuracy": correct / len(pairs), "n": len(pairs), "chance": chance}
    return out


def tempo_following(predicted: Sequence[Mapping], truth: Sequence[Mapping], permutations: int = 10000,
                    seed: int = 0) -> dict[str, float]:
    """Whether the measured tempo moves with the BPM a prompt asks for, beyond what its style implies.

    Over the prompts that give a BPM and a style: the Spearman correlation between the asked BPM and the tempo read
    within the asked style's range (``tempo_in_asked_style``), each centred on its style's mean first, so that a
    model playing every style at its typical tempo scores 0 whatever BPM is asked. ``p_value`` is one-sided, from
    ``permutations`` shuffles of the asked BPMs within each style (the chance distribution of the correlation).

    ``accuracy`` is the share of those tempi within :data:`TEMPO_TOLERANCE` of the asked BPM, against ``chance``,
    the share that guessing each style's typical tempo scores (as :func:`score_music`'s tempo chance);
    ``accuracy_p_value`` is its one-sided binomial p-value. Unlike ``score_music``'s ``tempo``, which reads the tempo
    within the *predicted* style's range, this reading does not depend on the style classifier: a clip of the asked
    tempo whose style is misread (a ballad heard as a waltz) is not read an octave off.

    Returns:
        ``{"spearman", "p_value", "accuracy", "chance", "accuracy_p_value", "n"}``; NaN statistics when fewer than
        3 prompts qualify.
    """
    rows = [(t["style"], float(t["tempo"]), float(p["tempo_in_asked_style"]))
            for p, t in zip(predicted, truth, strict=True)
            if "tempo" in t and t.get("style") in TEMPO_RANGES and p.get("tempo_in_asked_style") is not None]
    if len(rows) < 3:
        return {**dict.fromkeys(["spearman", "p_value", "accuracy", "chance", "accuracy_p_value"], float("nan")),
                "n": float(len(rows))}
    hits = sum(tempo_within(m, a) for _, a, m in rows)
    chance = sum(tempo_within(typical_tempo(s), a) for s, a, _ in rows) / len(rows)
    accuracy = {"accuracy": hits / len(rows), "chance": chance,
                "accuracy_p_value": above_chance_p_value(hits / len(rows), len(rows), chance)}
    styles = np.array([r[0] for r in rows])
    asked, measured = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    groups = [np.flatnonzero(styles == s) for s in np.unique(styles)]

    def centred(values: np.ndarray) -> np.ndarray:
        out = values.astype(np.float64).copy()
        for index in groups:
            out[index] -= out[index].mean()
        return out

    def spearman(a: np.ndarray, b: np.ndarray) -> float:
        ra, rb = rankdata(a), rankdata(b)
        return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() > 0 and rb.std() > 0 else 0.0

    y = centred(measured)
    observed = spearman(centred(asked), y)
    rng = np.random.default_rng(seed)
    shuffled = asked.copy()
    above = 0
    for _ in range(permutations):
        for index in groups:
            shuffled[index] = rng.permutation(asked[index])
        above += spearman(centred(shuffled), y) >= observed
    return {"spearman": observed, "p_value": (above + 1) / (permutations + 1), **accuracy, "n": float(len(rows))}


def _same(predicted: object, true: object) -> bool:
    if isinstance(true, list | tuple):
        return isinstance(predicted, list | tuple) and list(predicted) == list(true)
    return predicted == true
