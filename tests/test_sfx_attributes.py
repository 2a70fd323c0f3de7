"""sfx attribute extractors: accuracy on fresh and hand-made clips, scoring, classifier file, CLIs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from audiodiff import cli
from audiodiff.benchmarks import check as check_module
from audiodiff.benchmarks.attributes import corpus_metrics
from audiodiff.benchmarks.classifier import SoftmaxClassifier, fit_softmax
from audiodiff.benchmarks.features import loudness_lufs, segment_events
from audiodiff.benchmarks.roundtrip import griffinlim_roundtrip
from audiodiff.benchmarks.sfx import corpus as sfx
from audiodiff.benchmarks.sfx import fit as fit_sfx
from audiodiff.benchmarks.sfx.attributes import extract_sfx, score_attributes
from audiodiff.benchmarks.sfx.fit import fit
from audiodiff.representations.mel import MelRepresentation

SR = 16000


def check_main(argv: list[str]) -> int:
    """`python -m audiodiff.benchmarks.check ARGV...`, run in this process; returns the exit status."""
    return cli.run("audiodiff.benchmarks.check", "attributes_check", check_module.main, check_module.__doc__,
                   argv)


def _at_lufs(wav: np.ndarray, lufs: float) -> np.ndarray:
    return (wav * 10 ** ((lufs - loudness_lufs(wav, SR)) / 20)).astype(np.float32)


def _ramp(n: int) -> np.ndarray:
    """5 ms fade in and out."""
    return np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * SR))


def _tone(freq: float, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    return np.sin(2 * np.pi * freq * np.arange(n) / SR) * _ramp(n)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR))


@pytest.fixture(scope="module")
def fresh() -> tuple[list[dict], list[np.ndarray]]:
    """150 clips never seen by the classifier (a seed the corpus does not use), kinds cycled."""
    truth, wavs = [], []
    for i in range(150):
        rng = np.random.default_rng([2024, i])
        attrs = sfx.sample_attributes(rng, kind=sfx.KINDS[i % len(sfx.KINDS)])
        truth.append(attrs)
        wavs.append(sfx.synthesize(attrs, rng))
    return truth, wavs


def test_accuracy_on_fresh_clips_is_at_least_95_percent(fresh):
    truth, wavs = fresh
    start = time.perf_counter()
    predicted = [extract_sfx(w, SR) for w in wavs]
    per_clip = (time.perf_counter() - start) / len(wavs)
    scores = score_attributes(predicted, truth)
    assert set(scores) == set(sfx.ATTRIBUTE_VALUES)
    for name, s in scores.items():
        assert s["accuracy"] >= 0.95, (name, s)
        assert s["chance"] == pytest.approx(1 / len(sfx.ATTRIBUTE_VALUES[name]))
    assert scores["kind"]["n"] == scores["loudness"]["n"] == 150
    assert per_clip < 0.1


def test_accuracy_after_griffin_lim(fresh):
    truth, wavs = fresh
    picked = list(range(len(sfx.KINDS)))  # one clip of each kind
    vocoded = griffinlim_roundtrip([wavs[i] for i in picked], batch_size=len(picked))
    assert [len(v) for v in vocoded] == [len(wavs[i]) for i in picked]
    scores = score_attributes([extract_sfx(v, SR) for v in vocoded], [truth[i] for i in picked])
    for name, s in scores.items():
        assert s["accuracy"] >= 0.9, (name, s)
    # Speckle keeps the expected power: loudness moves by well under a dB on average.
    speckled = griffinlim_roundtrip([wavs[i] for i in picked], batch_size=len(picked), mel_noise_db=8.0)
    shift = [loudness_lufs(a, SR) - loudness_lufs(b, SR) for a, b in zip(speckled, vocoded, strict=True)]
    assert abs(float(np.mean(shift))) < 1.5 and not np.allclose(speckled[0], vocoded[0])


def test_roundtrip_through_a_wider_mel():
    """`representation` picks the mel: 128 bands keep a tone's spectrum closer than the default 64."""
    tone = _at_lufs(_tone(2900.0, 0.5) + _tone(3100.0, 0.5), -20.0).astype(np.float32)
    default = griffinlim_roundtrip([tone])[0]
    wide = griffinlim_roundtrip([tone], representation=MelRepresentation(n_mels=128))[0]
    assert len(wide) == len(default) == len(tone) and not np.allclose(wide, default)

    reference = np.abs(np.fft.rfft(tone))

    def spectrum_error(wav: np.ndarray) -> float:
        return float(np.abs(np.abs(np.fft.rfft(wav)) - reference).sum() / reference.sum())

    assert spectrum_error(wide) < spectrum_error(default)
    with pytest.raises(ValueError, match="22050"):
        griffinlim_roundtrip([tone], sample_rate=22050, representation=MelRepresentation())


