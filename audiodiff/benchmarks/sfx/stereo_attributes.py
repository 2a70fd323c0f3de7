"""Read the attributes of an `sfx_stereo` clip back from its two channels.

- pan: the level difference between the channels, `10 log10(E_left / E_right)` over the clip's sounding frames
  (within 30 dB of its loudest frame, in either channel); "left" above +`PAN_SPLIT_DB`, "right" below
  −`PAN_SPLIT_DB`, else "centre". The corpus puts left and right clips 12.4–22.1 dB apart and centred ones within
  1.4 dB, so the 6 dB split sits between them with margin on both sides.
- loudness: BS.1770 (50 ms blocks) over both channels, as the corpus set it.
- every other sfx attribute (kind, pitch, count, direction, envelope): :func:`extract_sfx` on the louder
  channel, scaled to the clip's two-channel loudness. For a panned clip that is the mono clip itself; reading one
  channel rather than a downmix keeps a generated clip's uncorrelated channels from cancelling.
"""

from __future__ import annotations

import numpy as np

from audiodiff.audio.loudness import event_loudness
from audiodiff.benchmarks.features import mono_16k
from audiodiff.benchmarks.score import score_predictions
from audiodiff.benchmarks.sfx.attributes import extract_sfx
from audiodiff.benchmarks.sfx.stereo import ATTRIBUTE_VALUES, CHANNELS

PAN_SPLIT_DB = 6.0
ACTIVE_DB = 30.0  # frames within this many dB of the loudest frame count as sounding
_FRAME = 512  # samples at 16 kHz (32 ms) per energy frame


def _stereo_16k(wav: object, sample_rate: int) -> np.ndarray:
    """`wav: [2, T]` numpy array or tensor → `[2, T]` float32 at 16 kHz; anything else is refused."""
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().float().numpy()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != CHANNELS:
        raise ValueError(f"extract_sfx_stereo: expected wav [{CHANNELS}, T] (left, right), got shape {x.shape}")
    return np.stack([mono_16k(channel, sample_rate, "extract_sfx_stereo") for channel in x])


def level_difference_db(wav: np.ndarray) -> float:
    """Left-minus-right level in dB of `wav: [2, T]` over its sounding frames (0 for silence)."""
    usable = wav.shape[1] // _FRAME * _FRAME
    if usable == 0:
        usable = wav.shape[1]
    frames = wav[:, :usable].reshape(2, -1, min(_FRAME, usable)).astype(np.float64)
    energy = np.square(frames).sum(axis=2)  # [2, frames]
    total = energy.sum(axis=0)
    if not np.any(total > 0):
        return 0.0
    active = total > total.max() * 10.0 ** (-ACTIVE_DB / 10.0)
    left, right = energy[0, active].sum(), energy[1, active].sum()
    return float(10.0 * np.log10(max(left, 1e-20) / max(right, 1e-20)))


def pan_of(difference_db: float) -> str:
    """"left", "centre" or "right" for a left-minus-right level difference in dB."""
    if difference_db > PAN_SPLIT_DB:
        return "left"
    if difference_db < -PAN_SPLIT_DB:
        return "right"
    return "centre"


def extract_sfx_stereo(wav: object, sample_rate: int, reference: dict | None = None) -> dict[str, str | int]:
    """Every attribute of an sfx_stereo clip, read from its audio alone.

    Args:
        wav: `[2, T]` (left, right) numpy array or torch tensor, float samples in [-1, 1].
        sample_rate: Hz (resampled to 16 kHz when different).
        reference: the attributes a prompt asked for, or None (as for :func:`extract_sfx`).

    Returns:
        :func:`extract_sfx`'s attributes (read as the module docstring says) plus `pan`.
    """
    x = _stereo_16k(wav, sample_rate)
    louder = x[int(np.argmax(np.square(x.astype(np.float64)).sum(axis=1)))]
    loudness = event_loudness(x, 16000)
    own = event_loudness(louder, 16000)
    if np.any(louder):
        louder = louder * np.float32(10.0 ** ((loudness - own) / 20.0))
    out = extract_sfx(louder, 16000, reference)
    out["pan"] = pan_of(level_difference_db(x))
    return out


def score_stereo(predicted: list[dict], truth: list[dict]) -> dict[str, dict[str, float]]:
    """Accuracy, n and chance per sfx_stereo attribute (`audiodiff.benchmarks.score.score_predictions`)."""
    return score_predictions(predicted, truth, ATTRIBUTE_VALUES)
