"""The built-in sfx corpus: determinism, coverage, audio invariants, captions and the manifest it writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.benchmarks.captions import fill, tidy
from audiodiff.benchmarks.features import FRAME_RATE, loudness_lufs, power_spectrogram, segment_events
from audiodiff.benchmarks.sfx import corpus as sfx
from audiodiff.benchmarks.sfx.captions import _WORDS
from audiodiff.data.manifest import read_manifest
from audiodiff.prepare import prepare


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A 64-clip corpus built with two workers."""
    return sfx.build(tmp_path_factory.mktemp("w2") / "sfx", seed=7, num_clips=64, workers=2)


@pytest.fixture(scope="module")
def batch() -> list[tuple[dict, np.ndarray]]:
    """Four fresh clips of every kind."""
    out = []
    for i in range(4 * len(sfx.KINDS)):
        rng = np.random.default_rng([99, i])
        attrs = sfx.sample_attributes(rng, kind=sfx.KINDS[i % len(sfx.KINDS)])
        out.append((attrs, sfx.synthesize(attrs, rng)))
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_build_is_independent_of_worker_count(corpus, tmp_path):
    single = sfx.build(tmp_path / "sfx", seed=7, num_clips=64, workers=1)
    assert _digest(single.parent) == _digest(corpus.parent)
    other_seed = sfx.build(tmp_path / "other" / "sfx", seed=8, num_clips=64, workers=1)
    assert (other_seed.parent / "audio" / "000000.wav").read_bytes() != (
        corpus.parent / "audio/000000.wav"
    ).read_bytes()


def test_same_seed_same_audio_and_captions():
    first = sfx.make_clip(3, 11, "bell", "train")
    again = sfx.make_clip(3, 11, "bell", "train")
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    other = sfx.make_clip(3, 12, "bell", "train")
    assert not np.array_equal(first[1], other[1])


def test_captions_do_not_depend_on_string_hashing():
    code = (
        "import numpy as np, hashlib; from audiodiff.benchmarks.sfx import corpus as sfx; "
        "r = np.random.default_rng(0); "
        "print(hashlib.md5('|'.join(sfx.render_caption(sfx.sample_attributes(r), r, i % 2 == 0) "
        "for i in range(200)).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_plan_balances_kinds_and_stratifies_splits():
    plan = sfx.plan(0, sfx.DEFAULT_NUM_CLIPS)
    assert Counter(split for _, split in plan) == {"train": 5600, "val": 400, "test": 400}
    per_kind = Counter(kind for kind, _ in plan)
    assert set(per_kind) == set(sfx.KINDS) and max(per_kind.values()) - min(per_kind.values()) <= 1
    for split, share in (("test", 1 / 16), ("val", 1 / 16)):
        counts = Counter(kind for kind, s in plan if s == split)
        for kind in sfx.KINDS:
            assert abs(counts[kind] - share * per_kind[kind]) <= 1, (split, kind)
    assert sfx.plan(0, 100) == sfx.plan(0, 100) and sfx.plan(0, 100) != sfx.plan(1, 100)
    with pytest.raises(ValueError, match="num_clips"):
        sfx.plan(0, 0)


def test_attributes_cover_every_value_per_kind():
    rng = np.random.default_rng(0)
    assert len(sfx.KINDS) >= 12
    applies = Counter()
    for kind in sfx.KINDS:
        seen: dict[str, Counter] = {}
        for _ in range(300):
            attrs = sfx.sample_attributes(rng, kind=kind)
            assert tuple(attrs) == sfx.attributes_of(kind)
            for name, value in attrs.items():
                seen.setdefault(name, Counter())[value] += 1
        for name, counts in seen.items():
            applies[name] += 1
            if name != "kind":
                assert set(counts) == set(sfx.ATTRIBUTE_VALUES[name]), (kind, name)
                assert min(counts.values()) > 300 / len(counts) * 0.6, (kind, name, counts)
    assert applies["direction"] >= 2 and applies["loudness"] == len(sfx.KINDS)
    assert applies["count"] >= 6 and applies["pitch"] >= 4 and applies["envelope"] >= 4


def test_clips_are_finite_bounded_and_1_to_4_seconds(batch):
    for attrs, wav in batch:
        assert wav.dtype == np.float32 and wav.ndim == 1
        assert 1.0 <= wav.size / sfx.SAMPLE_RATE <= 4.0, attrs
        assert np.all(np.isfinite(wav)) and np.abs(wav).max() < 1.0, attrs


def test_loudness_classes_are_on_target_and_separated(batch):
    levels: dict[str, list[float]] = {"quiet": [], "loud": []}
    for attrs, wav in batch:
        level = loudness_lufs(wav, sfx.SAMPLE_RATE)
        target = sfx.LOUDNESS_LUFS[attrs["loudness"]]
        assert abs(level - target) <= sfx.LOUDNESS_JITTER_DB + 0.1, (attrs, level)
        levels[attrs["loudness"]].append(level)
    assert min(levels["loud"]) - max(levels["quiet"]) >= 13.0


def test_events_are_separated_by_200_ms_of_near_silence(batch):
    for attrs, wav in batch:
        if "count" not in attrs:
            continue
        events = segment_events(power_spectrogram(wav).frame_db, on_db=20.0, off_db=40.0, min_gap_frames=1)
        assert len(events) == attrs["count"], attrs
        gaps = [b[0] - a[1] for a, b in zip(events, events[1:], strict=False)]
        assert all(gap / FRAME_RATE >= 0.19 for gap in gaps), (attrs, gaps)


def test_synthesize_rejects_bad_attributes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"attributes\['kind'\].*got 'dog'"):
        sfx.synthesize({"kind": "dog", "loudness": "loud"}, rng)
    with pytest.raises(ValueError, match="expected keys"):
        sfx.synthesize({"kind": "beeps", "loudness": "loud"}, rng)
    with pytest.raises(ValueError, match=r"attributes\['count'\].*got 4"):
        sfx.synthesize({"kind": "beeps", "pitch": "low", "count": 4, "loudness": "loud"}, rng)
    with pytest.raises(ValueError, match="16000 Hz"):
        sfx.synthesize(sfx.sample_attributes(rng, kind="sine"), rng, sample_rate=22050)


