"""The built-in `sfx` corpus: synthesised sound effects with captions that name every attribute.

Fourteen kinds of sound, each with a few attributes drawn uniformly at random:

============ ========================================== =====================================
kind         sound                                      attributes besides `kind`, `loudness`
============ ========================================== =====================================
sine         pure sine tone                             pitch, envelope
square       band-limited square wave (buzzy)           pitch, envelope
hum          engine drone: 55–100 Hz sawtooth, AM       envelope
siren        sine wailing ±0.3–0.45 octave at ~1 Hz      pitch
hiss         band-passed noise                          pitch (band centre), envelope
rumble       brown noise below ~200 Hz                  envelope
bell         inharmonic partials, exponential decay     pitch, count
beeps        short sine beeps                           pitch, count
clicks       ~20 ms broadband ticks                     count
knocks       low damped wooden thumps                   count
snare        noisy drum hit with a low body             count
noise_burst  flat burst of white noise                  count
sweep        sine chirp over 2–3 octaves                direction
whoosh       noise band gliding over 2.5–3.3 octaves    direction
============ ========================================== =====================================

`loudness` is "quiet" (−38 LUFS) or "loud" (−22 LUFS), ±1 dB, measured with
`audiodiff.audio.loudness.event_loudness` (BS.1770 with 50 ms blocks). Pitched kinds use
fundamentals of 160–280 / 420–750 / 1100–1900 Hz for low / mid / high (hiss: band centres 450–700 /
1300–2000 / 3800–5500 Hz). Events are separated by at least 260 ms of near-silence (−40 dB; at least 200 ms
once smeared by the 64 ms analysis window), so counting them on a mel spectrogram at 62.5 frames per second is
unambiguous. Clips last 1–4 s.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from audiodiff.audio.loudness import event_loudness
from audiodiff.benchmarks.sfx.captions import CAPTION_TEMPLATES_EVAL, CAPTION_TEMPLATES_TRAIN, caption_for
from audiodiff.data.manifest import write_manifest
from audiodiff.utils.files import atomic_folder

VERSION = 1
SAMPLE_RATE = 16000
MIN_DURATION_S = 1.0
MAX_DURATION_S = 4.0

KINDS: tuple[str, ...] = (
    "sine",
    "square",
    "hum",
    "siren",
    "hiss",
    "rumble",
    "bell",
    "beeps",
    "clicks",
    "knocks",
    "snare",
    "noise_burst",
    "sweep",
    "whoosh",
)

ATTRIBUTE_VALUES: dict[str, tuple] = {
    "kind": KINDS,
    "pitch": ("low", "mid", "high"),
    "count": (1, 2, 3),
    "direction": ("rising", "falling"),
    "envelope": ("steady", "fading"),
    "loudness": ("quiet", "loud"),
}

# Attributes each kind carries besides `kind` and `loudness` (which every clip has).
KIND_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sine": ("pitch", "envelope"),
    "square": ("pitch", "envelope"),
    "hum": ("envelope",),
    "siren": ("pitch",),
    "hiss": ("pitch", "envelope"),
    "rumble": ("envelope",),
    "bell": ("pitch", "count"),
    "beeps": ("pitch", "count"),
    "clicks": ("count",),
    "knocks": ("count",),
    "snare": ("count",),
    "noise_burst": ("count",),
    "sweep": ("direction",),
    "whoosh": ("direction",),
}

TONE_HZ: dict[str, tuple[float, float]] = {
    "low": (160.0, 280.0),
    "mid": (420.0, 750.0),
    "high": (1100.0, 1900.0),
}
HISS_HZ: dict[str, tuple[float, float]] = {
    "low": (450.0, 700.0),
    "mid": (1300.0, 2000.0),
    "high": (3800.0, 5500.0),
}
LOUDNESS_LUFS: dict[str, float] = {"quiet": -38.0, "loud": -22.0}
LOUDNESS_JITTER_DB = 1.0
EVENT_GAP_S = (0.26, 0.44)  # silence (below −40 dB of the event peak) between consecutive events


def attributes_of(kind: str) -> tuple[str, ...]:
    """Every attribute name a clip of `kind` carries, in `ATTRIBUTE_VALUES` order."""
    if kind not in KIND_ATTRIBUTES:
        raise ValueError(f"unknown sfx kind {kind!r}; expected one of {list(KINDS)}")
    names = {"kind", "loudness", *KIND_ATTRIBUTES[kind]}
    return tuple(name for name in ATTRIBUTE_VALUES if name in names)


def sample_attributes(rng: np.random.Generator, kind: str | None = None) -> dict[str, str | int]:
    """Attributes of one clip: `kind` uniform over `KINDS` (unless given), every other value uniform."""
    if kind is None:
        kind = KINDS[int(rng.integers(len(KINDS)))]
    out: dict[str, str | int] = {}
    for name in attributes_of(kind):
        values = ATTRIBUTE_VALUES[name]
        out[name] = kind if name == "kind" else values[int(rng.integers(len(values)))]
    return out


def validate_attributes(attributes: dict) -> None:
    """Raise ValueError unless `attributes` names a kind and exactly the valid attributes of that kind."""
    kind = attributes.get("kind")
    if kind not in KIND_ATTRIBUTES:
        raise ValueError(f"attributes['kind']: expected one of {list(KINDS)}, got {kind!r}")
    expected = set(attributes_of(kind))
    if set(attributes) != expected:
        raise ValueError(
            f"attributes of kind {kind!r}: expected keys {sorted(expected)}, got {sorted(attributes)}"
        )
    for name, value in attributes.items():
        if value not in ATTRIBUTE_VALUES[name]:
            raise ValueError(
                f"attributes[{name!r}]: expected one of {list(ATTRIBUTE_VALUES[name])}, got {value!r}"
            )


# ---------------------------------------- building blocks
def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _ramps(n: int, sample_rate: int, attack_s: float, release_s: float) -> np.ndarray:
    """`[n]` gain: linear fade-in over `attack_s`, 1, linear fade-out over `release_s`."""
    env = np.ones(n)
    a = min(n, max(1, int(attack_s * sample_rate)))
    r = min(n, max(1, int(release_s * sample_rate)))
    env[:a] *= np.linspace(0.0, 1.0, a, endpoint=False)
    env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _sustain_envelope(n: int, sample_rate: int, envelope: str) -> np.ndarray:
    """`[n]` gain for a held sound: flat ("steady") or falling 40 dB over its length ("fading")."""
    env = _ramps(n, sample_rate, 0.02, 0.05)
    if envelope == "fading":
        env *= 10.0 ** (-2.0 * np.linspace(0.0, 1.0, n))
    return env


def _partials(f0_track: np.ndarray, sample_rate: int, ratios: list[float], amps: list[float]) -> np.ndarray:
    """Sum of sines at `ratio · f0_track[t]` (Hz) with amplitudes `amps`, skipping partials above 7.6 kHz."""
    phase = 2.0 * np.pi * np.cumsum(f0_track) / sample_rate
    out = np.zeros_like(f0_track)
    for ratio, amp in zip(ratios, amps, strict=True):
        if ratio * f0_track.max() < 7600.0:
            out += amp * np.sin(ratio * phase)
    return out


def _shaped_noise(rng: np.random.Generator, n: int, gain_fn) -> np.ndarray:
    """`[n]` Gaussian noise filtered in the STFT domain by `gain_fn(freqs [F], times [N]) -> [F, N]`."""
    nperseg = 512
    noise = rng.standard_normal(n + nperseg)
    freqs, times, spec = scipy.signal.stft(noise, fs=SAMPLE_RATE, nperseg=nperseg)
    spec = spec * gain_fn(freqs, times / ((n + nperseg) / SAMPLE_RATE))
    _, out = scipy.signal.istft(spec, fs=SAMPLE_RATE, nperseg=nperseg)
    return out[nperseg // 2 : nperseg // 2 + n]


def _band_gain(freqs: np.ndarray, centre: np.ndarray | float, octaves: float) -> np.ndarray:
    """Gaussian band in log-frequency around `centre` Hz with a full width at half maximum of `octaves`."""
    sigma = octaves / 2.355
    logf = np.log2(np.maximum(freqs, 1.0))[:, None]
    return np.exp(-0.5 * ((logf - np.log2(np.atleast_1d(centre))[None, :]) / sigma) ** 2)


def _place_events(
    rng: np.random.Generator, events: list[np.ndarray], lengths_s: list[float], sample_rate: int
) -> np.ndarray:
    """Lay `events` out after a short lead with `EVENT_GAP_S` of silence after each event's audible length."""
    onsets = []
    t = rng.uniform(0.08, 0.25)
    for length in lengths_s:
        onsets.append(t)
        t += length + rng.uniform(*EVENT_GAP_S)
    end = onsets[-1] + max(len(events[-1]) / sample_rate, lengths_s[-1] + 0.15)
    total = min(MAX_DURATION_S, max(MIN_DURATION_S, end + rng.uniform(0.05, 0.2)))
    out = np.zeros(int(round(total * sample_rate)))
    for onset, ev in zip(onsets, events, strict=True):
        i = int(round(onset * sample_rate))
        piece = ev[: len(out) - i]
        out[i : i + len(piece)] += piece
    return out


