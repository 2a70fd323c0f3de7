"""The built-in music corpus: determinism, ground truth against the MIDI, clip lengths, captions, errors."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from audiodiff.benchmarks.music import corpus as music
from audiodiff.benchmarks.music.midi import (
    DRUM_CHANNEL,
    PITCH_CLASSES,
    STYLES,
    TICKS_PER_BEAT,
    arrange,
    to_midi,
)
from audiodiff.benchmarks.music.soundfont import SynthesisError, find_fluidsynth, find_soundfont, render_midi
from audiodiff.data.manifest import read_manifest

SEED = 5
NUM_CLIPS = 14  # two of each style

# Krumhansl & Kessler (1982) probe-tone profiles, index 0 = tonic.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The same small corpus built with one worker and with two."""
    one = music.build(tmp_path_factory.mktemp("w1") / "music", seed=SEED, num_clips=NUM_CLIPS, workers=1)
    two = music.build(tmp_path_factory.mktemp("w2") / "music", seed=SEED, num_clips=NUM_CLIPS, workers=2)
    return one, two


def test_build_is_deterministic_and_independent_of_workers(built):
    one, two = built
    assert one.read_text() == two.read_text()
    assert (one.parent / "corpus.json").read_text() == (two.parent / "corpus.json").read_text()
    for row in map(json.loads, one.read_text().splitlines()):
        for key in ("audio", "midi"):
            assert (one.parent / row[key]).read_bytes() == (two.parent / row[key]).read_bytes(), row[key]


def test_rendering_the_same_midi_twice_gives_the_same_samples():
    rng = np.random.default_rng(0)
    arrangement = arrange(style="swing", tempo=150, tonic=3, mode="minor", lead_program=65, chord_program=0,
                          duration=4.0, rng=rng)
    midi = to_midi(arrangement)
    kwargs = {"soundfont": find_soundfont(), "sample_rate": 16000, "fluidsynth": find_fluidsynth()}
    first, second = render_midi(midi, **kwargs), render_midi(midi, **kwargs)
    assert first.dtype == np.float32 and first.ndim == 1
    assert np.array_equal(first, second)
    assert np.abs(first).max() > 1e-3  # it is not silence


def test_manifest_rows_and_audio_files(built):
    manifest, _ = built
    rows = read_manifest(manifest)  # validates the schema
    assert len(rows) == NUM_CLIPS
    assert Counter(r.attributes["style"] for r in rows) == {s: 2 for s in STYLES}
    for row in rows:
        info = sf.info(row.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row.sample_rate == 16000
        assert music.DURATION_RANGE[0] <= row.duration <= music.DURATION_RANGE[1]
        assert info.frames == round(row.duration * 16000)
        assert row.split in ("train", "val", "test")
        assert "CC0-1.0" in row.license and "TimGM6mb" in row.license and "GPL-2.0" in row.license
        wav, _ = sf.read(row.audio)
        assert 0.1 < np.abs(wav).max() <= music.PEAK_LIMIT + 1e-4
        assert np.abs(wav[-8:]).max() < 0.01  # faded out
        attributes = row.attributes
        assert set(attributes) == {"style", "tempo", "key", "mode", "meter", "lead", "chords", "bass",
                                   "instruments"}
        lo, hi = music.TEMPO_RANGES[attributes["style"]]
        assert lo <= attributes["tempo"] <= hi and 60 <= attributes["tempo"] <= 180
        assert attributes["lead"] != attributes["chords"]


def _key_from_midi(path: Path) -> tuple[str, str]:
    """Krumhansl-Schmuckler key of the pitched notes, weighted by duration."""
    histogram = np.zeros(12)
    started: dict[tuple[int, int], float] = {}
    now = 0.0
    for message in mido.MidiFile(path):
        now += message.time
        if message.type not in ("note_on", "note_off") or message.channel == DRUM_CHANNEL:
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            started[key] = now
        elif key in started:
            histogram[message.note % 12] += now - started.pop(key)
    scores = {(PITCH_CLASSES[t], mode): np.corrcoef(histogram, np.roll(profile, t))[0, 1]
              for t in range(12) for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR))}
    return max(scores, key=scores.get)


