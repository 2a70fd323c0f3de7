"""A keyed dither-modulation watermark on STFT energy ratios, built in: no downloaded weights.

Where it lives: the mark is computed at an internal rate of 16 kHz, whatever the clip's rate, inside 100-3500 Hz:
the band that survives halving a 16 kHz model's rate (Nyquist 4 kHz) and that low-bitrate MP3 and Opus spend
their bits on. The band is cut into cells of 3 STFT bins (94 Hz) × 4 hops (32 ms).

What it changes: the energy of cells, by at most a factor (1 ± g) in magnitude. A symbol is a few cells (one band,
two cells in time: 64 ms) split by the key into a + side and a - side; its feature is the log ratio of the + side's
energy to the - side's, and the mark moves that feature to the nearest point of a keyed lattice
{d + bit · Δ/2 + kΔ} (dither modulation: Chen & Wornell (2001), "Quantization index modulation"; on an energy
ratio like the multiplicative patchwork of Kalantari et al. (2009)). Why this and not additive spread spectrum
(Cox et al. (1997)): at the loudness this mark may have, an additive pattern is buried under the host's own
fluctuations, which a blind detector cannot predict; a quantised feature carries no host interference, so a few
dozen symbols decide. A ratio of cells of one band ignores gain changes and any fixed EQ. Half of each 2.048 s
period's symbols (a keyed choice) carry a fixed sync value that detection looks for; the others carry the 16
message bits, each in turn.

How loud: the gain is limited per 20 ms frame (:func:`audiodiff.watermark.perceptual.frame_gain`) so that every
frame's SNR is at least `snr_db`, and frames below -60 dBFS stay unmarked. Embedding iterates three times, each pass
measuring what the previous one achieved, so the limit and the STFT's overlap do not leave symbols half moved.

Detection resamples to 16 kHz, measures the cells at every alignment (4 quarter-hop shifts × 4 hop phases × 64
cell offsets, so cutting, codec delays and excerpts do not matter) and sums cos(2π (p - d) / Δ) over the symbols
at most 50 dB below the loudest cell, in frames not below -66 dBFS (never marked; 6 dB spare for a gain change), a
message symbol's phase doubled (which ignores its bit), each weighted by how far it stands above that floor; and
again over only the symbols within 30 dB of the loudest cell, and within 20 dB, since after added noise the quiet
symbols (never marked, or drowned) dilute the sum. In an unmarked clip these are cosines of phases spread uniformly
(the dither is keyed), so the weighted sum has mean 0 and variance Σw² / 2: the score is that sum over
sqrt(Σw² / 2), and the p-value is its Gaussian tail, Bonferroni-corrected twice over: within two families of tests,
the clip as it was marked (alignment 0: 3 floors) and every alignment (1024 × 3), and across the two (× 2). A clip
that kept its start (a file as written, gain, resampling, noise, and MP3 and Opus as libsndfile decodes them, which
remove the codec's delay) then needs a score of about 3.4 instead of 5, so about half the symbols; excerpts still
meet the search (checked on thousands of unmarked clips: bench/watermark.py).

The pattern repeats every period, so in a clip marked with one key and checked with another, the same pair of
dithers meets once per period and the scores of clips much longer than a period are inflated (a false match
between keys, not with unmarked audio).

Anyone who holds the key can detect the mark and, with effort, remove or forge it: the default key is public, so
the default mark says "made with audiodiff" to anyone; set your own key to make a mark only you can check.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audiodiff.watermark.perceptual import SILENCE_DBFS, frame_gain
from audiodiff.watermark.types import Detection, WatermarkError, check_bits

RATE = 16_000  # Hz: the rate the mark is computed and detected at
N_FFT = 512  # 32 ms window
HOP = 128  # 8 ms hop: Hann windows at a quarter overlap add to a constant
LOW_HZ, HIGH_HZ = 100.0, 3500.0  # the marked band
BINS_PER_BAND = 3  # cell height: 3 × 31.25 Hz
HOPS_PER_CELL = 4  # cell width: 4 hops = 32 ms
SYMBOL_BANDS = 1  # a symbol spans 1 band (94 Hz) ...
SYMBOL_COLUMNS = 2  # ... × 2 cells in time (64 ms); larger symbols measured worse on the sfx corpus
SUB_HOP = 4  # detection also tries the STFT grid shifted by quarter hops (codec delays are not whole hops)
PERIOD = 64  # cells per pattern period in time (2.048 s)
MESSAGE_BITS = 16
STEP = 0.3  # Δ: lattice step of a symbol's log energy ratio (nepers); beyond what a 31 dB mark can always
#             reach in one symbol, which buys robustness where the host leaves room (measured: 0.16-0.45)
FLOOR_DB = -50.0  # cells this far below the clip's loudest are not used
DETECT_FLOORS_DB = (-50.0, -30.0, -20.0)  # detection also scores only the louder symbols: after added noise,
#                                          the quiet ones (never marked, or drowned) only dilute the score
GAIN_SLACK_DB = 6.0  # detection keeps cells down to 6 dB below the silence level (a clip turned down since)
WEIGHT_DB = 25.0  # dB above the floor from which a symbol counts fully
ITERATIONS = 3  # embedding passes
DEFAULT_KEY = "audiodiff"
MIN_SECONDS = 0.5  # shorter clips are not judged (p = 1)


@dataclass(frozen=True)
class _Layout:
    """The key's pattern over one period. Bands are grouped SYMBOL_BANDS at a time (a remainder is not used); a
    symbol is one group × SYMBOL_COLUMNS consecutive cell columns."""

    sign: np.ndarray  # [groups · SYMBOL_BANDS, PERIOD] ±1: which side of its symbol's ratio a cell is on; each
    #                   band of each symbol has as many +1 as -1 cells (a gain or EQ change cancels)
    dither: np.ndarray  # [groups, PERIOD // SYMBOL_COLUMNS] in [0, STEP)
    role: np.ndarray  # [groups, PERIOD // SYMBOL_COLUMNS] int: -1 sync, i ≥ 0 message bit i


def _rng(key: str, purpose: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{key}\0{purpose}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def band_edges() -> list[tuple[int, int]]:
    """STFT bin ranges [lo, hi) of the marked bands (at 16 kHz, 512-point FFT), a whole number of symbol groups."""
    bin_hz = RATE / N_FFT
    first, last = math.ceil(LOW_HZ / bin_hz), math.floor(HIGH_HZ / bin_hz)
    edges = [(b, b + BINS_PER_BAND) for b in range(first, last - BINS_PER_BAND + 2, BINS_PER_BAND)]
    return edges[: len(edges) // SYMBOL_BANDS * SYMBOL_BANDS]


def _layout(key: str) -> _Layout:
    bands, symbols = len(band_edges()), PERIOD // SYMBOL_COLUMNS
    groups = bands // SYMBOL_BANDS
    rng = _rng(key, "layout")
    base = np.array([1.0, -1.0] * (SYMBOL_COLUMNS // 2))
    sign = np.stack([np.concatenate([rng.permutation(base) for _ in range(symbols)]) for _ in range(bands)])
    dither = rng.uniform(0.0, STEP, (groups, symbols))
    order = rng.permutation(groups * symbols)
    role = np.full(groups * symbols, -1)
    message = order[: groups * symbols // 2]
    role[message] = np.arange(message.size) % MESSAGE_BITS
    return _Layout(sign, dither, role.reshape(groups, symbols))


def _stft(wav: Tensor) -> Tensor:
    """wav [C, T] at 16 kHz → complex [C, N_FFT/2 + 1, frames]."""
    return torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=wav.dtype), center=True,
                      return_complex=True)


def _resample(wav: Tensor, orig: int, target: int) -> Tensor:
    from audiodiff.audio.transforms import resample

    return resample(wav, orig, target)


def cell_energy(power: np.ndarray, edges: list[tuple[int, int]], phase: int) -> np.ndarray:
    """Cell energies [bands, cells] from STFT power [bins, frames]: cell k spans frames
    [start + 8k, start + 8k + 8) with start = (8 - phase) mod 8 (alignment phase 0 starts at frame 0)."""
    start = (HOPS_PER_CELL - phase) % HOPS_PER_CELL
    cells = max(0, (power.shape[1] - start) // HOPS_PER_CELL)
    bands = np.stack([power[lo:hi].sum(0) for lo, hi in edges])
    return bands[:, start: start + cells * HOPS_PER_CELL].reshape(len(edges), cells, HOPS_PER_CELL).sum(-1)


def frame_dbfs(power: np.ndarray) -> np.ndarray:
    """Level of each STFT frame in dB relative to full scale 1.0 (mean square), from power [bins, frames]
    (Parseval for a one-sided Hann-windowed spectrum)."""
    window = np.hanning(N_FFT + 1)[:-1]
    mean_square = 2.0 * power.sum(0) / (N_FFT * (window**2).sum())
    return 10.0 * np.log10(np.maximum(mean_square, 1e-30))


def cell_frames_dbfs(power: np.ndarray, phase: int) -> np.ndarray:
    """The quietest frame level (dBFS) within each cell's frames: [cells], aligned as `cell_energy`."""
    start = (HOPS_PER_CELL - phase) % HOPS_PER_CELL
    cells = max(0, (power.shape[1] - start) // HOPS_PER_CELL)
    levels = frame_dbfs(power)[start: start + cells * HOPS_PER_CELL]
    return levels.reshape(cells, HOPS_PER_CELL).min(-1)


def _symbols(energy: np.ndarray, layout: _Layout, offset: int, floor: float) -> tuple[np.ndarray, ...]:
    """Every whole symbol's feature when cell k sits at pattern column (k + offset) mod PERIOD: the log ratio of
    its + cells' summed energy to its - cells' (loud cells count most; silent ones do not disturb it).

    energy: [bands, cells]; floor: the least symbol energy that counts. Returns (feature [groups, S], symbol index
    within the period [S], first cell [S], weight [groups, S]: 0 for a symbol at or below `floor`, else from 0.05
    to 1 with its level above the floor)."""
    bands, cells = energy.shape
    first = (-offset) % SYMBOL_COLUMNS
    count = max(0, (cells - first) // SYMBOL_COLUMNS)
    starts = first + SYMBOL_COLUMNS * np.arange(count)
    index = np.add.outer(starts, np.arange(SYMBOL_COLUMNS))  # [S, SYMBOL_COLUMNS] cells
    columns = (index + offset) % PERIOD
    shape = (bands // SYMBOL_BANDS, SYMBOL_BANDS, count, SYMBOL_COLUMNS)
    e = energy[:, index].reshape(shape)
    sign = layout.sign[:, columns].reshape(shape)
    plus, minus = (np.where(sign > 0, e, 0.0).sum((1, 3)), np.where(sign < 0, e, 0.0).sum((1, 3)))
    tiny = floor * 1e-3 + 1e-30
    feature = np.log(plus + tiny) - np.log(minus + tiny)
    return feature, columns[:, 0] // SYMBOL_COLUMNS, starts, _weight(plus + minus, floor)


def _symbols_at(energy: np.ndarray, layout: _Layout, offsets: np.ndarray,
                floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_symbols` for several offsets that group cells alike ((-offset) mod SYMBOL_COLUMNS equal), at once.

    Returns (feature [O, groups, S], symbol index within the period [O, S], symbol energy [groups, S])."""
    bands, cells = energy.shape
    first = int((-offsets[0]) % SYMBOL_COLUMNS)
    count = max(0, (cells - first) // SYMBOL_COLUMNS)
    index = np.add.outer(first + SYMBOL_COLUMNS * np.arange(count), np.arange(SYMBOL_COLUMNS))  # [S, C]
    columns = (index[None] + offsets[:, None, None]) % PERIOD  # [O, S, C]
    shape = (bands // SYMBOL_BANDS, SYMBOL_BANDS, count, SYMBOL_COLUMNS)
    e = energy[:, index].reshape(shape)  # [G, B, S, C]
    sign = layout.sign[:, columns].transpose(1, 0, 2, 3).reshape(len(offsets), *shape)  # [O, G, B, S, C]
    plus = np.where(sign > 0, e[None], 0.0).sum((2, 4))
    total = e.sum((1, 3))
    tiny = floor * 1e-3 + 1e-30
    feature = np.log(plus + tiny) - np.log(total[None] - plus + tiny)
    return feature, columns[:, :, 0] // SYMBOL_COLUMNS, total


def _weight(total: np.ndarray, floor: float) -> np.ndarray:
    """A symbol's weight from its energy: 0 at or below `floor`, else from 0.05 to 1 with its level above it."""
    level = 10 * np.log10(np.maximum(total, floor * 1e-3 + 1e-30) / floor)
    return np.where(total > floor, np.clip(level / WEIGHT_DB, 0.05, 1.0), 0.0)


class SpectralWatermark:
    """The built-in watermark (module docstring). key: any text (the default is public); snr_db: the least
    per-20-ms-frame SNR of the mark; max_gain: the largest relative magnitude change of a cell; alpha: the
    p-value below which a clip counts as marked."""

    name = "spectral"
    bits = MESSAGE_BITS

    def __init__(self, key: str = DEFAULT_KEY, snr_db: float = 31.0, max_gain: float = 0.15,
                 alpha: float = 1e-3) -> None:
        if not isinstance(key, str) or not key:
            raise WatermarkError(f"watermark key: expected a non-empty text, got {key!r}")
        if not 0.0 < alpha < 1.0:
            raise WatermarkError(f"alpha: expected a p-value threshold in (0, 1), got {alpha}")
        self.key, self.snr_db, self.max_gain, self.alpha = key, float(snr_db), float(max_gain), float(alpha)
        self.layout = _layout(key)
        self.edges = band_edges()

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the key (12 hex digits), to tell keys apart in sidecars."""
        return hashlib.sha256(f"audiodiff-watermark\0{self.key}".encode()).hexdigest()[:12]

    def embed(self, wav: Tensor, sample_rate: int, bits: Sequence[int] = (0,) * MESSAGE_BITS) -> Tensor:
        """wav [C, T] or [B, C, T] at sample_rate Hz (at least 8 kHz) → the same shape with the mark added (each
        channel marked from its own content); `bits`: the 16-bit message (e.g. part of the model's hash)."""
        bits = check_bits(bits, MESSAGE_BITS)
        if sample_rate < 2 * HIGH_HZ + 500:
            raise WatermarkError(f"sample rate {sample_rate} Hz cannot hold the mark's band (up to {HIGH_HZ:.0f} Hz); "
                                 f"expected at least 8000 Hz")
        if wav.dim() not in (2, 3) or not torch.is_floating_point(wav):
            raise WatermarkError(f"embed: expected float samples [C, T] or [B, C, T], got shape "
                                 f"{tuple(wav.shape)} of {wav.dtype}")
        if not bool(torch.isfinite(wav).all()):
            raise WatermarkError("embed: the audio holds NaN or infinite samples")
        clean = wav.detach().double().cpu().reshape(-1, wav.shape[-1])
        if clean.shape[-1] < HOPS_PER_CELL * SYMBOL_COLUMNS * HOP * sample_rate / RATE:
            return wav.clone()  # shorter than one symbol (128 ms): nothing to carry the mark
        mark = torch.zeros_like(clean)
        for _ in range(ITERATIONS):
            current = _resample(clean + mark, sample_rate, RATE)
            spec = _stft(current)
            change = torch.stack([self._cell_change(s.abs().pow(2).numpy(), bits) for s in spec])
            step = torch.istft(spec * change, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64),
                               center=True, length=current.shape[-1])
            step = _resample(step, RATE, sample_rate)[..., : clean.shape[-1]]
            mark = mark + torch.nn.functional.pad(step, (0, clean.shape[-1] - step.shape[-1]))
            mark = mark * frame_gain(clean, mark, sample_rate, self.snr_db, 1.0)
        return (clean + mark).reshape(wav.shape).to(dtype=wav.dtype, device=wav.device)

    def _cell_change(self, power: np.ndarray, bits: tuple[int, ...]) -> Tensor:
        """The relative magnitude change [bins, frames] that moves each symbol of `power` [bins, frames]
        (alignment 0) onto its lattice point: its + cells' power scaled by exp(δ/2), its - cells' by exp(-δ/2),
        at most ±max_gain in magnitude per cell."""
        energy = _audible(cell_energy(power, self.edges, 0), power, 0)
        floor = _floor(energy)
        out = np.zeros_like(power)
        if floor <= 0:
            return torch.from_numpy(out)
        feature, symbol, starts, weight = _symbols(energy, self.layout, 0, floor)
        group = np.arange(self.layout.dither.shape[0])[:, None]
        target = self.layout.dither[group, symbol] + _bit_shift(self.layout.role[group, symbol], bits)
        move = feature - target
        move = np.where(weight > 0, -(move - STEP * np.round(move / STEP)), 0.0)  # to the nearest lattice point
        log_power = np.zeros_like(energy)
        for k in range(SYMBOL_COLUMNS):
            cells = starts + k
            log_power[:, cells] = np.repeat(move, SYMBOL_BANDS, axis=0) / 2 * self.layout.sign[:, cells % PERIOD]
        gain = np.clip(np.exp(log_power / 2.0) - 1.0, -self.max_gain, self.max_gain)  # power → magnitude
        frames = gain.shape[1] * HOPS_PER_CELL
        for b, (lo, hi) in enumerate(self.edges):
            out[lo:hi, :frames] = np.repeat(gain[b], HOPS_PER_CELL)[None]
        return torch.from_numpy(out)

    def detect(self, wav: Tensor, sample_rate: int) -> Detection:
        """Whether wav ([T] or [C, T], mixed to mono) at sample_rate Hz carries this key's mark: z-score,
        p-value and, when marked, the message bits."""
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise WatermarkError(f"detect: expected samples [T] or [C, T], got shape {tuple(wav.shape)}")
        if sample_rate < 2 * HIGH_HZ:
            raise WatermarkError(f"sample rate {sample_rate} Hz cannot hold the mark's band (up to {HIGH_HZ:.0f} Hz)")
        if wav.shape[-1] < MIN_SECONDS * sample_rate:
            return Detection(self.name, False, 0.0, 1.0, None, note=f"shorter than {MIN_SECONDS} s: not judged")
        mono = _resample(wav.detach().double().cpu().mean(0, keepdim=True), sample_rate, RATE)
        best: tuple[float, np.ndarray, np.ndarray] | None = None  # over every alignment: (z, w·cos, role)
        aligned: tuple[float, np.ndarray, np.ndarray] | None = None  # at alignment 0
        powers = [_stft(mono[:, shift * HOP // SUB_HOP:])[0].abs().pow(2).numpy() for shift in range(SUB_HOP)]
        for power, phase in ((power, phase) for power in powers for phase in range(HOPS_PER_CELL)):
            energy = _audible(cell_energy(power, self.edges, phase), power, phase, GAIN_SLACK_DB)
            floor = _floor(energy)
            if floor <= 0:
                continue
            for parity in range(SYMBOL_COLUMNS):
                offsets = np.arange(PERIOD)[(-np.arange(PERIOD)) % SYMBOL_COLUMNS == parity]
                feature, symbol, total = _symbols_at(energy, self.layout, offsets, floor)
                group = np.arange(self.layout.dither.shape[0])[None, :, None]
                role = self.layout.role[group, symbol[:, None, :]]  # [O, G, S]
                cosine = np.cos(2 * np.pi * (feature - self.layout.dither[group, symbol[:, None, :]]) / STEP)
                # a message symbol sits on the lattice or half a step off it: doubling its phase ignores the bit
                either = np.where(role < 0, cosine, 2 * cosine**2 - 1)
                for floor_db in DETECT_FLOORS_DB:
                    weight = _weight(total, floor * 10 ** ((floor_db - FLOOR_DB) / 10))
                    if int((weight > 0).sum()) < 8:
                        continue
                    scores = (weight * either).sum((1, 2)) / math.sqrt((weight**2).sum() / 2.0)  # [O]
                    top = int(np.argmax(scores))
                    if best is None or scores[top] > best[0]:
                        best = (float(scores[top]), weight * cosine[top], role[top])
                    if power is powers[0] and phase == 0 and offsets[0] == 0 and (
                            aligned is None or scores[0] > aligned[0]):
                        aligned = (float(scores[0]), weight * cosine[0], role[0])
        if best is None:
            return Detection(self.name, False, 0.0, 1.0, None, note="too quiet or too short: not judged")
        floors = len(DETECT_FLOORS_DB)
        p_best = SUB_HOP * HOPS_PER_CELL * PERIOD * floors * _tail(best[0])
        p_aligned = floors * _tail(aligned[0]) if aligned is not None else 1.0
        z, weighted, role = aligned if aligned is not None and p_aligned < p_best else best
        bit_sums = np.bincount(role[role >= 0], weights=weighted[role >= 0], minlength=MESSAGE_BITS)
        p = min(1.0, 2.0 * min(p_aligned, p_best))  # two families
        marked = p < self.alpha
        bits = tuple(int(s < 0) for s in bit_sums) if marked else None
        return Detection(self.name, marked, z, p, bits)


def _tail(z: float) -> float:
    """One-sided Gaussian tail P(Z > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _audible(energy: np.ndarray, power: np.ndarray, phase: int, slack_db: float = 0.0) -> np.ndarray:
    """`energy` [bands, cells] with the cells of frames below the silence level (less `slack_db`) zeroed: they were
    never marked."""
    return np.where(cell_frames_dbfs(power, phase) >= SILENCE_DBFS - slack_db, energy, 0.0)


def _floor(energy: np.ndarray) -> float:
    """The least energy a symbol needs to count: FLOOR_DB below the loudest cell."""
    return float(energy.max(initial=0.0)) * 10 ** (FLOOR_DB / 10)


def _bit_shift(role: np.ndarray, bits: tuple[int, ...]) -> np.ndarray:
    """Lattice shift of each symbol: 0 for sync symbols, bit · Δ/2 for message symbols."""
    values = np.array(bits, dtype=np.float64)
    return np.where(role < 0, 0.0, values[np.maximum(role, 0)] * STEP / 2)
