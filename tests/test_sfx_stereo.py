"""The sfx_stereo corpus: the sfx clips panned, the pan in every caption, and its extractor reading pan back."""

import json

import numpy as np
import pytest
import soundfile as sf

from audiodiff.audio.loudness import event_loudness
from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.attributes import corpus_metrics
from audiodiff.benchmarks.sfx.corpus import make_clip, plan
from audiodiff.benchmarks.sfx.stereo import PAN_WORDS, PANS, make_stereo_clip, pan_clip, pan_gains
from audiodiff.benchmarks.sfx.stereo_attributes import extract_sfx_stereo, level_difference_db, pan_of
from audiodiff.data.manifest import read_manifest


def test_pan_law_keeps_power_and_centres_at_zero():
    for p in np.linspace(-1, 1, 9):
        left, right = pan_gains(float(p))
        assert left**2 + right**2 == pytest.approx(1.0)
    assert pan_gains(0.0)[0] == pytest.approx(pan_gains(0.0)[1])
    assert pan_gains(-1.0) == pytest.approx((1.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match=r"pan position must lie in \[-1, 1\], got 1.5"):
        pan_gains(1.5)


@pytest.mark.parametrize("index", range(6))
def test_a_stereo_clip_is_the_mono_clip_panned_with_its_loudness(index):
    kind, split = plan(0, 64)[index]
    mono_row, mono = make_clip(0, index, kind, split)
    row, wav = make_stereo_clip(0, index, kind, split)
    assert wav.shape == (2, mono.size) and wav.dtype == np.float32
    pan = row["attributes"].pop("pan")
    assert pan in PANS and row["attributes"] == mono_row["attributes"]
    louder = wav[int(np.argmax(np.abs(wav).sum(axis=1)))]
    np.testing.assert_allclose(louder / np.abs(louder).max(), mono / np.abs(mono).max(), atol=1e-5)
    # Constant power: BS.1770 over both channels gives the mono clip's loudness.
    assert event_loudness(wav, 16000) == pytest.approx(event_loudness(mono, 16000), abs=0.05)
    difference = level_difference_db(wav)
    assert {"left": difference > 12.0, "right": difference < -12.0, "centre": abs(difference) < 1.5}[pan]
    # Each caption is a mono caption with the pan phrased once: first on held-out rows, last on training rows.
    assert len(row["caption"]) == len(mono_row["caption"])
    for caption, mono_caption in zip(row["caption"], mono_row["caption"], strict=True):
        phrases = [w for w in PAN_WORDS[pan] if w in caption.lower()]
        assert phrases, caption
        if split == "train":
            assert caption.startswith(mono_caption)
        else:
            assert caption.endswith(mono_caption) and caption.lower().startswith(phrases[0])


def test_corpus_builds_the_same_bytes_and_leaves_the_mono_clip_order(tmp_path):
    a = ensure_corpus("sfx_stereo", tmp_path / "a", num_clips=20, workers=1)
    b = ensure_corpus("sfx_stereo", tmp_path / "b", num_clips=20, workers=2)
    assert a.read_text() == b.read_text()
    rows = read_manifest(a)
    for row in rows[:5]:
        wav, sr = sf.read(row.audio, dtype="float32")
        assert sr == 16000 and wav.shape[1] == 2
        assert (b.parent / "audio" / row.audio.name).read_bytes() == row.audio.read_bytes()
    summary = json.loads((a.parent / "corpus.json").read_text())
    assert summary["name"] == "sfx_stereo" and summary["channels"] == 2
    assert summary["attribute_values"]["pan"] == list(PANS)
    assert sum(summary["clips_per_value"]["pan"].values()) == 20


def test_extractor_reads_every_attribute_of_clean_clips():
    extract, score = corpus_metrics("sfx_stereo")
    predicted, truth = [], []
    for index, (kind, split) in enumerate(plan(0, 90)):
        row, wav = make_stereo_clip(0, index, kind, split)
        predicted.append(extract(wav, 16000))
        truth.append(row["attributes"])
    scores = score(predicted, truth)
    assert scores["pan"]["accuracy"] == 1.0 and scores["pan"]["chance"] == pytest.approx(1 / 3)
    assert scores["loudness"]["accuracy"] == 1.0
    assert scores["kind"]["accuracy"] >= 0.95


def test_pan_is_read_from_the_level_difference_whatever_the_resampling():
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    assert extract_sfx_stereo(pan_clip(tone, -0.8), 16000)["pan"] == "left"
    assert extract_sfx_stereo(pan_clip(tone, 0.8), 16000)["pan"] == "right"
    assert extract_sfx_stereo(pan_clip(tone, 0.0), 16000)["pan"] == "centre"
    import soxr

    at_44k = soxr.resample(pan_clip(tone, 0.75).T, 16000, 44100).T
    assert extract_sfx_stereo(at_44k, 44100)["pan"] == "right"
    assert [pan_of(d) for d in (6.5, 5.5, -5.5, -6.5)] == ["left", "centre", "centre", "right"]
    assert level_difference_db(np.zeros((2, 4000), dtype=np.float32)) == 0.0


def test_extractor_refuses_anything_but_two_channels():
    with pytest.raises(ValueError, match=r"expected wav \[2, T\] \(left, right\), got shape \(16000,\)"):
        extract_sfx_stereo(np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"got shape \(6, 100\)"):
        extract_sfx_stereo(np.zeros((6, 100), dtype=np.float32), 16000)