def _held_duration(rng: np.random.Generator) -> tuple[float, float, float]:
    """(lead, sound, tail) seconds of a held sound; the clip lasts 1.6–3.9 s."""
    return rng.uniform(0.03, 0.12), rng.uniform(1.5, 3.6), rng.uniform(0.05, 0.18)


def _frame_held(sound: np.ndarray, lead: float, tail: float, sample_rate: int) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * sample_rate)), sound, np.zeros(int(tail * sample_rate))])


# ---------------------------------------- kinds
def _held_tone(attrs: dict, rng: np.random.Generator, sr: int, harmonics: str) -> np.ndarray:
    lead, dur, tail = _held_duration(rng)
    n = int(dur * sr)
    f0 = _loguniform(rng, *TONE_HZ[attrs["pitch"]])
    track = np.full(n, f0)
    if harmonics == "sine":
        sound = np.sin(2.0 * np.pi * f0 * np.arange(n) / sr + rng.uniform(0, 2 * np.pi))
    else:
        odd = [k for k in range(1, 80, 2) if k * f0 < 7600.0]
        sound = _partials(track, sr, odd, [1.0 / k for k in odd])
    return _frame_held(sound * _sustain_envelope(n, sr, attrs["envelope"]), lead, tail, sr)


def _hum(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, dur, tail = _held_duration(rng)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(55.0, 100.0)
    track = f0 * (1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    ks = [k for k in range(1, 60) if k * f0 < 3000.0]
    sound = _partials(track, sr, ks, [(1.0 / k) * np.exp(-k * f0 / 1500.0) for k in ks])
    am = 1.0 - rng.uniform(0.45, 0.65) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6.0, 10.0) * t))
    return _frame_held(sound * am * _sustain_envelope(n, sr, attrs["envelope"]), lead, tail, sr)


