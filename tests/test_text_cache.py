"""Dataset-wide text cache: round trip, staleness, and use by training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.conditioning import TextEncoder
from audiodiff.conditioning.cache import cached_states, encoder_signature, load_text_cache, save_text_cache
from audiodiff.config import compose_config
from audiodiff.data.manifest import read_manifest
from audiodiff.training.diffusion.run import train

CAPTIONS = ["three loud beeps", "a quiet fading rumble", "", "a rising sweep"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()  # the packaged MiniLM


def test_round_trip_keeps_every_caption_state(encoder, tmp_path):
    states = encoder.encode_unique(CAPTIONS, dtype=torch.float16)
    path = save_text_cache(tmp_path / "states.safetensors", states, encoder_signature(encoder))
    loaded = load_text_cache(path, encoder_signature(encoder))
    assert loaded is not None and list(loaded) == list(states)
    for caption, (tokens, pooled) in states.items():
        assert torch.equal(loaded[caption][0], tokens) and torch.equal(loaded[caption][1], pooled)
    assert loaded[""][0].shape == (0, encoder.dim)
    assert not (tmp_path / "states.safetensors.tmp").exists()


def test_a_cache_from_another_encoder_is_rebuilt(encoder, tmp_path):
    path = tmp_path / "states.safetensors"
    other = {**encoder_signature(encoder), "max_length": 7}
    save_text_cache(path, encoder.encode_unique(CAPTIONS[:1]), other)
    assert load_text_cache(path, encoder_signature(encoder)) is None
    states = cached_states(path, encoder, CAPTIONS)
    assert set(states) == set(CAPTIONS)
    assert load_text_cache(path, encoder_signature(encoder)) is not None


def test_only_missing_captions_are_encoded(encoder, tmp_path, monkeypatch):
    path = tmp_path / "states.safetensors"
    cached_states(path, encoder, CAPTIONS[:2])
    asked: list[list[str]] = []
    original = encoder.encode_unique
    monkeypatch.setattr(encoder, "encode_unique", lambda caps, **kw: asked.append(caps) or original(caps, **kw))
    states = cached_states(path, encoder, CAPTIONS)
    assert asked == [CAPTIONS[2:]] and set(states) == set(CAPTIONS)


def test_training_fills_and_reuses_the_dataset_cache(tmp_path):
    root = tmp_path / "data"
    manifest = ensure_corpus("sfx", root, num_clips=48, workers=1)
    cache = tmp_path / "text_states.safetensors"
    overrides = ["recipe=debug", f"data.root={root}", f"task.text_cache_file={cache}"]
    train(compose_config("train", [*overrides, f"run_dir={tmp_path / 'run'}"]))
    signature = encoder_signature(TextEncoder())
    states = load_text_cache(cache, signature)
    captions = {c for split in ("train", "val") for row in read_manifest(manifest, split) for c in row.captions}
    assert states is not None and captions | {""} <= set(states)
    stamp = Path(cache).stat().st_mtime_ns
    train(compose_config("train", [*overrides, f"run_dir={tmp_path / 'run2'}"]))
    assert Path(cache).stat().st_mtime_ns == stamp  # complete already: read, not rewritten
