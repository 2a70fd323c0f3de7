"""The two new sfx kinds (trill, drips): synthesis like the corpus, captions in its style, and an extractor that
recognises them on clean held-out clips while reading the corpus's own kinds as before."""

from __future__ import annotations

import numpy as np
import pytest

from audiodiff.audio.loudness import event_loudness
from audiodiff.benchmarks.sfx import corpus
from audiodiff.benchmarks.sfx.attributes import extract_sfx
from audiodiff.benchmarks.sfx.new_kinds import NEW_KINDS, NOUNS, build, make_clip
from audiodiff.benchmarks.sfx.new_kinds_attributes import extract_with_new_kinds
from audiodiff.data.manifest import read_manifest


def test_clips_are_like_the_corpus_and_deterministic():
    for kind in NEW_KINDS:
        for index in range(4):
            row, wav = make_clip(0, kind, "train", index)
            again, same = make_clip(0, kind, "train", index)
            assert row == again and np.array_equal(wav, same)
            assert wav.dtype == np.float32 and 1.0 <= wav.size / corpus.SAMPLE_RATE <= 4.0
            target = corpus.LOUDNESS_LUFS[row["attributes"]["loudness"]]
            assert abs(event_loudness(wav, corpus.SAMPLE_RATE) - target) <= corpus.LOUDNESS_JITTER_DB + 0.1
            nouns = {word for pair in NOUNS[kind] for word in pair if word}
            assert all(any(noun in caption for noun in nouns) for caption in row["caption"])
    held_out, _ = make_clip(0, "trill", "test", 0)
    assert len(held_out["caption"]) == corpus.EVAL_CAPTIONS


def test_build_writes_a_manifest_with_splits(tmp_path):
    rows = read_manifest(build(tmp_path / "new", train_per_kind=2, val_per_kind=1, test_per_kind=1))
    assert [(r.attributes["kind"], r.split) for r in rows] == [
        (k, s) for k in NEW_KINDS for s, n in (("train", 2), ("val", 1), ("test", 1)) for _ in range(n)]


def test_the_extractor_recognises_held_out_clips_of_the_new_kinds():
    truth, got = [], []
    for kind in NEW_KINDS:
        for index in range(30):
            row, wav = make_clip(1, kind, "test", index)
            truth.append(row["attributes"])
            got.append(extract_with_new_kinds(wav, corpus.SAMPLE_RATE, reference=row["attributes"]))
    kind_accuracy = np.mean([g["kind"] == t["kind"] for g, t in zip(got, truth, strict=True)])
    assert kind_accuracy >= 0.98
    for name in ("pitch", "envelope", "count", "loudness"):
        pairs = [(g.get(name), t[name]) for g, t in zip(got, truth, strict=True) if name in t]
        assert np.mean([a == b for a, b in pairs]) >= 0.9, name


@pytest.mark.parametrize("kind", corpus.KINDS)
def test_the_corpus_kinds_read_as_before(kind):
    """An sfx clip goes to the corpus's extractor unchanged: same answer as extract_sfx."""
    for index in range(3):
        rng = corpus.clip_rng(5, 1000 * corpus.KINDS.index(kind) + index)
        attributes = corpus.sample_attributes(rng, kind=kind)
        wav = corpus.synthesize(attributes, rng)
        assert extract_with_new_kinds(wav, corpus.SAMPLE_RATE) == extract_sfx(wav, corpus.SAMPLE_RATE)
