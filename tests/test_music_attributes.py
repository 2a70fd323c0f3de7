"""Music attribute extractors: accuracy on freshly rendered clips, tempo and key of signals with known
answers, scoring, model files and input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff import cli
from audiodiff.benchmarks.attributes import asked_attributes, corpus_metrics
from audiodiff.benchmarks.music import corpus as music
from audiodiff.benchmarks.music import fit as fit_music
from audiodiff.benchmarks.music.attributes import (
    CHROMA_PARTS,
    KEY_LABELS,
    ONSET_RATE,
    KeyProfiles,
    ModelMissingError,
    analyse_music,
    chroma_parts,
    estimate_tempo,
    extract_music,
    key_from_logits,
    load_style_model,
    score_music,
    tempo_following,
)
from audiodiff.benchmarks.music.fit import fit_key_profiles
from audiodiff.benchmarks.music.instrument_net import MIN_FRAMES, InstrumentNet
from audiodiff.benchmarks.music.midi import PITCH_CLASSES
from audiodiff.data.manifest import read_manifest

SR = 16000
# Fewest correct answers out of 28 fresh clips (4 per style): the 95% target less about one clip of
# small-sample allowance.
MIN_CORRECT = {"style": 26, "tempo": 26, "key": 26, "mode": 26, "lead": 26, "chords": 26}


@pytest.fixture(scope="module")
def fresh() -> tuple[list[dict], list[dict]]:
    """Predictions and truth for 28 clips of a seed the models never saw (4 per style)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        manifest = music.build(Path(tmp) / "music", seed=2024, num_clips=28, workers=2)
        rows = read_manifest(manifest)
        predicted = [extract_music(*sf.read(r.audio, dtype="float32")) for r in rows]
    return predicted, [dict(r.attributes) for r in rows]


def test_extractors_read_fresh_clips_back(fresh):
    predicted, truth = fresh
    scores = score_music(predicted, truth)
    correct = {name: round(s["accuracy"] * s["n"]) for name, s in scores.items()}
    assert all(s["n"] == 28 for s in scores.values())
    for name, minimum in MIN_CORRECT.items():
        assert correct[name] >= minimum, (name, correct[name], scores)


def test_extractor_output_follows_the_vocabulary(fresh):
    predicted, _ = fresh
    for p in predicted:
        assert p["style"] in music.STYLE_NAMES and p["key"] in PITCH_CLASSES
        assert p["mode"] in ("major", "minor")
        assert p["lead"] in music.INSTRUMENTS and p["chords"] in music.INSTRUMENTS
        lo, hi = music.TEMPO_RANGES[p["style"]]
        assert lo * 0.96 <= p["tempo"] <= hi * 1.04
        assert len(p["instruments"]) == 3


def test_registry_dispatches_to_the_music_extractors():
    assert corpus_metrics("music") == (extract_music, score_music)


def _click_track(bpm: float, seconds: float, accent_every: int = 1) -> np.ndarray:
    """Short noise bursts every beat of ``bpm`` (louder every ``accent_every``-th)."""
    rng = np.random.default_rng(0)
    wav = np.zeros(int(seconds * SR), dtype=np.float32)
    burst = (rng.standard_normal(160) * np.exp(-np.arange(160) / 30)).astype(np.float32)
    for i, t in enumerate(np.arange(0, seconds - 0.02, 60.0 / bpm)):
        start = int(round(t * SR))
        wav[start : start + 160] += burst * (1.0 if i % accent_every == 0 else 0.5)
    return wav


@pytest.mark.parametrize("bpm", [63.0, 97.0, 131.0, 172.0])
def test_tempo_of_a_click_track(bpm):
    env = analyse_music(_click_track(bpm, 8.0)).onset_envelope
    assert env.size == pytest.approx(8.0 * ONSET_RATE, abs=2)
    low, high = bpm / 1.6, bpm * 1.2  # ranges narrower than an octave that contain the true tempo
    assert estimate_tempo(env, (low, high)) == pytest.approx(bpm, rel=0.01)


def test_the_style_range_settles_octave_errors():
    # Eighth-note clicks at 140 per minute: a 70 BPM ballad or a 140 BPM techno track, by the range.
    env = analyse_music(_click_track(140.0, 8.0, accent_every=2)).onset_envelope
    assert estimate_tempo(env, music.TEMPO_RANGES["ballad"]) == pytest.approx(70.0, rel=0.01)
    assert estimate_tempo(env, music.TEMPO_RANGES["techno"]) == pytest.approx(140.0, rel=0.01)


def test_the_tempo_is_also_read_within_the_asked_style():
    clicks = _click_track(140.0, 8.0, accent_every=2)
    assert extract_music(clicks, SR, reference={"style": "ballad"})["tempo_in_asked_style"] == pytest.approx(70.0,
                                                                                                        rel=0.01)
    assert "tempo_in_asked_style" not in extract_music(clicks, SR)