def _siren(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, dur, tail = _held_duration(rng)
    dur = max(dur, 2.0)
    n = int(dur * sr)
    t = np.arange(n) / sr
    fc = _loguniform(rng, *TONE_HZ[attrs["pitch"]])
    depth = rng.uniform(0.3, 0.45)
    track = fc * 2.0 ** (depth * np.sin(2 * np.pi * rng.uniform(0.8, 1.4) * t + rng.uniform(0, 2 * np.pi)))
    sound = _partials(track, sr, [1.0, 2.0, 3.0], [1.0, 0.25, 0.08])
    return _frame_held(sound * _ramps(n, sr, 0.03, 0.06), lead, tail, sr)


def _hiss(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, dur, tail = _held_duration(rng)
    n = int(dur * sr)
    centre = _loguniform(rng, *HISS_HZ[attrs["pitch"]])
    width = rng.uniform(0.5, 0.8)
    sound = _shaped_noise(rng, n, lambda f, _t: _band_gain(f, centre, width))
    return _frame_held(sound * _sustain_envelope(n, sr, attrs["envelope"]), lead, tail, sr)


def _rumble(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, dur, tail = _held_duration(rng)
    n = int(dur * sr)
    cutoff = rng.uniform(180.0, 260.0)

    def gain(f: np.ndarray, _t: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)[:, None]
        highpass = 1.0 / (1.0 + (60.0 / f) ** 4)
        return highpass * np.sqrt(60.0 / np.maximum(f, 60.0)) / (1.0 + (f / cutoff) ** 4)

    sound = _shaped_noise(rng, n, gain)
    return _frame_held(sound * _sustain_envelope(n, sr, attrs["envelope"]), lead, tail, sr)


def _glide(rng: np.random.Generator, n: int, lo: float, octaves: float, rising: bool) -> np.ndarray:
    """`[n]` exponential glide covering `octaves` above `lo` Hz, upward or downward."""
    pos = np.linspace(0.0, 1.0, n)
    return lo * 2.0 ** (octaves * (pos if rising else 1.0 - pos))


def _sweep(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, tail = rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.25)
    n = int(rng.uniform(1.0, 2.5) * sr)
    track = _glide(
        rng, n, _loguniform(rng, 160.0, 320.0), rng.uniform(2.2, 3.0), attrs["direction"] == "rising"
    )
    sound = _partials(track, sr, [1.0], [1.0]) * _ramps(n, sr, 0.03, 0.06)
    return _frame_held(sound, lead, tail, sr)


def _whoosh(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    lead, tail = rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.25)
    n = int(rng.uniform(1.0, 2.5) * sr)
    lo, octaves = _loguniform(rng, 250.0, 400.0), rng.uniform(2.5, 3.3)
    rising = attrs["direction"] == "rising"
    width = rng.uniform(0.6, 0.9)

    def gain(f: np.ndarray, pos: np.ndarray) -> np.ndarray:
        pos = np.clip(pos, 0.0, 1.0)
        centre = lo * 2.0 ** (octaves * (pos if rising else 1.0 - pos))
        return _band_gain(f, centre, width)

    sound = _shaped_noise(rng, n, gain)
    swell = np.sin(np.pi * np.linspace(0.0, 1.0, n)) ** 0.5
    return _frame_held(sound * swell * _ramps(n, sr, 0.02, 0.05), lead, tail, sr)


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * sr))


def _bell_event(f0: float, rng: np.random.Generator, sr: int, tau: float) -> np.ndarray:
    n = int(tau * 6.9 * sr)  # −60 dB
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k, (ratio, amp) in enumerate(zip([1.0, 2.32, 4.25, 6.63], [1.0, 0.45, 0.25, 0.12], strict=True)):
        if ratio * f0 < 7600.0:
            out += (
                amp
                * np.sin(2 * np.pi * ratio * f0 * t + rng.uniform(0, 2 * np.pi))
                * _decay(n, sr, tau / (1 + 0.7 * k))
            )
    return out * _ramps(n, sr, 0.002, 0.01)


def _events(attrs: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    kind, count = attrs["kind"], int(attrs["count"])
    events: list[np.ndarray] = []
    lengths: list[float] = []  # audible length (to −40 dB) of each event, seconds
    f0 = _loguniform(rng, *TONE_HZ[attrs["pitch"]]) if "pitch" in attrs else 0.0
    for _ in range(count):
        if kind == "bell":
            tau = rng.uniform(0.11, 0.15)
            ev, length = _bell_event(f0 * rng.uniform(0.995, 1.005), rng, sr, tau), tau * 4.6
        elif kind == "beeps":
            length = rng.uniform(0.12, 0.22)
            n = int(length * sr)
            ev = np.sin(2 * np.pi * f0 * np.arange(n) / sr) * _ramps(n, sr, 0.006, 0.006)
        elif kind == "clicks":
            n = int(0.03 * sr)
            burst = rng.standard_normal(n) * _decay(n, sr, 0.007)
            ring_f = rng.uniform(2000.0, 4000.0)
            ring = np.sin(2 * np.pi * ring_f * np.arange(n) / sr) * _decay(n, sr, 0.008)
            ev, length = (
                (np.diff(np.concatenate([[0.0], burst])) + 0.8 * ring) * _ramps(n, sr, 0.0005, 0.005),
                0.03,
            )
        elif kind == "knocks":
            n = int(0.2 * sr)
            t = np.arange(n) / sr
            f = rng.uniform(110.0, 200.0)
            body = np.sin(2 * np.pi * f * t) * _decay(n, sr, 0.03)
            body += 0.5 * np.sin(2 * np.pi * 2.3 * f * t) * _decay(n, sr, 0.015)
            tick = scipy.signal.lfilter([0.2], [1.0, -0.8], rng.standard_normal(n)) * _decay(n, sr, 0.003)
            ev, length = (body + 0.3 * tick) * _ramps(n, sr, 0.001, 0.02), 0.14
        elif kind == "snare":
            n = int(0.4 * sr)
            t = np.arange(n) / sr
            f = rng.uniform(170.0, 230.0) * (1.0 + 0.15 * np.exp(-t / 0.02))
            body = np.sin(2 * np.pi * np.cumsum(f) / sr) * _decay(n, sr, 0.04)
            tau = rng.uniform(0.055, 0.075)
            rattle = _shaped_noise(
                rng, n, lambda fr, _t: (1.0 / (1.0 + (1200.0 / np.maximum(fr, 1.0)) ** 4))[:, None]
            )
            ev = (0.6 * body + 3.0 * rattle * _decay(n, sr, tau)) * _ramps(n, sr, 0.001, 0.02)
            length = tau * 4.6
        elif kind == "noise_burst":
            length = rng.uniform(0.25, 0.45)
            n = int(length * sr)
            ev = rng.standard_normal(n) * _ramps(n, sr, 0.008, 0.015)
        else:
            raise ValueError(f"kind {kind!r} has no count")
        events.append(ev)
        lengths.append(length)
    return _place_events(rng, events, lengths, sr)


_SYNTHS = {
    "sine": lambda a, r, s: _held_tone(a, r, s, "sine"),
    "square": lambda a, r, s: _held_tone(a, r, s, "square"),
    "hum": _hum,
    "siren": _siren,
    "hiss": _hiss,
    "rumble": _rumble,
    "sweep": _sweep,
    "whoosh": _whoosh,
}


def synthesize(attributes: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Render one clip with the given attributes.

    Args:
        attributes: a full attribute dict for one kind (see `sample_attributes`); validated.
        rng: the generator every random choice (timing, exact frequencies, noise) is drawn from.
        sample_rate: must be 16000 Hz (the frequency plan is laid out for an 8 kHz bandwidth).

    Returns:
        wav: `[T]` float32 at `sample_rate` Hz, 1.0 ≤ T / sample_rate ≤ 4.0, loudness within
        ±`LOUDNESS_JITTER_DB` of `LOUDNESS_LUFS[attributes["loudness"]]`, peak below 1.
    """
    validate_attributes(attributes)
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sfx synthesis runs at {SAMPLE_RATE} Hz, got sample_rate={sample_rate}")
    synth = _SYNTHS.get(attributes["kind"], _events)
    return finish(synth(attributes, rng, sample_rate), attributes, rng, sample_rate)


def finish(wav: np.ndarray, attributes: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A rendered sound `wav: [T]` as a corpus clip: cut to `MAX_DURATION_S`, padded to `MIN_DURATION_S`, brought to
    its loudness (±`LOUDNESS_JITTER_DB`, drawn with `rng`) and soft-limited below full scale; float32."""
    wav = wav[: int(MAX_DURATION_S * sample_rate)]
    if wav.size < MIN_DURATION_S * sample_rate:
        wav = np.pad(wav, (0, int(MIN_DURATION_S * sample_rate) - wav.size))
    target = LOUDNESS_LUFS[attributes["loudness"]] + rng.uniform(-LOUDNESS_JITTER_DB, LOUDNESS_JITTER_DB)
    wav = wav * 10.0 ** ((target - event_loudness(wav, sample_rate)) / 20.0)
    return _limit(wav).astype(np.float32)


def _limit(wav: np.ndarray, knee: float = 0.9) -> np.ndarray:
    """Soft-limit samples above `knee` so that |wav| < 1 (touches only rare noise peaks of loud clips)."""
    over = np.abs(wav) > knee
    if np.any(over):
        wav = wav.copy()
        wav[over] = np.sign(wav[over]) * (
            knee + (1.0 - knee) * np.tanh((np.abs(wav[over]) - knee) / (1.0 - knee))
        )
    return wav


# ---------------------------------------- the corpus
DEFAULT_NUM_CLIPS = 6400
SPLIT_PERIOD = 16  # of every 16 clips of a kind, 1 goes to test, 1 to val, 14 to train
LICENSE = "CC0-1.0"
TRAIN_CAPTIONS = (3, 5)  # captions per train row, inclusive range
EVAL_CAPTIONS = 3  # captions per val / test row


def source_line(seed: int) -> str:
    return f"audiodiff sfx synthesiser v{VERSION}, seed {seed}"


def plan(seed: int, num_clips: int) -> list[tuple[str, str]]:
    """(kind, split) of each clip index: kinds balanced then shuffled, splits stratified over kinds.

    Within each kind (clips in index order) positions 0, 16, 32, ... go to test and 1, 17, 33, ... to val,
    so 6,400 clips give 5,600 / 400 / 400 with every kind in every split.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    kinds = [KINDS[i] for i in rng.permutation(np.arange(num_clips) % len(KINDS))]
    splits = [""] * num_clips
    position = 0
    for kind in KINDS:
        for index in (i for i, k in enumerate(kinds) if k == kind):
            phase = position % SPLIT_PERIOD
            splits[index] = "test" if phase == 0 else ("val" if phase == 1 else "train")
            position += 1
    return list(zip(kinds, splits, strict=True))


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for every choice of clip `index` (independent of other clips and of workers)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def make_clip(seed: int, index: int, kind: str, split: str) -> tuple[dict, np.ndarray]:
    """Manifest row (without the audio path) and waveform `[T]` float32 of clip `index`."""
    rng = clip_rng(seed, index)
    attributes = sample_attributes(rng, kind=kind)
    wav = synthesize(attributes, rng)
    held_out = split != "train"
    captions = distinct_captions(render_caption, attributes, rng, held_out)
    row = {
        "caption": captions,
        "duration": round(wav.size / SAMPLE_RATE, 4),
        "sample_rate": SAMPLE_RATE,
        "split": split,
        "license": LICENSE,
        "source": source_line(seed),
        "attributes": attributes,
    }
    return row, wav


def distinct_captions(render: Callable[[dict, np.random.Generator, bool], str], attributes: dict,
                      rng: np.random.Generator, held_out: bool) -> list[str]:
    """`EVAL_CAPTIONS` (held out) or 3-5 (`TRAIN_CAPTIONS`, drawn from `rng`) distinct captions from `render`;
    fewer only when `render` keeps repeating itself (20 tries per caption)."""
    wanted = EVAL_CAPTIONS if held_out else int(rng.integers(TRAIN_CAPTIONS[0], TRAIN_CAPTIONS[1] + 1))
    captions: list[str] = []
    for _ in range(20 * wanted):
        caption = render(attributes, rng, held_out)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == wanted:
            break
    return captions


def render_caption(attributes: dict, rng: np.random.Generator, held_out: bool) -> str:
    """One caption naming every attribute of a clip, from `CAPTION_TEMPLATES_EVAL` if `held_out` else
    `CAPTION_TEMPLATES_TRAIN`; template and synonyms drawn with `rng`."""
    validate_attributes(attributes)
    return caption_for(attributes, rng, held_out)


def _write_clip(job: tuple[int, int, str, str], audio_dir: str) -> dict:
    seed, index, kind, split = job
    row, wav = make_clip(seed, index, kind, split)
    name = f"{index:06d}.wav"
    sf.write(Path(audio_dir) / name, wav, SAMPLE_RATE, subtype="PCM_16")
    return {"audio": f"audio/{name}", **row}


def corpus_summary(rows: list[dict], seed: int) -> dict:
    """Vocabulary, sound plan, per-split / per-kind / per-value counts and the caption template split."""
    splits = ("train", "val", "test")
    by_kind = {
        k: {s: sum(r["attributes"]["kind"] == k and r["split"] == s for r in rows) for s in splits}
        for k in KINDS
    }
    by_value: dict[str, dict[str, int]] = {}
    for name, values in ATTRIBUTE_VALUES.items():
        if name != "kind":
            by_value[name] = {str(v): sum(r["attributes"].get(name) == v for r in rows) for v in values}
    return {
        "name": "sfx",
        "version": VERSION,
        "seed": seed,
        "num_clips": len(rows),
        "sample_rate": SAMPLE_RATE,
        "license": LICENSE,
        "source": source_line(seed),
        "duration_s": {
            "min": min(r["duration"] for r in rows),
            "max": max(r["duration"] for r in rows),
            "total": round(sum(r["duration"] for r in rows), 1),
        },
        "attribute_values": {k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
        "kind_attributes": {k: list(attributes_of(k)) for k in KINDS},
        "loudness_lufs": LOUDNESS_LUFS,
        "loudness_measure": "BS.1770 gated loudness, 50 ms blocks (audiodiff.benchmarks.features)",
        "pitch_hz": {"tones (fundamental)": TONE_HZ, "hiss (band centre)": HISS_HZ},
        "splits": {s: sum(r["split"] == s for r in rows) for s in splits},
        "clips_per_kind": by_kind,
        "clips_per_value": by_value,
        "caption_templates": {
            "train": list(CAPTION_TEMPLATES_TRAIN),
            "held_out": list(CAPTION_TEMPLATES_EVAL),
        },
        "captions_per_row": {"train": list(TRAIN_CAPTIONS), "val": EVAL_CAPTIONS, "test": EVAL_CAPTIONS},
    }


def _readme(summary: dict) -> str:
    kinds = "\n".join(
        f"| {k} | {', '.join(a for a in summary['kind_attributes'][k] if a != 'kind')} | "
        f"{' / '.join(str(summary['clips_per_kind'][k][s]) for s in ('train', 'val', 'test'))} |"
        for k in KINDS
    )
    values = "\n".join(
        f"| {name} | {', '.join(f'{v}: {n}' for v, n in counts.items())} |"
        for name, counts in summary["clips_per_value"].items()
    )
    train = "\n".join(f"- `{t}`" for t in CAPTION_TEMPLATES_TRAIN)
    held = "\n".join(f"- `{t}`" for t in CAPTION_TEMPLATES_EVAL)
    splits = summary["splits"]
    return f"""# sfx: synthesised sound effects

{summary["num_clips"]} clips of 1–4 s, 16 kHz mono PCM_16 (`audio/NNNNNN.wav`), licence {LICENSE},
made by {summary["source"]}
(`python -m audiodiff.prepare corpus=sfx seed={summary["seed"]}`; same seed, same bytes).
`manifest.jsonl` has one row per clip with `caption` (a list), `split`, and `attributes`; `corpus.json`
holds everything below in machine-readable form. Splits: {splits["train"]} train / {splits["val"]} val /
{splits["test"]} test, stratified over kinds. Train rows carry {TRAIN_CAPTIONS[0]}–{TRAIN_CAPTIONS[1]}
captions from the training templates; val and test rows carry {EVAL_CAPTIONS} captions from the held-out
templates only. Attribute values are drawn uniformly per clip, so chance is 1 / number of values.

Loudness: quiet {LOUDNESS_LUFS["quiet"]:g} / loud {LOUDNESS_LUFS["loud"]:g} LUFS (±{LOUDNESS_JITTER_DB:g} dB,
{summary["loudness_measure"]}). Pitch: fundamentals {TONE_HZ} Hz (hiss band centres {HISS_HZ} Hz).
Events (count) are separated by at least {EVENT_GAP_S[0] * 1000:.0f} ms below −40 dB.

| kind | attributes besides kind | clips train / val / test |
|---|---|---|
{kinds}

| attribute | clips per value |
|---|---|
{values}

Read attributes back from audio with `audiodiff.benchmarks.sfx.attributes.extract_sfx`; accuracy table:
`python -m audiodiff.benchmarks.check corpus=sfx`.

## Training caption templates
{train}

## Held-out caption templates (val and test)
{held}
"""


def render_rows(write: Callable[[tuple], dict], jobs: list[tuple], workers: int) -> list[dict]:
    """`write(job)` for every job, in order: in this process (`workers` 1) or in a pool of `workers` processes."""
    if workers == 1:
        return [write(job) for job in jobs]
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(write, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers)))))


def build(out_dir: Path, *, seed: int = 0, num_clips: int | None = None, workers: int = 2) -> Path:
    """Synthesise the corpus into `out_dir` and return its manifest path.

    Writes `audio/NNNNNN.wav`, `manifest.jsonl`, `corpus.json` and `README.md` into a sibling temporary folder
    and moves it into place at the end, replacing an earlier build of this corpus; a half-finished build never
    looks complete. Each clip comes from its own seeded generator: the result is the same for any `workers`.

    Raises:
        FileExistsError: `out_dir` exists, is not empty and does not hold an sfx corpus.
        ValueError: `num_clips` or `workers` is below 1.
    """
    out_dir = Path(out_dir)
    num_clips = DEFAULT_NUM_CLIPS if num_clips is None else int(num_clips)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus.json").exists():
        raise FileExistsError(
            f"{out_dir}: exists and is not an sfx corpus (no corpus.json); refusing to replace it"
        )
    jobs = [(seed, i, kind, split) for i, (kind, split) in enumerate(plan(seed, num_clips))]
    with atomic_folder(out_dir) as work:
        (work / "audio").mkdir()
        write = functools.partial(_write_clip, audio_dir=str(work / "audio"))
        rows = render_rows(write, jobs, workers)
        summary = corpus_summary(rows, seed)
        (work / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
        (work / "README.md").write_text(_readme(summary))
        write_manifest(work / "manifest.jsonl", rows)
    return out_dir / "manifest.jsonl"