# ------------------------------------------------------------------------------------------------ captions
_SLOT_GROUPS = {
    "count": {"det", "times"},
    "loudness": {"loud", "loudly", "loud_pp"},
    "pitch": {"pitch", "pitch_pp"},
    "envelope": {"env", "env_clause", "env_and"},
    "direction": {"dir", "dir_post", "dir_adv"},
}


def _literals(template: str) -> list[str]:
    return [text.strip(" ,") for text, *_ in string.Formatter().parse(template) if text.strip(" ,")]


def test_templates_name_every_attribute_once():
    assert len(sfx.CAPTION_TEMPLATES_TRAIN) >= 20 and len(sfx.CAPTION_TEMPLATES_EVAL) >= 8
    assert not set(sfx.CAPTION_TEMPLATES_TRAIN) & set(sfx.CAPTION_TEMPLATES_EVAL)
    for template in sfx.CAPTION_TEMPLATES_TRAIN + sfx.CAPTION_TEMPLATES_EVAL:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        for attribute, group in _SLOT_GROUPS.items():
            assert sum(slot in group for slot in slots) == 1, (template, attribute)
        assert ("times" in slots) == ("n1" in slots) and ("det" in slots) == ("n" in slots), template


def test_captions_mention_each_attribute_value():
    rng = np.random.default_rng(1)
    phrases = {
        name: {
            value: [
                w for slot, words in _WORDS.items() if slot.startswith(prefix) for w in words.get(value, ())
            ]
            for value in sfx.ATTRIBUTE_VALUES[name]
        }
        for name, prefix in (
            ("loudness", "loud"),
            ("pitch", "pitch"),
            ("envelope", "env"),
            ("direction", "dir"),
            ("count", ""),
        )
    }
    for kind in sfx.KINDS:
        for held_out in (False, True):
            for _ in range(60):
                attrs = sfx.sample_attributes(rng, kind=kind)
                caption = sfx.render_caption(attrs, rng, held_out)
                assert caption == tidy(caption) and "  " not in caption and "{" not in caption
                for name, value in attrs.items():
                    if name == "kind":
                        continue
                    words = (
                        phrases[name][value]
                        if name != "count"
                        else [*_WORDS["det"][value], *_WORDS["times"][value]]
                    )
                    assert any(re.search(rf"\b{re.escape(w)}\b", caption) for w in words), (caption, name)
                other = "quiet" if attrs["loudness"] == "loud" else "loud"
                assert not any(re.search(rf"\b{re.escape(w)}\b", caption) for w in phrases["loudness"][other])


def test_held_out_templates_never_appear_in_train_captions(corpus):
    markers = {max(_literals(t), key=len) for t in sfx.CAPTION_TEMPLATES_EVAL}
    rng = np.random.default_rng(2)
    train, held = set(), set()
    for _ in range(3000):
        attrs = sfx.sample_attributes(rng)
        train.add(sfx.render_caption(attrs, rng, held_out=False))
        held.add(sfx.render_caption(attrs, rng, held_out=True))
    rows = read_manifest(corpus)
    train |= {c for r in rows if r.split == "train" for c in r.captions}
    held |= {c for r in rows if r.split != "train" for c in r.captions}
    assert not train & held
    for caption in train:
        assert not any(marker in caption for marker in markers), caption
    for caption in held:
        assert any(marker in caption for marker in markers), caption


