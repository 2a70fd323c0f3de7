"""The built-in watermark: inaudible by a segmental-SNR measure, found after everyday edits, absent from unmarked
audio, carried by every pipeline output unless turned off, and checked from the command line."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from debug_model import debug_export

from audiodiff.pipeline import AudioDiffusionPipeline, describe
from audiodiff.watermark import WatermarkError, describe_mark, hex_bits, watermarker
from audiodiff.watermark.__main__ import main as detect_main
from audiodiff.watermark.perceptual import segmental_snr
from audiodiff.watermark.spectral import SpectralWatermark

RATE = 16_000
BITS = (1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1)


def beeps_and_noise(seconds: float = 3.0, seed: int = 0) -> torch.Tensor:
    """[1, T] at 16 kHz: 150 ms beeps (880 Hz) and noise bursts at -20 dBFS with true silence between them."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    wav = torch.zeros_like(t)
    for k, start in enumerate(np.arange(0.1, seconds - 0.3, 0.4)):
        on = (t >= start) & (t < start + 0.15 + 0.1 * (k % 2))
        burst = torch.sin(2 * math.pi * 880 * t) if k % 2 == 0 else torch.randn(t.shape, generator=g,
                                                                                   dtype=torch.float64)
        wav = wav + on * 0.1 * burst
    return wav.unsqueeze(0)


def noise_clip(seconds: float = 3.0, seed: int = 0) -> torch.Tensor:
    """[1, T]: brown-ish noise with a slow loudness swell, a stand-in for rain or wind."""
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(int(seconds * RATE), generator=g, dtype=torch.float64)
    coloured = torch.from_numpy(np.convolve(white.numpy(), np.ones(8) / 8, mode="same"))
    envelope = 0.5 + 0.5 * torch.sin(torch.linspace(0, 3, coloured.numel(), dtype=torch.float64)) ** 2
    return (0.2 * coloured * envelope).unsqueeze(0)


