"""On-disk cache of audio embeddings, keyed by (file content, embedder identity).

Layout: `root/<sha256(embedder_id)[:16]>/<sha256(file bytes)>.npy`, plus `embedder_id.txt` in each folder
holding the identity string in clear. The key is the audio's content, not its path or modification time: a file
rewritten with other audio misses the cache, and the same audio under two names is embedded once. The embedder
identity must name everything that changes the output (model and checkpoint, sample rate, pooling, …); another
identity never sees these entries. Writes go to a temporary file in the same folder and are moved into place
(`audiodiff.utils.files.atomic_path`), so a crash or a failing embedder never leaves a partial entry behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiodiff.utils.files import atomic_path
from audiodiff.utils.hashing import file_sha256, text_sha256

content_hash = file_sha256  # the name entries are keyed by; kept for code that imports it from here

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[Path]], Any]  # paths of a batch → one embedding per path ([B, ...] array or a sequence)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class EmbeddingCache:
    """Embeddings stored under `root`, one .npy file per (audio content, embedder identity)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, embedder_id: str) -> Path:
        """The folder holding `embedder_id`'s entries (it may not exist yet)."""
        if not embedder_id:
            raise ValueError("EmbeddingCache: embedder_id must be a non-empty string naming the embedder")
        folder = self.root / text_sha256(embedder_id)[:16]
        label = folder / "embedder_id.txt"
        if label.is_file() and (stored := label.read_text(encoding="utf-8")) != embedder_id:
            raise ValueError(f"EmbeddingCache: {folder} belongs to embedder {stored!r}, not {embedder_id!r} "
                             "(hash prefix collision); use another cache root")
        return folder

    def _writable_folder(self, embedder_id: str) -> Path:
        """`folder(embedder_id)`, created with its embedder_id.txt on first write."""
        folder = self.folder(embedder_id)
        label = folder / "embedder_id.txt"
        if not label.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(label) as tmp:
                tmp.write_bytes(embedder_id.encode("utf-8"))
        return folder

    @staticmethod
    def _load(folder: Path, digest: str) -> np.ndarray | None:
        entry = folder / f"{digest}.npy"
        if not entry.is_file():
            return None
        try:
            return np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # damaged outside this class (disk full, manual edits)
            log.warning("embedding cache entry %s is unreadable (%s); recomputing it", entry, err)
            return None

    @staticmethod
    def _save(folder: Path, digest: str, embedding: Any) -> np.ndarray:
        array = np.ascontiguousarray(_to_numpy(embedding))
        if array.dtype == object:
            raise ValueError(f"EmbeddingCache: embeddings must be numeric arrays, got dtype object for {digest}")
        with atomic_path(folder / f"{digest}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        return array

    def get(self, path: str | Path, embedder_id: str) -> np.ndarray | None:
        """The cached embedding of the audio file at `path` by `embedder_id`, or None on a miss."""
        return self._load(self.folder(embedder_id), file_sha256(path))

    def put(self, path: str | Path, embedder_id: str, embedding: Any) -> Path:
        """Store `embedding` (numpy array or tensor, any shape) for the file at `path`; returns the entry path."""
        folder = self._writable_folder(embedder_id)
        digest = file_sha256(path)
        self._save(folder, digest, embedding)
        return folder / f"{digest}.npy"

    def embed_files(self, paths: Iterable[str | Path], embedder_id: str, fn: EmbedFn,
                    batch_size: int = 16) -> list[np.ndarray]:
        """Embeddings of `paths` in order, computing only the missing ones with `fn` in batches of `batch_size`.

        fn(list of paths) must return one embedding per path (an array or tensor [B, ...], or a sequence of B
        arrays). Each batch is stored as soon as it is computed, so an error in a later batch keeps the earlier
        ones; files with identical content are embedded once.
        """
        if batch_size < 1:
            raise ValueError(f"EmbeddingCache.embed_files: batch_size must be >= 1, got {batch_size}")
        paths = [Path(p) for p in paths]
        folder = self.folder(embedder_id)
        digests = [file_sha256(p) for p in paths]
        found: dict[str, np.ndarray] = {}
        missing: dict[str, Path] = {}
        for path, digest in zip(paths, digests, strict=True):
            if digest in found or digest in missing:
                continue
            cached = self._load(folder, digest)
            if cached is None:
                missing[digest] = path
            else:
                found[digest] = cached
        log.info("embedding cache %s (%s): %d hits, %d to compute", folder, embedder_id, len(found), len(missing))
        todo = list(missing.items())
        if todo:
            folder = self._writable_folder(embedder_id)
        for start in range(0, len(todo), batch_size):
            batch = todo[start: start + batch_size]
            out = fn([path for _, path in batch])
            embeddings: Sequence[Any] = list(out) if not isinstance(out, (np.ndarray, torch.Tensor)) else out
            if len(embeddings) != len(batch):
                raise ValueError(f"EmbeddingCache.embed_files: embedder {embedder_id!r} returned {len(embeddings)} "
                                 f"embeddings for a batch of {len(batch)} files (first: {batch[0][1]})")
            for (digest, _), embedding in zip(batch, embeddings, strict=True):
                found[digest] = self._save(folder, digest, embedding)
        return [found[d] for d in digests]