def test_three_one_kilohertz_beeps():
    beeps = np.concatenate([_silence(0.2)] + [np.concatenate([_tone(1000.0, 0.15), _silence(0.3)])] * 3)
    wav = _at_lufs(beeps, -20.0)
    assert extract_sfx(wav, SR) == {"kind": "beeps", "pitch": "high", "count": 3, "loudness": "loud"}
    # Same clip as a torch tensor [1, T], and at 44.1 kHz.
    assert extract_sfx(torch.from_numpy(wav)[None], SR)["count"] == 3
    resampled = np.interp(np.arange(int(len(wav) * 44100 / SR)) * SR / 44100, np.arange(len(wav)), wav)
    assert extract_sfx(resampled.astype(np.float32), 44100) == extract_sfx(wav, SR)


def test_hand_made_tones_sweep_and_bursts():
    n = 2 * SR
    steady = np.concatenate([_silence(0.1), _tone(200.0, 2.0), _silence(0.1)])
    assert extract_sfx(_at_lufs(steady, -20.0), SR) == {
        "kind": "sine",
        "pitch": "low",
        "envelope": "steady",
        "loudness": "loud",
    }
    fading = steady * np.concatenate([np.ones(1600), 10 ** (-2 * np.linspace(0, 1, n)), np.ones(1600)])
    assert extract_sfx(_at_lufs(fading, -38.0), SR) == {
        "kind": "sine",
        "pitch": "low",
        "envelope": "fading",
        "loudness": "quiet",
    }
    freq = 200.0 * 2 ** (3 * np.linspace(0, 1, n))
    chirp = np.concatenate(
        [_silence(0.1), np.sin(2 * np.pi * np.cumsum(freq) / SR) * _ramp(n), _silence(0.1)]
    )
    assert extract_sfx(_at_lufs(chirp, -22.0), SR) == {
        "kind": "sweep",
        "direction": "rising",
        "loudness": "loud",
    }
    noise = np.random.default_rng(0).standard_normal(int(0.35 * SR))
    bursts = np.concatenate([_silence(0.15), noise, _silence(0.35), noise, _silence(0.3)])
    assert extract_sfx(_at_lufs(bursts, -38.0), SR) == {
        "kind": "noise_burst",
        "count": 2,
        "loudness": "quiet",
    }


@pytest.mark.filterwarnings("error")
def test_silence_and_tiny_clips_give_valid_attributes():
    for wav in (np.zeros(SR, dtype=np.float32), np.zeros(100, dtype=np.float32), np.full(1, 0.1, np.float32)):
        out = extract_sfx(wav, SR)
        sfx.validate_attributes(out)
        assert out["loudness"] == "quiet"


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"expected wav \[T\] or \[C, T\] with C <= 8 channels, got shape \(100, 2\)"):
        extract_sfx(np.zeros((100, 2)), SR)  # [T, C] (soundfile's layout) is not guessed at
    with pytest.raises(ValueError, match="NaN"):
        extract_sfx(np.full(SR, np.nan), SR)
    with pytest.raises(ValueError, match="empty"):
        extract_sfx(np.zeros(0), SR)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        extract_sfx(np.zeros(SR), 0)


def test_score_attributes_counts_only_attributes_of_the_true_kind():
    truth = [
        {"kind": "beeps", "pitch": "high", "count": 3, "loudness": "loud"},
        {"kind": "sine", "pitch": "low", "envelope": "steady", "loudness": "quiet"},
        {"kind": "clicks", "count": 2, "loudness": "quiet"},
    ]
    predicted = [
        {"kind": "bell", "pitch": "high", "count": 3, "loudness": "loud"},  # kind wrong, rest right
        {"kind": "hum", "envelope": "steady", "loudness": "quiet"},  # no pitch for a hum: wrong
        {"kind": "clicks", "count": 1, "loudness": "quiet"},
    ]
    scores = score_attributes(predicted, truth)
    assert list(scores) == ["kind", "pitch", "count", "envelope", "loudness"]
    assert scores["kind"] == {
        "accuracy": pytest.approx(1 / 3),
        "n": 3,
        "chance": pytest.approx(1 / len(sfx.KINDS)),
    }
    assert scores["pitch"] == {"accuracy": 0.5, "n": 2, "chance": pytest.approx(1 / 3)}
    assert scores["count"] == {"accuracy": 0.5, "n": 2, "chance": pytest.approx(1 / 3)}
    assert scores["envelope"] == {"accuracy": 1.0, "n": 1, "chance": 0.5}
    assert scores["loudness"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="2 predictions for 3"):
        score_attributes(predicted[:2], truth)
    with pytest.raises(ValueError, match=r"\['colour'\]"):
        score_attributes([{}], [{"kind": "sine", "colour": "red"}])


def test_loudness_and_event_segmentation_against_references():
    # BS.1770: a 997 Hz sine at amplitude a reads 20·log10(a) − 3.01 LUFS (pyloudnorm's K-weighting, derived
    # for each sample rate, is within 0.1 dB of that at 16 and 48 kHz).
    for rate in (16000, 48000):
        sine = 0.1 * np.sin(2 * np.pi * 997 * np.arange(2 * rate) / rate)
        assert loudness_lufs(sine, rate) == pytest.approx(-23.01, abs=0.1)
    assert loudness_lufs(np.zeros(100), SR) == -120.0
    level = np.full(40, -80.0)
    level[5:9] = 0.0  # an event
    level[9:11] = -25.0  # its tail stays above the off threshold
    level[12:13] = 0.0  # one quiet frame later: merged into the first
    level[25:30] = -5.0  # a second event
    level[35] = -21.0  # below the on threshold
    assert segment_events(level, on_db=20.0, off_db=30.0, min_gap_frames=3) == [(5, 13), (25, 30)]
    assert segment_events(level, on_db=20.0, off_db=30.0, min_gap_frames=1) == [(5, 11), (12, 13), (25, 30)]