def frame_snrs(clean: np.ndarray, marked: np.ndarray, length: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: per-20-ms-frame signal power and mark power with numpy (frames from sample 0)."""
    n = len(clean) // length * length
    c = clean[:n].reshape(-1, length)
    m = (marked[:n] - clean[:n]).reshape(-1, length)
    return (c**2).mean(1), (m**2).mean(1)


@pytest.mark.parametrize("make", [beeps_and_noise, noise_clip])
def test_every_audible_frame_keeps_30_db_segmental_snr_and_silent_frames_stay_unmarked(make):
    clean = make()
    marked = SpectralWatermark().embed(clean, RATE, BITS)
    signal, mark = frame_snrs(clean[0].numpy(), marked[0].numpy())
    audible = 10 * np.log10(np.maximum(signal, 1e-30)) >= -60
    assert audible.any() and (~audible).any() if make is beeps_and_noise else audible.all()
    snr = 10 * np.log10(signal[audible] / np.maximum(mark[audible], 1e-300))
    assert snr.min() >= 30.0
    assert np.all(mark[~audible] == 0.0)  # silence between beeps: not a single sample changed
    worst, silent_marked = segmental_snr(clean, marked, RATE)
    assert worst >= 30.0 and silent_marked == 0
    assert float((marked - clean).abs().max()) > 0  # something was marked


@pytest.mark.parametrize("make", [beeps_and_noise, noise_clip])
def test_marked_clips_are_found_with_their_message_and_unmarked_ones_are_not(make):
    mark = SpectralWatermark()
    clean = make(seed=1)
    marked = mark.embed(clean, RATE, BITS)
    found = mark.detect(marked, RATE)
    assert found.marked and found.p_value < 1e-6 and found.bits == BITS
    assert found.message_hex == "b2e5"
    unmarked = mark.detect(clean, RATE)
    assert not unmarked.marked and unmarked.bits is None and unmarked.p_value > 1e-3
    assert not SpectralWatermark(key="someone else").detect(marked, RATE).marked


def test_the_mark_survives_gain_delay_resampling_noise_and_excerpts():
    mark = SpectralWatermark()
    marked = mark.embed(noise_clip(4.0, seed=2), RATE, BITS)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(marked.shape, generator=g, dtype=torch.float64)
    noise *= marked.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() * 10 ** (-20 / 20)
    from audiodiff.audio.transforms import resample

    edits = {
        "+6 dB": marked * 2.0, "-6 dB": marked * 0.5,
        "delayed 1234 samples": torch.nn.functional.pad(marked, (1234, 0)),
        "8 kHz and back": resample(resample(marked, RATE, 8000), 8000, RATE),
        "noise at 20 dB SNR": marked + noise,
        "a 1 s excerpt": marked[:, 20_000:36_000],
    }
    for name, wav in edits.items():
        assert mark.detect(wav, RATE).marked, name


def test_a_clip_that_kept_its_start_is_judged_at_alignment_zero_and_a_shifted_one_by_the_search():
    """Two families of tests, Bonferroni within and across: alignment 0 (3 floors) and every alignment (1024 × 3).
    A clip as marked scores at alignment 0, p = 2 · 3 · P(Z > z); delayed by 1234 samples it meets the search,
    p = 2 · 3072 · P(Z > z): the same score needs about 3.4 instead of 5 where the clip kept its start."""
    mark = SpectralWatermark()
    marked = mark.embed(beeps_and_noise(1.6, seed=0), RATE, BITS)
    tail = lambda z: 0.5 * math.erfc(z / math.sqrt(2.0))  # noqa: E731
    as_marked = mark.detect(marked, RATE)
    delayed = mark.detect(torch.nn.functional.pad(marked, (1234, 0)), RATE)
    assert as_marked.marked and as_marked.bits == BITS
    assert as_marked.p_value == pytest.approx(2 * 3 * tail(as_marked.score), rel=1e-9)
    assert delayed.p_value == pytest.approx(min(1.0, 2 * 3072 * tail(delayed.score)), rel=1e-9)
    assert 4.0 < delayed.score < as_marked.score


def test_scoring_the_louder_symbols_too_lifts_a_sparse_clip_out_of_added_noise(monkeypatch):
    """Noise fills a sparse clip's silences with symbols that were never marked: the detector's louder floors leave
    them out of one of its scores (measured here: z 8-9 with the -50 dB floor alone, 12-13 with all three)."""
    import audiodiff.watermark.spectral as spectral

    mark = SpectralWatermark()
    marked = mark.embed(beeps_and_noise(4.0, seed=0), RATE, BITS)
    noise = torch.randn(marked.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = marked + noise * marked.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() * 10 ** (-20 / 20)
    every_floor = mark.detect(noisy, RATE)
    monkeypatch.setattr(spectral, "DETECT_FLOORS_DB", (spectral.FLOOR_DB,))
    one_floor = mark.detect(noisy, RATE)
    assert every_floor.marked and every_floor.bits == BITS
    assert every_floor.score > 1.25 * one_floor.score


def test_other_rates_and_channels_are_marked_and_detected():
    mark = SpectralWatermark()
    from audiodiff.audio.transforms import resample

    clean = resample(noise_clip(3.0, seed=4), RATE, 44_100).expand(2, -1).contiguous()
    marked = mark.embed(clean, 44_100, BITS)
    assert marked.shape == clean.shape and marked.dtype == clean.dtype
    assert segmental_snr(clean, marked, 44_100)[0] >= 30.0
    assert mark.detect(marked, 44_100).bits == BITS
    batch = torch.stack([noise_clip(2.0, seed=5), noise_clip(2.0, seed=6)]).float()  # [B, C, T]
    out = mark.embed(batch, RATE, BITS)
    assert out.shape == batch.shape and all(mark.detect(out[i], RATE).marked for i in range(2))


def test_bad_input_is_named():
    mark = SpectralWatermark()
    with pytest.raises(WatermarkError, match="expected 16 bits of 0 or 1"):
        mark.embed(noise_clip(1.0), RATE, (1, 0, 2))
    with pytest.raises(WatermarkError, match="sample rate 4000 Hz cannot hold"):
        mark.embed(noise_clip(1.0), 4000, BITS)
    with pytest.raises(WatermarkError, match="NaN or infinite"):
        mark.embed(torch.full((1, 16000), float("nan")), RATE, BITS)
    with pytest.raises(WatermarkError, match="watermark method: expected one of"):
        watermarker("echo")
    with pytest.raises(WatermarkError, match="non-empty text"):
        SpectralWatermark(key="")
    with pytest.raises(WatermarkError, match="hex digits"):
        hex_bits("zz", 16)
    short = mark.detect(torch.zeros(1, 4000), RATE)
    assert not short.marked and "shorter than" in short.note
    silent = mark.detect(torch.zeros(1, 32000), RATE)
    assert not silent.marked and silent.p_value == 1.0


def test_audioseal_without_its_package_says_what_is_missing():
    try:
        import audioseal  # noqa: F401
    except ImportError:
        with pytest.raises(WatermarkError, match="needs the audioseal package"):
            watermarker("audioseal")
    else:
        pytest.skip("audioseal is installed")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return debug_export(tmp_path_factory.mktemp("model") / "export")


def test_pipeline_outputs_carry_the_models_id_unless_watermarking_is_off(export):
    pipe = AudioDiffusionPipeline.from_pretrained(export)
    plain = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    out = pipe("rain on a roof", duration=3.0, steps=2, seed=1)
    raw = plain("rain on a roof", duration=3.0, steps=2, seed=1)
    assert out.watermark == describe_mark(pipe.watermark, pipe.watermark_bits)
    assert out.watermark["message"] == pipe.base_hash[:4] and raw.watermark is None
    assert describe(out, "rain on a roof", 0, "m")["watermark"]["method"] == "spectral"
    assert describe(raw, "rain on a roof", 0, "m")["watermark"] is False
    assert segmental_snr(raw.audio[0], out.audio[0], out.sample_rate)[0] >= 30.0
    assert not torch.equal(out.audio, raw.audio)
    if 10 * math.log10(float(raw.audio.pow(2).mean())) > -50:  # the random model made something audible
        found = pipe.watermark.detect(out.audio[0], out.sample_rate)
        assert found.marked and found.bits == pipe.watermark_bits
    edited = pipe.variation(raw.audio[0], "rain", strength=0.5, steps=2, seed=2)
    assert edited.watermark == out.watermark


def test_detect_command_prints_one_line_per_file(tmp_path, capsys):
    mark = SpectralWatermark()
    sf.write(tmp_path / "marked.wav", mark.embed(noise_clip(seed=7), RATE, BITS)[0].numpy(), RATE)
    sf.write(tmp_path / "plain.flac", noise_clip(seed=7)[0].numpy(), RATE)
    assert detect_main(["detect", str(tmp_path / "marked.wav"), str(tmp_path / "plain.flac")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'marked.wav'}: marked (score ") and lines[0].endswith("message b2e5")
    assert lines[1].startswith(f"{tmp_path / 'plain.flac'}: not marked (score ") and "message" not in lines[1]
    assert detect_main(["detect", str(tmp_path / "missing.wav")]) == 1
    assert "missing.wav: error:" in capsys.readouterr().out
    assert detect_main(["detect", "--method", "audioseal", str(tmp_path / "plain.flac")]) in (0, 2)


class _FakeAudioSeal:
    """Stands in for the audioseal package: a generator adding a fixed tone, a detector reporting it."""

    class AudioSeal:
        @staticmethod
        def load_generator(name):
            class Generator:
                def eval(self):
                    return self

                def get_watermark(self, wav, sample_rate, message=None):
                    assert wav.dim() == 3 and wav.shape[1] == 1 and sample_rate == 16_000
                    assert message.shape == (wav.shape[0], 16)
                    t = torch.arange(wav.shape[-1]) / sample_rate
                    return 1e-3 * torch.sin(2 * math.pi * 1000 * t).expand_as(wav)

            return Generator()

        @staticmethod
        def load_detector(name):
            class Detector:
                def eval(self):
                    return self

                def detect_watermark(self, wav, sample_rate):
                    assert wav.shape[:2] == (1, 1) and sample_rate == 16_000
                    spectrum = torch.fft.rfft(wav[0, 0])
                    peak = float(spectrum.abs()[int(1000 * wav.shape[-1] / sample_rate)])
                    return (0.99 if peak > 1.0 else 0.01), torch.tensor([BITS])

            return Detector()


def test_the_audioseal_adapter_resamples_marks_each_channel_and_reports(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "audioseal", _FakeAudioSeal)
    mark = watermarker("audioseal")
    clean = torch.zeros(2, 44_100)
    marked = mark.embed(clean, 44_100, BITS)
    assert marked.shape == clean.shape and float(marked.abs().max()) > 5e-4  # both channels, back at 44.1 kHz
    found = mark.detect(marked, 44_100)
    assert found.marked and found.bits == BITS and found.p_value == pytest.approx(0.01)
    assert not mark.detect(clean, 44_100).marked
    with pytest.raises(WatermarkError, match="give no key with method audioseal"):
        watermarker("audioseal", key="mine")