def test_tempo_meter_and_key_ground_truth_match_the_midi(built):
    manifest, _ = built
    for row in map(json.loads, manifest.read_text().splitlines()):
        attributes = row["attributes"]
        midi = mido.MidiFile(manifest.parent / row["midi"])
        meta = {m.type: m for m in midi.tracks[0] if m.is_meta}
        assert round(mido.tempo2bpm(meta["set_tempo"].tempo)) == attributes["tempo"]
        assert f"{meta['time_signature'].numerator}/4" == attributes["meter"]
        # Drum hits sit on the sixteenth/triplet grid and every bar's downbeat has one.
        ticks, hits = 0, set()
        for message in midi.tracks[0]:
            ticks += message.time
            if message.type == "note_on" and message.channel == DRUM_CHANNEL and message.velocity > 0:
                hits.add(ticks)
        assert all(t % (TICKS_PER_BEAT // 12) == 0 for t in hits)
        bar = STYLES[attributes["style"]].beats_per_bar * TICKS_PER_BEAT
        end = row["duration"] * attributes["tempo"] / 60 * TICKS_PER_BEAT
        assert all(b in hits for b in range(0, int(end), bar))
        assert _key_from_midi(manifest.parent / row["midi"]) == (attributes["key"], attributes["mode"])
        assert midi.length >= row["duration"] - 1e-6  # the score covers the whole clip


def test_every_arrangement_starts_and_ends_on_the_tonic():
    for index, plan in enumerate(music.plan_clips(11, 70)):
        arrangement = music.arrangement_for(plan)
        tonic = "I" if plan.attributes["mode"] == "major" else "i"
        assert arrangement.progression[0] == tonic and arrangement.progression[-1] == tonic, index
        if len(arrangement.progression) >= 3:
            assert arrangement.progression[-2].startswith("V"), arrangement.progression
        tonic_pc = PITCH_CLASSES.index(plan.attributes["key"])
        lead = [n for n in arrangement.notes if n.channel == 0]
        assert lead[-1].pitch % 12 == tonic_pc or len(arrangement.progression) == 1
        bass = [n for n in arrangement.notes if n.channel == 2]
        assert bass[0].pitch % 12 == tonic_pc
        assert arrangement.length_beats == pytest.approx(plan.duration * plan.attributes["tempo"] / 60)
        assert max(n.start for n in arrangement.notes) < arrangement.length_beats


def test_clip_lengths_splits_and_balance_of_the_default_corpus():
    plans = music.plan_clips(0, music.DEFAULT_NUM_CLIPS)
    durations = np.array([p.duration for p in plans])
    assert durations.min() >= 4.0 and durations.max() <= 10.0
    assert Counter(p.split for p in plans) == {"train": 2000, "val": 200, "test": 200}
    for style in STYLES:
        of_style = [p for p in plans if p.attributes["style"] == style]
        for split in ("val", "test"):
            share = sum(p.split == split for p in of_style) / len(of_style)
            assert abs(share - 1 / 12) < 0.01, (style, split, share)
    keys = Counter((p.attributes["key"], p.attributes["mode"]) for p in plans)
    assert len(keys) == 24 and min(keys.values()) > 60
    assert len({p.attributes["lead"] for p in plans}) == len(music.INSTRUMENTS)


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(".+?")
    return re.compile("^" + "".join(parts) + "$")


def test_captions_mention_every_attribute_and_held_out_templates_stay_held_out():
    assert len(music.CAPTION_TEMPLATES_TRAIN) >= 15 and len(music.CAPTION_TEMPLATES_EVAL) >= 6
    assert not set(music.CAPTION_TEMPLATES_TRAIN) & set(music.CAPTION_TEMPLATES_EVAL)
    train_patterns = [_template_pattern(t) for t in music.CAPTION_TEMPLATES_TRAIN]
    eval_patterns = [_template_pattern(t) for t in music.CAPTION_TEMPLATES_EVAL]
    tempo_words = {w for words in music.TEMPO_WORDS.values() for w in words}
    plans = music.plan_clips(3, 600)
    used_eval = set()
    for plan in plans:
        a = plan.attributes
        assert len(plan.captions) == music.CAPTIONS_PER_CLIP and len(set(plan.captions)) == len(plan.captions)
        for caption in plan.captions:
            assert a["style"] in caption and f"{a['key']} {a['mode']}" in caption
            assert a["lead"] in caption and a["chords"] in caption
            words = set(re.findall(r"[a-z-]+", caption))
            mentioned = words & set(music.TEMPO_WORDS[music.tempo_word(a["tempo"])])
            assert str(a["tempo"]) in caption or mentioned, caption
            assert not words & (tempo_words - set(music.TEMPO_WORDS[music.tempo_word(a["tempo"])])), caption
            assert not re.search(r"\ba [aeiou]", caption), caption
            if plan.split == "train":
                assert any(p.match(caption) for p in train_patterns), caption
                assert not any(p.match(caption) for p in eval_patterns), caption
            else:
                matches = [i for i, p in enumerate(eval_patterns) if p.match(caption)]
                assert matches, caption
                used_eval.update(matches)
    assert used_eval == set(range(len(eval_patterns)))


def test_render_caption_draws_from_the_requested_template_set():
    rng = np.random.default_rng(0)
    attributes = music.sample_attributes(rng, style="waltz")
    assert attributes["meter"] == "3/4"
    eval_patterns = [_template_pattern(t) for t in music.CAPTION_TEMPLATES_EVAL]
    for _ in range(30):
        held_out, seen = (music.render_caption(attributes, rng, held_out=flag) for flag in (True, False))
        assert any(p.match(held_out) for p in eval_patterns), held_out
        assert not any(p.match(seen) for p in eval_patterns), seen
    with pytest.raises(ValueError, match="style"):
        music.sample_attributes(rng, style="polka")


def test_tempo_words_follow_the_bpm():
    assert [music.tempo_word(b) for b in (60, 89, 90, 125, 126, 180)] == [
        "slow", "slow", "moderate", "moderate", "fast", "fast"]


def test_corpus_summary_counts_the_clips(built):
    manifest, _ = built
    summary = json.loads((manifest.parent / "corpus.json").read_text())
    assert summary["num_clips"] == NUM_CLIPS
    assert sum(summary["counts"][s]["clips"]["total"] for s in ("train", "val", "test")) == NUM_CLIPS
    assert sum(summary["counts"]["train"]["style"].values()) == summary["counts"]["train"]["clips"]["total"]
    assert summary["caption_templates"]["eval"] == list(music.CAPTION_TEMPLATES_EVAL)
    assert summary["attribute_values"]["style"] == list(STYLES)


def test_missing_soundfont_or_fluidsynth_is_a_clear_error(tmp_path):
    with pytest.raises(SynthesisError, match=r"timgm6mb-soundfont.*"):
        music.build(tmp_path / "music", seed=0, num_clips=2, workers=1, soundfont=tmp_path / "missing.sf2")
    assert not (tmp_path / "music" / "manifest.jsonl").exists()
    with pytest.raises(SynthesisError, match=r"install the Debian package 'fluidsynth'"):
        find_fluidsynth("fluidsynth-that-is-not-installed")


def test_invalid_arrangement_requests_name_the_field():
    rng = np.random.default_rng(0)
    common = {"tempo": 100, "tonic": 0, "lead_program": 0, "chord_program": 16, "duration": 5.0, "rng": rng}
    with pytest.raises(ValueError, match="style"):
        arrange(style="polka", mode="major", **common)
    with pytest.raises(ValueError, match="mode"):
        arrange(style="rock", mode="dorian", **common)
    with pytest.raises(ValueError, match="num_clips"):
        music.plan_clips(0, 0)
