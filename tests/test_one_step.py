"""One-step estimates of real clips (audiodiff.evaluation.one_step): lengths, where the noise enters, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from debug_model import debug_export

from audiodiff.evaluation.one_step import one_step_estimates, round_trip
from audiodiff.pipeline import AudioDiffusionPipeline


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return AudioDiffusionPipeline.from_pretrained(debug_export(tmp_path_factory.mktemp("model") / "export"),
                                                  watermark=False)


def _tone(pipe: AudioDiffusionPipeline, seconds: float) -> np.ndarray:
    n = int(seconds * pipe.sample_rate)
    return (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(n) / pipe.sample_rate)).astype(np.float32)


def test_estimates_keep_each_clips_length_and_noise_enters_only_through_t(pipe):
    clip, short = _tone(pipe, 0.5), _tone(pipe, 0.3)
    clean = one_step_estimates(pipe, [clip, clip, short], ["a tone"] * 3, 0.0)
    assert [w.shape for w in clean] == [clip.shape, clip.shape, short.shape]
    assert np.isfinite(np.concatenate(clean)).all()
    np.testing.assert_array_equal(clean[0], clean[1])  # at t = 0 the input is the clip itself, whatever the seed
    noisy = one_step_estimates(pipe, [clip, clip], ["a tone"] * 2, 0.5)
    assert np.abs(noisy[0] - noisy[1]).max() > 1e-4  # clip i is noised from seed i
    again = one_step_estimates(pipe, [clip], ["a tone"], 0.5)
    np.testing.assert_array_equal(again[0], noisy[0])


def test_bad_input_is_named(pipe):
    with pytest.raises(ValueError, match="2 clips but 1 captions"):
        one_step_estimates(pipe, [_tone(pipe, 0.3)] * 2, ["a tone"], 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got 1.5"):
        one_step_estimates(pipe, [_tone(pipe, 0.3)], ["a tone"], 1.5)


def test_round_trip_keeps_the_length_and_stays_close_to_the_clip(pipe):
    clip = _tone(pipe, 0.5)
    back = round_trip(pipe, clip)
    assert back.shape == clip.shape and np.isfinite(back).all()
    spectrum = np.abs(np.fft.rfft(back))
    peak_hz = np.argmax(spectrum) * pipe.sample_rate / clip.size
    assert abs(peak_hz - 440.0) < 40.0, "the tone comes back at its pitch"
