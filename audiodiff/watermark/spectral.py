"""A keyed spread-transform dither-modulation watermark in the STFT magnitude, built in: no downloaded weights.

Where it lives: the mark is computed at an internal rate of 16 kHz, whatever the clip's rate, inside 300-3500 Hz:
the band that survives halving a 16 kHz model's rate (Nyquist 4 kHz) and that low-bitrate MP3 and Opus spend
their bits on. The band is cut into cells of 3 STFT bins (94 Hz) × 4 hops (32 ms).

What it changes: the log energy of each cell, by at most a factor (1 ± g) in magnitude. Two cells of one band
that follow each other in time form a symbol; a keyed ±1 spreading vector u (one +1, one -1) projects their log
energies to one number p = u·f / √2, and the mark moves p to the nearest point of a keyed lattice
{d + bit · Δ/2 + kΔ} (spread-transform dither modulation: Chen & Wornell (2001), "Quantization index modulation";
the log-magnitude feature as in Kalantari et al. (2009), "Robust multiplicative patchwork method for audio
watermarking"). Why this and not additive spread spectrum (Cox et al. (1997)): at the loudness this mark may have,
an additive pattern is buried under the host's own fluctuations, which the detector cannot predict; a quantised
feature carries no host interference, so a few hundred symbols decide. Because u sums to zero, a gain change or
any fixed EQ leaves p untouched. Half of each 2.048 s period's symbols (a keyed choice) carry a fixed sync value
that detection looks for; the others carry the 16 message bits, each in turn.

How loud: the gain is limited per 20 ms frame (:func:`audiodiff.watermark.perceptual.frame_gain`) so that every
frame's SNR is at least `snr_db`, and frames below -60 dBFS stay unmarked. Embedding iterates three times, each pass
measuring what the previous one achieved, so the limit and the STFT's overlap do not leave symbols half moved.

Detection resamples to 16 kHz, measures the cells at every alignment (4 quarter-hop shifts × 4 hop phases × 64 cell
offsets, so cutting,
codec delays and excerpts do not matter) and sums cos(2π (p - d) / Δ) over the symbols of cells at most 50 dB below
the loudest (a message symbol's phase doubled, which ignores its bit), each weighted by how far it stands above
that floor. In an unmarked clip these are cosines of phases spread uniformly (the dither is keyed), so the weighted
sum has mean 0 and variance Σw² / 2: the score is that sum over sqrt(Σw² / 2), and the p-value is its Gaussian
tail, Bonferroni-corrected over the 1024 alignments (checked on thousands of unmarked clips: bench/watermark.py).

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

from audiodiff.watermark.perceptual import frame_gain
from audiodiff.watermark.types import Detection, WatermarkError, check_bits

RATE = 16_000  # Hz: the rate the mark is computed and detected at
N_FFT = 512  # 32 ms window
HOP = 128  # 8 ms hop: Hann windows at a quarter overlap add to a constant
LOW_HZ, HIGH_HZ = 100.0, 3500.0  # the marked band
BINS_PER_BAND = 3  # cell height: 3 × 31.25 Hz
HOPS_PER_CELL = 4  # cell width: 4 hops = 32 ms
SPREAD = 2  # cells per symbol (consecutive in time, one band)
SUB_HOP = 4  # detection also tries the STFT grid shifted by quarter hops (codec delays are not whole hops)
PERIOD = 64  # cells per pattern period in time (2.048 s)
MESSAGE_BITS = 16
STEP = 0.16  # Δ: lattice step of a symbol's projection, in nepers of cell power
FLOOR_DB = -50.0  # cells this far below the clip's loudest are not used
WEIGHT_DB = 25.0  # dB above the floor from which a symbol counts fully
ITERATIONS = 3  # embedding passes
DEFAULT_KEY = "audiodiff"
MIN_SECONDS = 0.5  # shorter clips are not judged (p = 1)


@dataclass(frozen=True)
class _Layout:
    """The key's pattern over one period: per band b and symbol s (PERIOD / SPREAD per band)."""

    spread: np.ndarray  # [bands, PERIOD] ±1: u, each symbol's SPREAD cells summing to zero
    dither: np.ndarray  # [bands, PERIOD // SPREAD] in [0, STEP)
    role: np.ndarray  # [bands, PERIOD // SPREAD] int: -1 sync, i ≥ 0 message bit i