def test_softmax_classifier_fits_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    centres = {"a": (0.0, 0.0), "b": (4.0, 0.0), "c": (0.0, 4.0)}
    labels = [k for k in centres for _ in range(30)]
    x = np.array([centres[k] for k in labels]) + rng.normal(0, 0.5, (90, 2))
    model = fit_softmax(x, labels, ("u", "v"), ("a", "b", "c"))
    assert model.predict(np.array([[0.1, -0.2], [3.9, 0.3], [0.2, 4.2]])) == ["a", "b", "c"]
    path = model.save(tmp_path / "m.json")
    again = SoftmaxClassifier.load(path)
    np.testing.assert_allclose(again.logits(x), model.logits(x), atol=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**model.to_dict(), "bias": [0.0]}))
    with pytest.raises(ValueError, match=r"bad\.json: expected weights \[3, 2\], bias \[3\]"):
        SoftmaxClassifier.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not a classifier file"):
        SoftmaxClassifier.load(bad)
    with pytest.raises(ValueError, match=r"labels \['z'\]"):
        fit_softmax(x[:1], ["z"], ("u", "v"), ("a", "b", "c"))


def test_fit_and_check_commands_on_a_small_corpus(tmp_path, capsys):
    sfx.build(tmp_path / "sfx", seed=5, num_clips=84, workers=1)
    out = fit(tmp_path, per_kind=4, griffinlim_per_kind=0, out=tmp_path / "kind.json")
    model = SoftmaxClassifier.load(out)
    assert model.classes == sfx.KINDS and len(model.features) == model.weights.shape[1]
    assert check_main(["corpus=sfx", f"root={tmp_path}", "split=test", "n=4", "griffinlim=false"]) == 0
    printed = capsys.readouterr().out
    assert "attribute accuracy on 4 clips" in printed and "| kind | 7% | 100.0% (4) |" in printed
    assert check_main(["corpus=sfx", f"root={tmp_path}", "split=test", "n=2", "speckle_db=6"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert header == "| attribute | chance | clean (n) | griffin-lim (n) | griffin-lim + 6 dB speckle (n) |"
    assert check_main(["n=many"]) == 1
    assert capsys.readouterr().err == "error: n: expected a whole number, got 'many'\n"
    assert check_main(["colour=red"]) == 1
    assert capsys.readouterr().err.startswith("error: Could not override 'colour'")
    extract, score = corpus_metrics("sfx")
    assert extract is extract_sfx and score is score_attributes
    with pytest.raises(ValueError, match="no attribute extractors for 'nope'"):
        corpus_metrics("nope")


def test_reference_picks_which_attributes_are_read_but_never_the_kind():
    from audiodiff.benchmarks.sfx import corpus
    from audiodiff.benchmarks.sfx.attributes import extract_sfx

    rng = np.random.default_rng(5)
    attrs = {"kind": "sweep", "direction": "rising", "loudness": "loud"}
    wav = corpus.synthesize(attrs, rng)
    plain = extract_sfx(wav, 16000)
    as_beeps = extract_sfx(wav, 16000, reference={"kind": "beeps", "pitch": "low", "count": 1, "loudness": "loud"})
    assert plain["kind"] == as_beeps["kind"] == "sweep" and plain["direction"] == "rising"
    assert "count" in as_beeps and "pitch" in as_beeps and "direction" not in as_beeps


@pytest.mark.parametrize(("module", "config", "settings"), [
    (check_module, "attributes_check", ["corpus: sfx", "root: data", "split: test", "'n': 400", "griffinlim: true",
                                        "speckle_db: 0.0"]),
    (fit_sfx, "fit_sfx", ["root: data", "per_kind: 150", "griffinlim_per_kind: 30", "out: null"]),
])
def test_command_help_and_bad_values(module, config, settings, tmp_path, capsys):
    tool = module.__name__
    assert cli.run(tool, config, module.main, module.__doc__, ["--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: python -m {tool} [key=value ...]" in out and all(s in out for s in settings), out
    bad = {"attributes_check": ["griffinlim=maybe"], "fit_sfx": ["per_kind=abc"]}[config]
    assert cli.run(tool, config, module.main, module.__doc__, [f"root={tmp_path}", *bad]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out


def test_a_multichannel_clip_is_read_from_its_downmix():
    t = np.arange(SR) / SR
    tone = (0.1 * np.sin(2 * np.pi * 600 * t)).astype(np.float32)
    stereo = np.stack([tone, tone])
    assert extract_sfx(stereo, SR) == extract_sfx(tone, SR)
    assert extract_sfx(np.stack([tone, -tone]), SR)["loudness"] == "quiet"  # opposite channels cancel in the downmix