def test_tempo_following_is_zero_for_style_typical_tempi_and_clear_when_the_bpm_is_followed():
    rng = np.random.default_rng(0)
    truth = [{"style": style, "tempo": float(rng.integers(*music.TEMPO_RANGES[style]))}
             for style in music.TEMPO_RANGES for _ in range(8)]
    followed = [{"tempo_in_asked_style": t["tempo"] * (1 + 0.02 * rng.standard_normal())} for t in truth]
    typical = [{"tempo_in_asked_style": sum(music.TEMPO_RANGES[t["style"]]) / 2 + rng.standard_normal()}
               for t in truth]
    good = tempo_following(followed, truth, permutations=2000)
    assert good["n"] == len(truth) and good["spearman"] > 0.8 and good["p_value"] < 0.001
    assert good["accuracy"] > 0.8 and good["accuracy_p_value"] < 1e-6
    assert good["chance"] == pytest.approx(np.mean([abs(sum(music.TEMPO_RANGES[t["style"]]) / 2 / t["tempo"] - 1)
                                                    <= 0.04 for t in truth]))
    # Across styles the typical tempi alone correlate with the asked BPM; within styles they must not count.
    chance = tempo_following(typical, truth, permutations=2000)
    assert abs(chance["spearman"]) < 0.3 and chance["p_value"] > 0.01
    assert abs(chance["accuracy"] - chance["chance"]) < 0.1 and chance["accuracy_p_value"] > 0.01
    few = tempo_following(followed[:2], truth[:2])
    assert np.isnan(few["spearman"]) and np.isnan(few["accuracy"]) and few["n"] == 2
    untempo = [{k: v for k, v in t.items() if k != "tempo"} for t in truth]  # captions that give no BPM
    assert tempo_following(followed, untempo)["n"] == 0


def _tones(midi_notes: list[int], seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    waves = [0.2 * np.sin(2 * np.pi * 440.0 * 2 ** ((n - 69) / 12) * t) for n in midi_notes]
    return np.sum(waves, axis=0).astype(np.float32)


def test_chroma_of_a_triad_peaks_on_its_notes():
    chroma = chroma_parts(_tones([60, 64, 67, 48]))  # C major triad over a low C
    assert chroma.shape == (len(CHROMA_PARTS), 12)
    np.testing.assert_allclose(np.linalg.norm(chroma, axis=1), 1.0, rtol=1e-6)
    assert set(np.argsort(chroma[0])[-3:]) == {0, 4, 7}  # treble: C, E, G
    assert int(np.argmax(chroma[1])) == 0  # bass: C


def test_key_profiles_are_transposition_equivariant():
    rng = np.random.default_rng(0)
    profiles = KeyProfiles(CHROMA_PARTS, rng.standard_normal((2, len(CHROMA_PARTS), 12)))
    chroma = np.abs(rng.standard_normal((len(CHROMA_PARTS), 12)))
    base = profiles.logits(chroma).reshape(2, 12)
    for shift in range(12):
        moved = profiles.logits(np.roll(chroma, shift, axis=-1)).reshape(2, 12)
        np.testing.assert_allclose(moved, np.roll(base, shift, axis=-1), atol=1e-12)
    assert key_from_logits(np.eye(24)[KEY_LABELS.index("F# minor")]) == ("F#", "minor")


def test_fitted_key_profiles_recover_keys_of_synthetic_chroma(tmp_path):
    # Chroma drawn around Krumhansl-Kessler profiles rotated to each clip's key.
    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    rng = np.random.default_rng(1)
    keys = [KEY_LABELS[i] for i in rng.integers(0, 24, 480)]
    chroma = []
    for key in keys:
        tonic, mode = key.split(" ")
        profile = np.roll(major if mode == "major" else minor, PITCH_CLASSES.index(tonic))
        chroma.append(np.stack([profile + rng.normal(0, 0.8, 12) for _ in CHROMA_PARTS]))
    chroma = np.array(chroma)
    profiles = fit_key_profiles(chroma[:400], keys[:400])
    predicted = [KEY_LABELS[i] for i in profiles.logits(chroma[400:]).argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, keys[400:], strict=True)]) >= 0.95
    loaded = KeyProfiles.load(profiles.save(tmp_path / "key.json"))
    np.testing.assert_allclose(loaded.logits(chroma[:5]), profiles.logits(chroma[:5]), atol=1e-5)