def test_fill_tidies_empty_slots_and_articles():
    rng = np.random.default_rng(0)
    choices = {"det": ("a",), "loud": ("",), "env": ("unwavering",), "n": ("hum",), "x": ()}
    assert fill("{det} {loud} {env} {n}, {x}", choices, rng) == "an unwavering hum"
    assert tidy("a hum ( , loud, , )") == "a hum (loud)" and tidy("a hum ( , , )") == "a hum"
    with pytest.raises(KeyError, match="'pitch'"):
        fill("{pitch} tone", choices, rng)


# ------------------------------------------------------------------------------------------------ manifest
def test_manifest_rows_follow_the_schema(corpus):
    rows = read_manifest(corpus)
    assert len(rows) == 64 and {r.split for r in rows} == {"train", "val", "test"}
    for row in rows:
        info = sf.info(row.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row.audio.parent == corpus.parent / "audio" and re.fullmatch(r"\d{6}\.wav", row.audio.name)
        assert row.duration == pytest.approx(info.frames / 16000, abs=1e-4) and row.sample_rate == 16000
        assert row.license == "CC0-1.0" and row.source == f"audiodiff sfx synthesiser v{sfx.VERSION}, seed 7"
        sfx.validate_attributes(row.attributes)
        wanted = (3, 5) if row.split == "train" else (3, 3)
        assert wanted[0] <= len(row.captions) <= wanted[1] and len(set(row.captions)) == len(row.captions)
    raw = json.loads(corpus.read_text().splitlines()[0])
    assert list(raw) == [
        "audio",
        "caption",
        "duration",
        "sample_rate",
        "split",
        "license",
        "source",
        "attributes",
    ]
    summary = json.loads((corpus.parent / "corpus.json").read_text())
    assert summary["num_clips"] == 64 and sum(summary["splits"].values()) == 64
    assert summary["caption_templates"]["held_out"] == list(sfx.CAPTION_TEMPLATES_EVAL)
    kinds = Counter(r.attributes["kind"] for r in rows)
    assert {k: sum(v.values()) for k, v in summary["clips_per_kind"].items()} == {
        k: kinds[k] for k in sfx.KINDS
    }
    assert "## Held-out caption templates" in (corpus.parent / "README.md").read_text()


def test_rebuild_replaces_a_corpus_and_refuses_foreign_folders(tmp_path):
    first = sfx.build(tmp_path / "sfx", seed=0, num_clips=20, workers=1)
    second = sfx.build(tmp_path / "sfx", seed=0, num_clips=15, workers=1)
    assert first == second and len(list((tmp_path / "sfx" / "audio").iterdir())) == 15
    assert not list(tmp_path.glob(".sfx.building"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an sfx corpus"):
        sfx.build(foreign, seed=0, num_clips=5, workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="workers"):
        sfx.build(tmp_path / "x", seed=0, num_clips=5, workers=0)


def test_ensure_corpus_rebuilds_a_corpus_from_an_older_synthesiser(tmp_path, capsys):
    from audiodiff.benchmarks import ensure_corpus

    manifest = ensure_corpus("sfx", tmp_path, num_clips=14, workers=1)
    stamp = manifest.stat().st_mtime_ns
    assert ensure_corpus("sfx", tmp_path, num_clips=14, workers=1).stat().st_mtime_ns == stamp  # current: kept
    summary = json.loads((tmp_path / "sfx" / "corpus.json").read_text())
    (tmp_path / "sfx" / "corpus.json").write_text(json.dumps({**summary, "version": sfx.VERSION + 1}))
    ensure_corpus("sfx", tmp_path, num_clips=14, workers=1)
    assert f"built by version {sfx.VERSION + 1} of the sfx synthesiser; rebuilding" in capsys.readouterr().err
    assert json.loads((tmp_path / "sfx" / "corpus.json").read_text())["version"] == sfx.VERSION


def test_prepare_builds_once_and_cli_reports(tmp_path):
    manifest = prepare("sfx", tmp_path, num_clips=14, workers=1)
    stamp = manifest.stat().st_mtime_ns
    assert prepare("sfx", tmp_path, num_clips=30, workers=1).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown built-in corpus 'nope'"):
        prepare("nope", tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "audiodiff.prepare",
            "corpus=sfx",
            f"root={tmp_path}",
            "num_clips=14",
            "workers=1",
            "force=true",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "built in" in run.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["sfx"]
    assert manifest.stat().st_mtime_ns != stamp and len(read_manifest(manifest)) == 14