def _rng(key: str, purpose: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{key}\0{purpose}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def band_edges() -> list[tuple[int, int]]:
    """STFT bin ranges [lo, hi) of the marked bands (at 16 kHz, 512-point FFT)."""
    bin_hz = RATE / N_FFT
    first, last = math.ceil(LOW_HZ / bin_hz), math.floor(HIGH_HZ / bin_hz)
    return [(b, b + BINS_PER_BAND) for b in range(first, last - BINS_PER_BAND + 2, BINS_PER_BAND)]


def _layout(key: str) -> _Layout:
    bands, symbols = len(band_edges()), PERIOD // SPREAD
    rng = _rng(key, "layout")
    base = np.array([1.0, -1.0] * (SPREAD // 2))
    spread = np.stack([np.concatenate([rng.permutation(base) for _ in range(symbols)]) for _ in range(bands)])
    dither = rng.uniform(0.0, STEP, (bands, symbols))
    order = rng.permutation(bands * symbols)
    role = np.full(bands * symbols, -1)
    message = order[: bands * symbols // 2]
    role[message] = np.arange(message.size) % MESSAGE_BITS
    return _Layout(spread, dither, role.reshape(bands, symbols))


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


def _symbols(energy: np.ndarray, layout: _Layout, offset: int, floor: float) -> tuple[np.ndarray, ...]:
    """Projections of every whole symbol when cell k sits at pattern column (k + offset) mod PERIOD.

    Returns (projection [bands, S], symbol index within the period [S], first cell [S], weight [bands, S]: 0 for a
    symbol with a cell at or below `floor`, else in [0.05, 1])."""
    bands, cells = energy.shape
    first = (-offset) % SPREAD
    count = max(0, (cells - first) // SPREAD)
    starts = first + SPREAD * np.arange(count)
    index = np.add.outer(starts, np.arange(SPREAD))  # [S, SPREAD] cells
    columns = (index + offset) % PERIOD
    e = energy[:, index]  # [bands, S, SPREAD]
    u = layout.spread[:, columns]  # [bands, S, SPREAD]
    projection = (u * np.log(e + floor * 1e-3)).sum(-1) / math.sqrt(SPREAD)
    usable = (e > floor).all(-1)
    # weight: how far the symbol's quietest cell stands above the floor (0 at the floor, 1 from 25 dB above it),
    # so that cells an added noise would swamp count less
    level = 10 * np.log10(np.maximum(e.min(-1), floor * 1e-3) / floor)
    weight = np.where(usable, np.clip(level / WEIGHT_DB, 0.05, 1.0), 0.0)
    return projection, columns[:, 0] // SPREAD, starts, weight


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
        if clean.shape[-1] < HOPS_PER_CELL * SPREAD * HOP * sample_rate / RATE:
            return wav.clone()  # shorter than one symbol (256 ms): nothing to carry the mark
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
        """The relative magnitude change [bins, frames] that moves each symbol of `power` [bins, frames] (alignment
        0) onto its lattice point, at most ±max_gain per cell."""
        energy = cell_energy(power, self.edges, 0)
        floor = energy.max(initial=0.0) * 10 ** (FLOOR_DB / 10)
        out = np.zeros_like(power)
        if floor <= 0:
            return torch.from_numpy(out)
        projection, symbol, starts, weight = _symbols(energy, self.layout, 0, floor)
        usable = weight > 0
        band = np.arange(len(self.edges))[:, None]
        target_offset = self.layout.dither[band, symbol] + _bit_shift(self.layout.role[band, symbol], bits)
        move = projection - target_offset
        move = move - STEP * np.round(move / STEP)  # distance past the nearest lattice point
        move = np.where(usable, -move, 0.0)
        per_cell = np.zeros_like(energy)
        for k in range(SPREAD):
            columns = (starts + k) % PERIOD
            per_cell[:, starts + k] = move * self.layout.spread[:, columns] / math.sqrt(SPREAD)
        gain = np.clip(np.exp(per_cell / 2.0) - 1.0, -self.max_gain, self.max_gain)  # power change → magnitude
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
        best: tuple[float, int, int, np.ndarray] | None = None
        alignments = SUB_HOP * HOPS_PER_CELL * PERIOD
        powers = [_stft(mono[:, shift * HOP // SUB_HOP:])[0].abs().pow(2).numpy() for shift in range(SUB_HOP)]
        for power, phase in ((power, phase) for power in powers for phase in range(HOPS_PER_CELL)):
            energy = cell_energy(power, self.edges, phase)
            floor = energy.max(initial=0.0) * 10 ** (FLOOR_DB / 10)
            if floor <= 0:
                continue
            for offset in range(PERIOD):
                projection, symbol, _, weight = _symbols(energy, self.layout, offset, floor)
                usable = weight > 0
                band = np.arange(len(self.edges))[:, None]
                role = self.layout.role[band, symbol]
                cosine = np.cos(2 * np.pi * (projection - self.layout.dither[band, symbol]) / STEP)
                # a message symbol sits on the lattice or half a step off it: doubling its phase ignores the bit
                either = np.where(role < 0, cosine, 2 * cosine**2 - 1)
                count = int(usable.sum())
                if count < 8:
                    continue
                z = float((weight * either).sum() / math.sqrt((weight**2).sum() / 2.0))
                if best is None or z > best[0]:
                    bit_sums = np.array([(weight * cosine)[role == i].sum() for i in range(MESSAGE_BITS)])
                    best = (z, count, phase * PERIOD + offset, bit_sums)
        if best is None:
            return Detection(self.name, False, 0.0, 1.0, None, note="too quiet or too short: not judged")
        z, _, _, bit_sums = best
        p = min(1.0, alignments * 0.5 * math.erfc(z / math.sqrt(2.0)))
        marked = p < self.alpha
        bits = tuple(int(s < 0) for s in bit_sums) if marked else None
        return Detection(self.name, marked, z, p, bits)


def _bit_shift(role: np.ndarray, bits: tuple[int, ...]) -> np.ndarray:
    """Lattice shift of each symbol: 0 for sync symbols, bit · Δ/2 for message symbols."""
    values = np.array(bits, dtype=np.float64)
    return np.where(role < 0, 0.0, values[np.maximum(role, 0)] * STEP / 2)
