"""Embedding cache: hits and misses, content-keyed invalidation, embedder separation, atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.evaluation.embedding_cache import EmbeddingCache, content_hash


def write_clips(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip{i}.wav"
        path.write_bytes(f"fake audio {i}".encode() * 50)
        paths.append(path)
    return paths


class CountingEmbedder:
    """Embeds a file as [length of its bytes, byte sum, index of the call]; records the paths it was asked for."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[Path]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, paths: list[Path]) -> np.ndarray:
        self.calls.append(list(paths))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("embedder failed")
        return np.array([[len(p.read_bytes()), sum(p.read_bytes()), len(self.calls)] for p in paths],
                        dtype=np.float32)

    @property
    def embedded(self) -> list[Path]:
        return [p for call in self.calls for p in call]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_content_hash_is_sha256_of_the_bytes(tmp_path):
    path = write_clips(tmp_path, 1)[0]
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_miss_then_hit(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    path = write_clips(tmp_path / "audio", 1)[0]
    assert cache.get(path, "clap@48k") is None
    stored = np.arange(6, dtype=np.float32).reshape(2, 3)
    entry = cache.put(path, "clap@48k", stored)
    assert entry.parent.name == hashlib.sha256(b"clap@48k").hexdigest()[:16]
    assert (entry.parent / "embedder_id.txt").read_text() == "clap@48k"
    got = cache.get(path, "clap@48k")
    assert got.dtype == np.float32 and np.array_equal(got, stored)


def test_embed_files_computes_only_missing_entries(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    paths = write_clips(tmp_path / "audio", 5)
    cache.put(paths[1], "vggish", np.full(3, -1.0, dtype=np.float32))
    embedder = CountingEmbedder()
    out = cache.embed_files(paths, "vggish", embedder, batch_size=2)
    assert embedder.embedded == [paths[0], paths[2], paths[3], paths[4]]
    assert [len(c) for c in embedder.calls] == [2, 2]
    assert np.array_equal(out[1], np.full(3, -1.0))
    assert out[0][0] == len(paths[0].read_bytes()) and out[4][2] == 2  # computed in the second batch

    again = CountingEmbedder()
    second = cache.embed_files(paths, "vggish", again, batch_size=2)
    assert again.calls == []
    for a, b in zip(out, second, strict=True):
        assert np.array_equal(a, b)


def test_identical_content_is_embedded_once(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    a, b = write_clips(tmp_path / "audio", 2)
    twin = tmp_path / "audio" / "copy_of_clip0.wav"
    twin.write_bytes(a.read_bytes())
    embedder = CountingEmbedder()
    out = cache.embed_files([a, b, twin], "panns", embedder)
    assert embedder.embedded == [a, b] and np.array_equal(out[0], out[2])


def test_changed_content_misses_the_cache(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    path = write_clips(tmp_path / "audio", 1)[0]
    cache.put(path, "clap", np.ones(4))
    path.write_bytes(b"other audio of another length")
    assert cache.get(path, "clap") is None
    embedder = CountingEmbedder()
    out = cache.embed_files([path], "clap", embedder)
    assert embedder.embedded == [path] and out[0][0] == len(b"other audio of another length")


def test_embedder_ids_do_not_collide(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    path = write_clips(tmp_path / "audio", 1)[0]
    cache.put(path, "clap-630k@48k", np.zeros(3))
    cache.put(path, "clap-630k@44k", np.ones(3))
    assert np.array_equal(cache.get(path, "clap-630k@48k"), np.zeros(3))
    assert np.array_equal(cache.get(path, "clap-630k@44k"), np.ones(3))
    assert cache.get(path, "panns-cnn14") is None
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_a_failing_embedder_keeps_finished_batches_and_leaves_no_partial_files(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    paths = write_clips(tmp_path / "audio", 5)
    with pytest.raises(RuntimeError, match="embedder failed"):
        cache.embed_files(paths, "vggish", CountingEmbedder(fail_on_call=2), batch_size=2)
    assert cache.get(paths[0], "vggish") is not None and cache.get(paths[1], "vggish") is not None
    assert all(cache.get(p, "vggish") is None for p in paths[2:])
    assert temp_files(tmp_path / "cache") == []
    resumed = CountingEmbedder()
    cache.embed_files(paths, "vggish", resumed, batch_size=2)
    assert resumed.embedded == paths[2:]


def test_a_write_interrupted_midway_leaves_neither_entry_nor_temp_file(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    path = write_clips(tmp_path / "audio", 1)[0]

    def half_write(file, array, allow_pickle=False):
        file.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        cache.put(path, "clap", np.ones(3))
    monkeypatch.undo()
    assert cache.get(path, "clap") is None
    assert temp_files(tmp_path / "cache") == []


def test_tensor_outputs_and_wrong_batch_sizes(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    paths = write_clips(tmp_path / "audio", 3)
    out = cache.embed_files(paths, "torch", lambda batch: torch.arange(len(batch) * 2.0).reshape(-1, 2))
    assert [o.tolist() for o in out] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]  # default batch of 16: one call
    with pytest.raises(ValueError, match=r"'short' returned 1 embeddings for a batch of 3 files"):
        cache.embed_files(write_clips(tmp_path / "more", 3), "short", lambda batch: np.zeros((1, 2)))
