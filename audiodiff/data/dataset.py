"""Audio-caption pairs from a manifest, cropped or padded to a fixed segment.

Randomness (crop offset, caption choice, shuffling) comes from generators seeded by ``(seed, epoch, index)``,
so an item is the same whatever the number of DataLoader workers or the order in which they fetch. The epoch
travels with each index (see :class:`EpochSampler`), which keeps it right inside persistent worker processes,
where a ``set_epoch`` call on the main process's dataset object would never arrive.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audiodiff.audio.errors import AudioError
from audiodiff.audio.io import load_audio
from audiodiff.audio.transforms import crop_or_pad, random_offset
from audiodiff.data.manifest import Holdout, ManifestRow, read_manifest

log = logging.getLogger(__name__)

Item = dict[str, Any]
# A dataset key: a row index, or ``(row index, epoch)`` as :class:`EpochSampler` yields it.
Key = int | tuple[int, int]


class NoReadableAudioError(RuntimeError):
    """Every clip tried for an item failed to load."""


class EmptySplitError(ValueError):
    """The manifest has no rows in the requested split."""


def _seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from non-negative integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator that decides item ``index``'s crop and caption in ``epoch``."""
    return torch.Generator().manual_seed(_seed(0, seed, epoch, index))


class AudioCaptionDataset(Dataset[Item]):
    """Clips and captions from a manifest, as fixed-length segments.

    Each item is a dict:

    - ``wav``: float32 ``[channels, segment_samples]`` at ``sample_rate`` Hz, zero-padded past the clip's end;
    - ``mask``: bool ``[segment_samples]``, ``True`` on real audio;
    - ``seconds_start``, ``seconds_total``: float, where the segment starts in its clip and the clip's length
      (seconds), for timing conditioning;
    - ``caption``: str, uniformly drawn from the row's captions when ``train``, the first otherwise;
    - ``attributes``: the row's ``attributes`` dict;
    - ``index``: int, the manifest row (within the split) that was loaded;
    - ``audio``: str, that row's audio path.

    Clips that fail to load (:class:`~audiodiff.audio.errors.AudioError`) are skipped: the item becomes the
    next readable row (cyclically), the failure is logged once per file, remembered in :meth:`failures` and,
    when ``skip_log`` is set, appended to that file as ``path<TAB>reason`` (so that worker processes can
    report).
    """

    def __init__(
        self,
        manifest: str | Path,
        split: str | None = None,
        *,
        sample_rate: int,
        channels: int = 1,
        segment_seconds: float,
        train: bool,
        seed: int = 0,
        skip_log: str | Path | None = None,
        holdout: Holdout | None = None,
    ) -> None:
        """
        Args:
            manifest: JSONL manifest (see :mod:`audiodiff.data.manifest`).
            split: keep rows of this split only (``None``: every row).
            sample_rate: output rate in Hz; clips are resampled to it.
            channels: output channel count (mean downmix to 1, or duplication of mono).
            segment_seconds: segment length in seconds;
                ``segment_samples = round(segment_seconds * sample_rate)``.
            train: random crop offsets and random captions (else offset 0 and the first caption).
            seed: base seed of every item's generator.
            skip_log: file to which skipped clips are appended as ``path<TAB>reason`` lines.
            holdout: splits for rows that have none (:class:`~audiodiff.data.manifest.Holdout`); ``None``: such
                rows are in no split.
        """
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        segment_samples = round(segment_seconds * sample_rate)
        if segment_samples < 1:
            raise ValueError(
                f"segment_seconds={segment_seconds} at {sample_rate} Hz gives {segment_samples} samples, "
                "expected >= 1"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.manifest = Path(manifest)
        self.split = split
        self.rows: list[ManifestRow] = read_manifest(self.manifest, split, holdout)
        if not self.rows:
            every = read_manifest(self.manifest, holdout=holdout)
            available = sorted({r.split or "(none)" for r in every})
            raise EmptySplitError(
                f"{self.manifest}: no rows in split {split!r}; the manifest's splits are {available}"
                + (f" ({len(every)} rows)" if every else " (it has no rows)")
            )
        self.sample_rate = sample_rate
        self.channels = channels
        self.segment_samples = segment_samples
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.skip_log = None if skip_log is None else Path(skip_log)
        self._failures: dict[str, str] = {}
        self._bad_rows: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer keys (keys from :class:`EpochSampler` carry their own)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def failures(self) -> dict[str, str]:
        """Clips that failed to load in this process: audio path → reason."""
        return dict(self._failures)

    def captions(self) -> list[str]:
        """Every distinct caption of the rows, in order of first appearance."""
        return list(dict.fromkeys(c for row in self.rows for c in row.captions))

    def __getitem__(self, key: Key) -> Item:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), self.epoch)
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for {len(self.rows)} rows")
        reasons: list[str] = []
        for step in range(len(self.rows)):
            candidate = (index + step) % len(self.rows)
            if candidate in self._bad_rows:
                continue
            try:
                return self._load(candidate, epoch)
            except AudioError as error:
                self._record_failure(candidate, error.reason)
                reasons.append(f"{self.rows[candidate].audio}: {error.reason}")
        known = [f"{path}: {reason}" for path, reason in list(self._failures.items())[:3]]
        raise NoReadableAudioError(
            f"{self.manifest}: none of the {len(self.rows)} clips in split {self.split!r} could be loaded; "
            f"for example {'; '.join(reasons[:3] or known)}"
        )

    def _load(self, index: int, epoch: int) -> Item:
        row = self.rows[index]
        wav, _ = load_audio(row.audio, sample_rate=self.sample_rate, channels=self.channels)
        return make_item(row, wav, index, item_generator(self.seed, epoch, index), self.segment_samples,
                         self.sample_rate, self.train)

    def _record_failure(self, index: int, reason: str) -> None:
        self._bad_rows.add(index)
        path = str(self.rows[index].audio)
        if path in self._failures:
            return
        self._failures[path] = reason
        log.warning("skipping unreadable clip %s: %s", path, reason)
        if self.skip_log is not None:
            append_skip(self.skip_log, path, reason)