def test_score_music_counts_and_chance_levels():
    truth = [
        {"style": "ballad", "tempo": 70, "key": "C", "mode": "major", "lead": "flute", "chords": "piano",
         "instruments": ["Flute", "Acoustic Grand Piano", "Electric Bass (finger)"]},
        {"style": "rock", "tempo": 100, "key": "E", "mode": "minor", "lead": "organ", "chords": "strings",
         "instruments": ["Drawbar Organ", "String Ensemble 1", "Electric Bass (pick)"]},
    ]
    predicted = [
        {"style": "ballad", "tempo": 72.7, "key": "C", "mode": "minor", "lead": "flute", "chords": "piano",
         "instruments": ["Flute", "Acoustic Grand Piano", "Electric Bass (finger)"]},
        {"style": "swing", "tempo": 95.9, "key": "E", "mode": "minor"},  # no instruments predicted
    ]
    scores = score_music(predicted, truth)
    assert scores["tempo"]["accuracy"] == 0.5  # 72.7 is 3.9% above 70; 95.9 is 4.1% below 100
    # Chance: ballad's middle tempo 70 is within 4% of 70; rock's 120 is not within 4% of 100.
    assert scores["tempo"]["chance"] == 0.5
    assert scores["style"] == {"accuracy": 0.5, "n": 2, "chance": 1 / 7}
    assert scores["key"]["accuracy"] == 1.0 and scores["key"]["chance"] == 1 / 12
    assert scores["mode"]["accuracy"] == 0.5 and scores["mode"]["chance"] == 0.5
    assert scores["lead"] == {"accuracy": 0.5, "n": 2, "chance": 0.1}
    assert scores["instruments"]["accuracy"] == 0.5
    assert scores["instruments"]["chance"] == pytest.approx(1 / (10 * 9 * 6))
    with pytest.raises(ValueError, match="2 ground-truth rows"):
        score_music(predicted[:1], truth)


def test_instrument_net_save_load_and_short_inputs(tmp_path):
    torch.manual_seed(0)
    net = InstrumentNet(list(music.INSTRUMENTS)).eval()
    x = torch.randn(2, 64, 100) - 3.0
    loaded = InstrumentNet.load(net.save(tmp_path / "net.npz"))
    for a, b in zip(net(x), loaded(x), strict=True):
        torch.testing.assert_close(a, b)
    lead, chords = loaded.predict(np.full((64, MIN_FRAMES // 4), -4.0, dtype=np.float32))
    assert lead in music.INSTRUMENTS and chords in music.INSTRUMENTS
    with pytest.raises(ValueError, match=r"\[B, 64, T\]"):
        net(torch.zeros(1, 80, 100))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        InstrumentNet.load(tmp_path / "bad.npz")


def test_missing_model_names_the_fit_command(tmp_path):
    with pytest.raises(ModelMissingError, match="audiodiff.benchmarks.music.fit"):
        load_style_model(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("wav", "sample_rate", "message"),
    [
        (np.zeros((1600, 2), dtype=np.float32), SR, r"\[T\] or \[C, T\] with C <= 8 channels"),  # [T, C]
        (np.zeros(0, dtype=np.float32), SR, "empty"),
        (np.full(1600, np.nan, dtype=np.float32), SR, "NaN"),
        (np.zeros(1600, dtype=np.float32), 0, "sample_rate"),
    ],
)
def test_bad_input_is_refused(wav, sample_rate, message):
    with pytest.raises(ValueError, match=message):
        extract_music(wav, sample_rate)


def test_tensor_input_at_another_rate_is_resampled():
    import soxr

    wav = _click_track(120.0, 6.0) + _tones([57, 60, 64], seconds=6.0)
    at_22k = torch.from_numpy(soxr.resample(wav, SR, 22050).astype(np.float32))[None]  # [1, T]
    out = extract_music(at_22k, 22050)
    assert set(out) == {"style", "tempo", "key", "mode", "lead", "chords", "instruments"}
    assert min(abs(out["tempo"] / bpm - 1) for bpm in (60.0, 120.0)) < 0.04  # the clicks' tempo or its half


@pytest.mark.parametrize(("caption", "asks_tempo"), [
    ("a waltz in F major at 96 BPM with strings", True),
    ("swing, D minor, tempo 96, melody on flute", True),
    ("a slow waltz in F major with strings", False),       # a tempo class only
    ("a waltz in F major at 196 BPM", False),              # another number that merely contains 96
    ("a waltz at 96.5 BPM", False),
])
def test_tempo_is_scored_only_where_the_caption_gives_the_bpm(caption, asks_tempo):
    attributes = {"style": "waltz", "tempo": 96, "key": "F", "mode": "major"}
    asked = asked_attributes("music", caption, attributes)
    assert ("tempo" in asked) is asks_tempo
    assert {k: v for k, v in asked.items() if k != "tempo"} == {"style": "waltz", "key": "F", "mode": "major"}
    assert attributes["tempo"] == 96                                    # the row itself is left alone
    assert asked_attributes("sfx", caption, attributes) == attributes   # other corpora: every attribute


def test_fit_command_help_and_a_bad_value(tmp_path, capsys):
    def run(argv):
        return cli.run("audiodiff.benchmarks.music.fit", "fit_music", fit_music.main, fit_music.__doc__, argv)

    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.benchmarks.music.fit [key=value ...]" in out
    assert all(s in out for s in ("root: data", "griffinlim: 500", "epochs: 40", "workers: 2", "out_dir: null"))
    assert run([f"root={tmp_path}", "workers=abc"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: workers: expected a whole number, got 'abc'\n"
    assert "Traceback" not in captured.out
