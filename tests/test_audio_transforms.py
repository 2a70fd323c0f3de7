"""audiodiff.audio.transforms and audiodiff.audio.loudness.

Loudness references come from pyloudnorm's meter called directly on numpy data.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
import torch

from audiodiff.audio.loudness import integrated_loudness, normalize_loudness
from audiodiff.audio.transforms import crop_or_pad, random_offset, resample, to_channels


def _sine(seconds: float, sample_rate: int, freq: float, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return amp * torch.sin(2 * math.pi * freq * t)


def _dominant_hz(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wav.double() * torch.hann_window(wav.shape[-1], dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * sample_rate / wav.shape[-1]


# --- resample --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_resample_keeps_frequency_and_amplitude(freq: float) -> None:
    wav = _sine(1.0, 44100, freq).float()
    out = resample(wav, 44100, 16000)
    assert out.shape == (16000,) and out.dtype == torch.float32
    assert abs(_dominant_hz(out, 16000) - freq) <= 1.0
    middle = out[2000:-2000]  # away from the filter's edge transients
    assert float(middle.pow(2).mean().sqrt()) == pytest.approx(0.5 / math.sqrt(2), rel=2e-3)
    assert float(middle.abs().max()) == pytest.approx(0.5, abs=5e-3)


def test_resample_removes_content_above_new_nyquist() -> None:
    out = resample(_sine(1.0, 44100, 12000.0), 44100, 16000)  # 12 kHz > 8 kHz Nyquist
    assert float(out[2000:-2000].abs().max()) < 1e-3


def test_resample_batched_and_dtype() -> None:
    gen = torch.Generator().manual_seed(0)
    wav = torch.randn(2, 3, 2205, generator=gen, dtype=torch.float64)
    out = resample(wav, 22050, 8000)
    assert out.shape == (2, 3, 800) and out.dtype == torch.float64
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], resample(wav[i, j], 22050, 8000))
    half = resample(wav.to(torch.float16), 22050, 8000)
    assert half.dtype == torch.float16 and half.shape == (2, 3, 800)


def test_resample_edge_cases() -> None:
    one = torch.tensor([[0.5], [-0.5]])
    assert resample(one, 44100, 16000).shape == (2, 1)
    assert resample(torch.zeros(3, 0), 44100, 16000).shape == (3, 0)
    same = torch.randn(4, 10)
    out = resample(same, 16000, 16000)
    torch.testing.assert_close(out, same)
    assert out.data_ptr() != same.data_ptr()
    with pytest.raises(TypeError, match="floating-point"):
        resample(torch.zeros(10, dtype=torch.int16), 16000, 8000)
    with pytest.raises(ValueError, match="positive"):
        resample(torch.zeros(10), 0, 8000)


# --- channels, crops -------------------------------------------------------------------------------------


def test_to_channels() -> None:
    stereo = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    torch.testing.assert_close(to_channels(stereo, 1), torch.tensor([[2.0, 3.0, 4.0]]))
    mono = torch.tensor([[1.0, -1.0]])
    torch.testing.assert_close(to_channels(mono, 3), mono.repeat(3, 1))
    assert to_channels(stereo, 2) is stereo
    with pytest.raises(ValueError, match="cannot convert 2 channels to 3"):
        to_channels(stereo, 3)
    with pytest.raises(ValueError, match=r"expects wav \[C, T\]"):
        to_channels(torch.zeros(5), 1)


def test_crop_or_pad() -> None:
    wav = torch.arange(10.0).reshape(2, 5)
    piece, mask = crop_or_pad(wav, 3, offset=1)
    torch.testing.assert_close(piece, torch.tensor([[1.0, 2.0, 3.0], [6.0, 7.0, 8.0]]))
    assert mask.tolist() == [True, True, True]

    padded, mask = crop_or_pad(wav, 7, offset=2)
    torch.testing.assert_close(
        padded, torch.tensor([[2.0, 3.0, 4.0, 0, 0, 0, 0], [7.0, 8.0, 9.0, 0, 0, 0, 0]])
    )
    assert mask.tolist() == [True, True, True, False, False, False, False]
    assert mask.dtype == torch.bool

    with pytest.raises(ValueError, match=r"offset must lie in \[0, 5\]"):
        crop_or_pad(wav, 3, offset=6)
    with pytest.raises(ValueError, match="length must be >= 1"):
        crop_or_pad(wav, 0)


def test_random_offset_range_and_determinism() -> None:
    draws = [random_offset(10, 7, torch.Generator().manual_seed(s)) for s in range(200)]
    assert set(draws) == {0, 1, 2, 3}
    again = [random_offset(10, 7, torch.Generator().manual_seed(s)) for s in range(200)]
    assert draws == again
    assert random_offset(5, 7, torch.Generator()) == 0
    assert random_offset(7, 7, torch.Generator()) == 0


# --- loudness --------------------------------------------------------------------------------------------


def _noise(seconds: float, sample_rate: int, channels: int, scale: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(channels, int(seconds * sample_rate), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize(("target", "channels"), [(-23.0, 1), (-16.0, 2), (-30.0, 2)])
def test_normalize_loudness_hits_target(target: float, channels: int) -> None:
    sample_rate = 16000
    wav = _noise(3.0, sample_rate, channels, scale=0.01)
    out = normalize_loudness(wav, sample_rate, target_lufs=target)
    reference = pyloudnorm.Meter(sample_rate).integrated_loudness(out.numpy().T)
    assert abs(reference - target) < 0.5
    assert abs(integrated_loudness(out, sample_rate) - reference) < 1e-6
    assert out.shape == wav.shape and out.dtype == wav.dtype


def test_peak_limit_wins_over_target() -> None:
    sample_rate = 16000
    clicks = torch.zeros(1, 3 * sample_rate)
    clicks[0, ::4000] = 0.1
    out = normalize_loudness(clicks, sample_rate, target_lufs=-5.0, peak=0.9)
    assert float(out.abs().max()) == pytest.approx(0.9)
    assert integrated_loudness(out, sample_rate) < -5.0


def test_silence_and_short_clips() -> None:
    sample_rate = 16000
    silence = torch.zeros(2, sample_rate)
    assert integrated_loudness(silence, sample_rate) == -math.inf
    torch.testing.assert_close(normalize_loudness(silence, sample_rate), silence)
    assert integrated_loudness(torch.zeros(1, 100), sample_rate) == -math.inf

    # A short clip of steady noise: the ungated fallback agrees with the gated measure of a long one.
    long = _noise(3.0, sample_rate, 2, scale=0.05, seed=1)
    short = long[:, : int(0.25 * sample_rate)]
    assert integrated_loudness(short, sample_rate) == pytest.approx(
        integrated_loudness(long, sample_rate), abs=0.5
    )
    out = normalize_loudness(short, sample_rate, target_lufs=-20.0)
    assert integrated_loudness(out, sample_rate) == pytest.approx(-20.0, abs=1e-6)
    assert math.isfinite(integrated_loudness(long[:, :1], sample_rate))


def test_loudness_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1 to 5 channels"):
        integrated_loudness(torch.zeros(6, 16000), 16000)
    with pytest.raises(ValueError, match="NaN/Inf"):
        integrated_loudness(torch.tensor([[0.0, float("nan")] * 8000]), 16000)
    with pytest.raises(ValueError, match="zero samples"):
        integrated_loudness(torch.zeros(1, 0), 16000)


def test_integrated_loudness_matches_pyloudnorm_stereo() -> None:
    wav = _noise(2.0, 48000, 2, scale=0.1, seed=3)
    wav[1] *= 0.5
    expected = pyloudnorm.Meter(48000).integrated_loudness(np.ascontiguousarray(wav.numpy().T))
    assert integrated_loudness(wav, 48000) == pytest.approx(expected, abs=1e-9)


def test_generated_clips_that_reach_full_scale_are_scaled_to_peak_099() -> None:
    from audiodiff.generate import guard_peak

    quiet = 0.5 * torch.sin(torch.linspace(0, 100, 1000))[None]
    out, gain = guard_peak(quiet)
    assert out is quiet and gain == 1.0
    loud = torch.cat([quiet, torch.tensor([[1.6, -2.0]])], dim=-1)
    out, gain = guard_peak(loud)
    assert gain == pytest.approx(0.99 / 2.0) and float(out.abs().max()) == pytest.approx(0.99)
    torch.testing.assert_close(out, loud * gain)