def make_item(row: ManifestRow, wav: torch.Tensor, index: int, generator: torch.Generator, segment_samples: int,
              sample_rate: int, train: bool) -> Item:
    """The training item of a decoded clip wav [C, T] at `sample_rate` Hz: a random `segment_samples` crop (start
    of the clip outside training) padded with silence and its mask, and a caption drawn from the row's captions
    (the first outside training); `generator` draws the crop, then the caption."""
    total = wav.shape[-1]
    offset = random_offset(total, segment_samples, generator) if train else 0
    wav, mask = crop_or_pad(wav, segment_samples, offset)
    return {
        "wav": wav.to(torch.float32).contiguous(),
        "mask": mask,
        "seconds_start": offset / sample_rate,
        "seconds_total": total / sample_rate,
        "caption": choose_caption(row.captions, generator, train),
        "attributes": dict(row.attributes),
        "index": index,
        "audio": str(row.audio),
    }


def choose_caption(captions: Sequence[str], generator: torch.Generator, train: bool) -> str:
    """One of a row's captions: drawn uniformly with `generator` in training (nothing drawn for a single caption),
    the first otherwise."""
    if train and len(captions) > 1:
        return captions[int(torch.randint(len(captions), (1,), generator=generator))]
    return captions[0]


def append_skip(log_file: Path, path: str, reason: str) -> None:
    """Append one ``path<TAB>reason`` line with a single ``O_APPEND`` write (safe across processes)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    clean = " ".join(reason.split())
    data = f"{path}\t{clean}\n".encode()
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_skips(log_file: str | Path) -> dict[str, str]:
    """Skipped clips recorded in a skip log: audio path → first reason (empty when there is no log yet)."""
    log_file = Path(log_file)
    if not log_file.exists():
        return {}
    skips: dict[str, str] = {}
    for line in log_file.read_text(encoding="utf-8").splitlines():
        path, _, reason = line.partition("\t")
        if path:
            skips.setdefault(path, reason)
    return skips


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` keys, shuffled by a generator seeded from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch; without it, each new iteration
    moves on to the next epoch by itself.
    """

    def __init__(self, num_items: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            generator = torch.Generator().manual_seed(_seed(1, self.seed, epoch))
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        return iter([(index, epoch) for index in order])


def collate(items: Sequence[Item], signal: str = "wav") -> dict[str, Any]:
    """Batch items from :class:`AudioCaptionDataset` (or, with ``signal="latents"``, from a latent cache).

    Returns:
        ``wav`` float32 ``[B, C, T]`` (or ``latents`` ``[B, D, F]``), ``mask`` bool ``[B, T]`` (``[B, F]``),
        ``seconds_start`` and ``seconds_total`` float32 ``[B]``, ``caption`` list of B str, ``attributes`` list of
        B dicts, ``index`` int64 ``[B]``, ``audio`` list of B str.
    """
    if not items:
        raise ValueError("collate needs at least one item")
    return {
        signal: torch.stack([item[signal] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
        "seconds_start": torch.tensor([item["seconds_start"] for item in items], dtype=torch.float32),
        "seconds_total": torch.tensor([item["seconds_total"] for item in items], dtype=torch.float32),
        "caption": [item["caption"] for item in items],
        "attributes": [item["attributes"] for item in items],
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "audio": [item["audio"] for item in items],
    }
