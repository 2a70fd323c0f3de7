"""Sharded training data: a manifest packed into tar files (the WebDataset layout) and a streaming dataset over them.

``python -m audiodiff.data.shards manifest=<manifest.jsonl> out=<folder> [split=train] [shard_size=N]
[max_shard_mb=M] [audio_format=original|flac]`` converts every split of the manifest (or only ``split``); see
``conf/shards.yaml`` (or ``--help``) for the settings.

Folder layout, one shard set per split:

- ``<split>-000000.tar``, ``<split>-000001.tar``, ...: POSIX ustar archives whose members are ``<key>.<ext>``;
  consecutive members with the same key form one sample (the WebDataset convention; Aizman et al. (2019), "High
  Performance I/O For Large Scale Deep Learning"). A sample holds its audio (the original file's bytes under its
  own extension, or ``<key>.flac``) and ``<key>.json``, the manifest row (:meth:`ManifestRow.to_dict`; its
  absolute ``audio`` path is kept for reference). The key is the row's position within its split, zero-padded to
  nine digits, so that items are those :class:`~audiodiff.data.dataset.AudioCaptionDataset` gives for that row.
- ``<split>.captions.json``: every distinct caption of the split, in order of first appearance (text caches).
- ``<split>.json``: the index, written last: format and version, the shards with their sample counts and byte
  sizes, and the clips skipped during conversion with the reason.

Every file is written to a temporary name in the same folder and renamed into place, and a conversion removes the
split's old index before it starts, so an interrupted conversion never leaves a truncated shard under its final name
nor an index that describes shards it did not finish.

Precomputed latents are out of scope: shards hold audio, and the representation encodes it during training.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, get_args

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from audiodiff.audio.errors import AudioDecodeError, AudioEncodeError, AudioError
from audiodiff.audio.io import load_audio
from audiodiff.data.dataset import (
    EmptySplitError,
    Item,
    NoReadableAudioError,
    append_skip,
    item_generator,
    make_item,
)
from audiodiff.data.manifest import ManifestRow, _make_row, _row_problems, read_manifest
from audiodiff.utils.files import atomic_open, write_json
from audiodiff.utils.settings import number, text, whole

log = logging.getLogger(__name__)

AudioFormat = Literal["original", "flac"]
FORMAT = "audiodiff-shards"
VERSION = 1
DEFAULT_SHARD_SIZE = 1000
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Stream tags that keep the generators of different decisions apart (numpy's SeedSequence hashes the lists).
_SHARD_ORDER, _BUFFER_ORDER = 11, 12
T = TypeVar("T")


class ShardIndexError(ValueError):
    """A shard folder, its index or a shard the index lists is missing or malformed."""


class ShardCountError(ValueError):
    """Too few shards for every (rank, DataLoader worker) reader to get at least one."""


# -- format --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard of an index.

    Attributes:
        name: file name inside the shard folder.
        samples: samples it holds.
        nbytes: file size in bytes.
    """

    name: str
    samples: int
    nbytes: int


@dataclass(frozen=True)
class ShardIndex:
    """The ``<split>.json`` index of a shard folder.

    Attributes:
        folder: the shard folder.
        split: the split its shards hold.
        shards: the shards, in conversion order.
        audio_format: ``"original"`` (the source files' bytes) or ``"flac"`` (re-encoded, 24-bit).
        source: the manifest the shards were converted from.
        skipped: clips left out at conversion: audio path → reason.
    """

    folder: Path
    split: str
    shards: tuple[ShardInfo, ...]
    audio_format: str
    source: str
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        """Samples in all shards."""
        return sum(shard.samples for shard in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "split": self.split,
            "audio_format": self.audio_format,
            "source": self.source,
            "samples": self.samples,
            "shards": [{"name": s.name, "samples": s.samples, "bytes": s.nbytes} for s in self.shards],
            "skipped": dict(self.skipped),
        }


def index_path(folder: str | Path, split: str) -> Path:
    """``<folder>/<split>.json``."""
    return Path(folder) / f"{split}.json"


def captions_path(folder: str | Path, split: str) -> Path:
    """``<folder>/<split>.captions.json``."""
    return Path(folder) / f"{split}.captions.json"


def available_splits(folder: str | Path) -> list[str]:
    """Splits that have an index in ``folder``."""
    return sorted(p.stem for p in Path(folder).glob("*.json") if not p.name.endswith(".captions.json"))


def read_index(folder: str | Path, split: str) -> ShardIndex:
    """Read and check the index of one split, and that every shard it lists is on disk with its recorded size.

    Raises:
        ShardIndexError: the folder or index is missing, the index is malformed, or a shard is missing or has
            another size than recorded (copied partly?).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ShardIndexError(
            f"{folder}: shard folder not found; convert a manifest with "
            f"`python -m audiodiff.data.shards manifest=<manifest.jsonl> out={folder}`"
        )
    path = index_path(folder, split)
    if not path.is_file():
        raise ShardIndexError(
            f"{folder}: no index {path.name} for split {split!r}; the folder has indexes for "
            f"{available_splits(folder)} (an interrupted conversion leaves none: run it again)"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ShardIndexError(f"{path}: expected a JSON shard index, got unreadable JSON ({error})") from error
    expected = f"an object with format {FORMAT!r} and version {VERSION}"
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("version") != VERSION:
        got = {k: obj.get(k) for k in ("format", "version")} if isinstance(obj, dict) else type(obj).__name__
        raise ShardIndexError(f"{path}: expected {expected}, got {got}")
    try:
        shards = tuple(ShardInfo(str(s["name"]), int(s["samples"]), int(s["bytes"])) for s in obj["shards"])
        index = ShardIndex(folder, str(obj["split"]), shards, str(obj["audio_format"]), str(obj["source"]),
                           dict(obj.get("skipped") or {}))
    except (KeyError, TypeError, ValueError) as error:
        raise ShardIndexError(f"{path}: malformed shard list or field ({error!r})") from error
    if not shards or index.samples < 1:
        raise ShardIndexError(f"{path}: expected at least one shard with samples, got {len(shards)} shard(s)")
    problems = []
    for shard in shards:
        file = folder / shard.name
        if not file.is_file():
            problems.append(f"{shard.name} is missing")
        elif file.stat().st_size != shard.nbytes:
            problems.append(f"{shard.name} has {file.stat().st_size} bytes, expected {shard.nbytes}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ShardIndexError(f"{path}: {'; '.join(problems[:5])}{more}")
    return index


def read_captions(folder: str | Path, split: str) -> list[str]:
    """Every distinct caption of a converted split, in order of first appearance."""
    path = captions_path(folder, split)
    if not path.is_file():
        raise ShardIndexError(f"{path}: caption list of split {split!r} not found (convert the manifest again)")
    captions = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ShardIndexError(f"{path}: expected a JSON list of strings, got {type(captions).__name__}")
    return captions


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of one shard, in order, as ``(key, {extension: bytes})``.

    The key is a member's path up to the first dot of its file name, and the extension what follows that dot
    (WebDataset's rule). The archive is read as a stream (no seeking).

    Raises:
        tarfile.TarError, OSError, EOFError: the archive is unreadable or truncated; the samples before the damage
            have been yielded, the one being read is dropped.
    """
    with tarfile.open(path, mode="r|") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for info in tar:
            if not info.isfile():
                continue
            folder, _, name = info.name.rpartition("/")
            stem, _, ext = name.partition(".")
            handle = tar.extractfile(info)
            assert handle is not None  # regular files always have contents
            data = handle.read()
            member_key = f"{folder}/{stem}" if folder else stem
            if member_key != key:
                if key is not None:
                    yield key, members
                key, members = member_key, {}
            members[ext] = data
        if key is not None:
            yield key, members


# -- writing -------------------------------------------------------------------------------------------------


def _check_split_name(split: str) -> None:
    if not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"split name must match {_SPLIT_NAME.pattern} to name files, got {split!r}")


def _member_bytes(size: int) -> int:
    """Bytes a ustar member of ``size`` bytes takes: a 512-byte header, then the data padded to 512 bytes."""
    return tarfile.BLOCKSIZE * (1 + math.ceil(size / tarfile.BLOCKSIZE))


def _archive_bytes(content: int) -> int:
    """File size of an archive whose members take ``content`` bytes: two zero blocks end it, and tarfile pads the
    whole to a multiple of its record size (10 KiB)."""
    return tarfile.RECORDSIZE * math.ceil((content + 2 * tarfile.BLOCKSIZE) / tarfile.RECORDSIZE)


class _ShardAborted(Exception):
    """Thrown into an unfinished shard's atomic_open block, so that it is dropped rather than renamed."""


class ShardWriter:
    """Writes samples into ``<split>-NNNNNN.tar`` shards, each to a temporary file renamed into place when full.

    A shard is finished as soon as it holds ``shard_size`` samples, or when the next sample would take its file
    past ``max_shard_bytes`` (a sample larger than that gets a shard of its own). Used as a context manager,
    an exception removes the unfinished shard's temporary file; finished shards stay.
    """

    def __init__(self, folder: str | Path, split: str, *, shard_size: int | None = None,
                 max_shard_bytes: int | None = None) -> None:
        """
        Args:
            folder: where the shards go (created if needed).
            split: name prefix of the shard files.
            shard_size: most samples per shard (default :data:`DEFAULT_SHARD_SIZE` when neither limit is given).
            max_shard_bytes: most bytes per shard file.
        """
        if shard_size is None and max_shard_bytes is None:
            shard_size = DEFAULT_SHARD_SIZE
        if shard_size is not None and shard_size < 1:
            raise ValueError(f"shard_size must be >= 1 sample, got {shard_size}")
        if max_shard_bytes is not None and max_shard_bytes < 1:
            raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
        _check_split_name(split)
        self.folder = Path(folder)
        self.split = split
        self.shard_size = shard_size
        self.max_shard_bytes = max_shard_bytes
        self.shards: list[ShardInfo] = []
        self._file: AbstractContextManager[IO[Any]] | None = None  # atomic_open of the shard being written
        self._handle: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._content = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: ``members`` maps extensions (``"json"``, ``"flac"``, ...) to bytes."""
        if not key or "." in key or "/" in key:
            raise ValueError(f"sample key must be non-empty without '.' or '/', got {key!r}")
        if not members or any(not ext or "/" in ext for ext in members):
            raise ValueError(f"sample {key!r}: expected non-empty extensions without '/', got {list(members)}")
        size = sum(_member_bytes(len(data)) for data in members.values())
        if (self._tar is not None and self.max_shard_bytes is not None
                and _archive_bytes(self._content + size) > self.max_shard_bytes):
            self._finish()
        tar = self._tar or self._start()
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # the same samples give byte-identical shards
            tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._content += size
        if self.shard_size is not None and self._count >= self.shard_size:
            self._finish()

    def close(self) -> list[ShardInfo]:
        """Finish the current shard; returns every shard written."""
        if self._tar is not None:
            self._finish()
        return list(self.shards)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file is removed)."""
        if self._tar is not None:
            try:
                self._tar.close()
            except OSError:
                pass
        if self._file is not None:  # left with an error, atomic_open closes and removes its temporary
            self._file.__exit__(_ShardAborted, _ShardAborted(), None)
        self._tar = self._handle = self._file = None

    def _start(self) -> tarfile.TarFile:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.split}-{len(self.shards):06d}.tar"
        self._file = atomic_open(self.folder / name, "wb")  # streamed into; renamed onto `name` by _finish
        self._handle = self._file.__enter__()
        self._tar = tarfile.open(fileobj=self._handle, mode="w", format=tarfile.USTAR_FORMAT)
        self._count = self._content = 0
        return self._tar

    def _finish(self) -> None:
        assert self._tar is not None and self._file is not None
        self._tar.close()  # writes the end-of-archive blocks; the file itself stays open
        self._file.__exit__(None, None, None)  # flush, fsync, mode 0o644, rename onto the shard's name
        final = self.folder / f"{self.split}-{len(self.shards):06d}.tar"
        self.shards.append(ShardInfo(final.name, self._count, final.stat().st_size))
        self._tar = self._handle = self._file = None


def _encoded_audio(row: ManifestRow, audio_format: AudioFormat) -> tuple[str, bytes]:
    """``(extension, bytes)`` of a row's audio; the clip is decoded in full first, so unreadable clips raise.

    Raises:
        AudioError: the clip cannot be decoded (or, for ``"flac"``, encoded).
    """
    wav, sample_rate = load_audio(row.audio)  # [C, T] at the file's rate
    if audio_format == "original":
        try:
            return row.audio.suffix.lower().lstrip(".") or "audio", row.audio.read_bytes()
        except OSError as error:
            raise AudioDecodeError(row.audio, f"could not read the file ({error})") from error
    buffer = io.BytesIO()
    try:
        sf.write(buffer, np.clip(wav.numpy().T, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_24")
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise AudioEncodeError(row.audio, f"could not encode FLAC/PCM_24 ({error})") from error
    return "flac", buffer.getvalue()


def convert_split(rows: Sequence[ManifestRow], out: str | Path, split: str, *, source: str = "",
                  shard_size: int | None = None, max_shard_mb: float | None = None,
                  audio_format: AudioFormat = "original") -> ShardIndex:
    """Write the rows of one split as shards, then their caption list, then the index.

    Clips that cannot be decoded are left out and listed in the index's ``skipped`` (audio path → reason).
    Shards of an earlier conversion of the split that the new index does not list are removed at the end.

    Args:
        rows: the split's rows, in manifest order (a row's key is its position here).
        out: the shard folder.
        split: the split name (file name prefix).
        source: the manifest, recorded in the index.
        shard_size, max_shard_mb: limits per shard (samples, MiB); see :class:`ShardWriter`.
        audio_format: ``"original"`` stores each file's bytes; ``"flac"`` re-encodes it as 24-bit FLAC at its own
            rate and channel count (samples clipped to [-1, 1]).

    Raises:
        NoReadableAudioError: no clip of the split could be read (no index is written then).
    """
    _check_split_name(split)
    if audio_format not in get_args(AudioFormat):
        raise ValueError(f"audio_format must be one of {list(get_args(AudioFormat))}, got {audio_format!r}")
    if max_shard_mb is not None and max_shard_mb <= 0:
        raise ValueError(f"max_shard_mb must be > 0, got {max_shard_mb}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path(out, split).unlink(missing_ok=True)  # until the new index exists, readers refuse the split
    max_bytes = None if max_shard_mb is None else int(max_shard_mb * 2**20)
    skipped: dict[str, str] = {}
    captions: dict[str, None] = {}
    with ShardWriter(out, split, shard_size=shard_size, max_shard_bytes=max_bytes) as writer:
        for position, row in enumerate(rows):
            try:
                ext, audio = _encoded_audio(row, audio_format)
            except AudioError as error:
                skipped[str(row.audio)] = error.reason
                log.warning("skipping unreadable clip %s: %s", row.audio, error.reason)
                continue
            metadata = json.dumps(row.to_dict(), ensure_ascii=False).encode("utf-8")
            writer.write(f"{position:09d}", {ext: audio, "json": metadata})
            captions.update(dict.fromkeys(row.captions))
    if not writer.shards:
        examples = "; ".join(f"{path}: {reason}" for path, reason in list(skipped.items())[:3])
        raise NoReadableAudioError(
            f"{source or out}: none of the {len(rows)} clips of split {split!r} could be read; for example {examples}"
        )
    index = ShardIndex(out, split, tuple(writer.shards), audio_format, source, skipped)
    write_json(captions_path(out, split), list(captions), indent=1)
    write_json(index_path(out, split), index.to_json(), indent=1)
    listed = {shard.name for shard in index.shards}
    for stale in out.glob(f"{split}-*.tar"):
        if re.fullmatch(rf"{re.escape(split)}-\d{{6}}\.tar", stale.name) and stale.name not in listed:
            stale.unlink()
    return index


def convert_manifest(manifest: str | Path, out: str | Path, *, split: str | None = None,
                     shard_size: int | None = None, max_shard_mb: float | None = None,
                     audio_format: AudioFormat = "original") -> dict[str, ShardIndex]:
    """Convert a manifest into shards under ``out``: one shard set per split (or only ``split``).

    Rows without a ``split`` field are not converted (as :class:`~audiodiff.data.datamodule.AudioDataModule`
    never reads them either). See :func:`convert_split` for the other arguments.

    Returns:
        The index of each converted split.

    Raises:
        ManifestError: the manifest is missing or breaks the schema.
        EmptySplitError: ``split`` has no rows, or no row has a split.
        NoReadableAudioError: a split has no readable clip.
    """
    rows = read_manifest(manifest)
    present = list(dict.fromkeys(row.split for row in rows if row.split is not None))
    if split is not None and split not in present:
        raise EmptySplitError(f"{manifest}: no rows in split {split!r}; the manifest's splits are {present}")
    if not present:
        raise EmptySplitError(f"{manifest}: no row has a 'split' field (e.g. \"split\": \"train\"); nothing to convert")
    return {
        name: convert_split([row for row in rows if row.split == name], out, name, source=str(manifest),
                            shard_size=shard_size, max_shard_mb=max_shard_mb, audio_format=audio_format)
        for name in ([split] if split is not None else present)
    }


# -- reading -------------------------------------------------------------------------------------------------


def shuffle_buffer(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Shuffle a stream through a buffer of ``size`` items (WebDataset's ``shuffle``).

    Once the buffer is full, each new item replaces a uniformly drawn one, which is yielded; the rest is drained in
    random order at the end. Every item comes out exactly once, and item ``i`` of the stream never comes out before
    position ``i - size + 1``. ``size <= 1`` keeps the order.
    """
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            pick = int(rng.integers(len(buffer)))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()
    while buffer:
        pick = int(rng.integers(len(buffer)))
        buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
        yield buffer.pop()


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given pair, else ``torch.distributed``'s when initialised, else ``(0, 1)``."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError(f"give both rank and world_size or neither, got rank={rank}, world_size={world_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


@dataclass(frozen=True)
class _Sample:
    shard: str
    key: str
    members: dict[str, bytes]


class _BadSample(Exception):
    """A sample whose members are missing or malformed."""


class ShardDataset(IterableDataset[Item]):
    """Streams fixed-length segments and captions from the shards of one split.

    Items are those of :class:`~audiodiff.data.dataset.AudioCaptionDataset` for the same manifest row (same keys,
    resampling, channel conversion, crop or pad, caption choice; ``index`` is the row's position within its split
    and ``audio`` its original path): ``wav`` float32 ``[channels, segment_samples]`` at ``sample_rate`` Hz,
    ``mask`` bool ``[segment_samples]``, ``seconds_start``, ``seconds_total``, ``caption``, ``attributes``,
    ``index``, ``audio``. Crops and captions come from :func:`~audiodiff.data.dataset.item_generator`
    ``(seed, epoch, index)``, so they do not depend on ranks or workers.

    Each epoch, the shards are dealt to readers: (with shuffling, after a permutation seeded by ``(seed, epoch)``)
    rank ``r`` of ``W`` takes every ``W``-th shard from the ``r``-th, and DataLoader worker ``w`` of ``K`` every
    ``K``-th of those. Ranks and workers thus read disjoint shards, and with one rank every sample comes once per
    epoch. With several ranks, every reader yields as many items as the fullest reader holds, repeating its own
    samples from the start to make up the difference (DistributedSampler's padding), so that ranks run the same
    number of steps; every sample still comes at least once. The shuffle order depends on the number of workers.

    Samples that cannot be read (damaged archive, missing or malformed members, undecodable audio) are skipped,
    logged once, remembered in :meth:`failures` and appended to ``skip_log`` as ``name<TAB>reason`` lines, with
    ``name`` ``<shard>:<key>`` (or the shard's path for a damaged archive). With several ranks, a skipped sample is
    replaced by the reader's next one so that counts stay equal.

    The epoch is read when iteration starts: call :meth:`set_epoch` before iterating, and use DataLoaders without
    persistent workers (a worker keeps the copy of the dataset it was started with).
    """

    def __init__(
        self,
        folder: str | Path,
        split: str = "train",
        *,
        sample_rate: int,
        channels: int = 1,
        segment_seconds: float,
        train: bool,
        seed: int = 0,
        shuffle_buffer: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        skip_log: str | Path | None = None,
    ) -> None:
        """
        Args:
            folder: shard folder written by :func:`convert_manifest`.
            split: which shard set to read.
            sample_rate: output rate in Hz; clips are resampled to it.
            channels: output channel count (mean downmix to 1, or duplication of mono).
            segment_seconds: segment length in seconds; ``segment_samples = round(segment_seconds * sample_rate)``.
            train: random crop offsets and random captions (else offset 0 and the first caption).
            seed: seeds crops, captions, the shard order and the shuffle buffer.
            shuffle_buffer: 0 reads shards in index order and samples in shard order; ``n >= 1`` permutes the
                shards every epoch and mixes samples through a buffer of ``n`` encoded samples per worker (its
                memory: ``n`` times the mean sample size; 1 only permutes shards).
            rank, world_size: this process's place among data-parallel processes; default ``torch.distributed``'s
                when initialised, else 0 of 1.
            skip_log: file to which skipped samples are appended as ``name<TAB>reason`` lines.

        Raises:
            ShardIndexError: the folder, index or a listed shard is missing (see :func:`read_index`).
        """
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        segment_samples = round(segment_seconds * sample_rate)
        if segment_samples < 1:
            raise ValueError(
                f"segment_seconds={segment_seconds} at {sample_rate} Hz gives {segment_samples} samples, expected >= 1"
            )
        if seed < 0 or shuffle_buffer < 0:
            raise ValueError(f"seed and shuffle_buffer must be >= 0, got seed={seed}, shuffle_buffer={shuffle_buffer}")
        self.index = read_index(folder, split)
        self.folder = Path(folder)
        self.split = split
        self.sample_rate = sample_rate
        self.channels = channels
        self.segment_samples = segment_samples
        self.train = train
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.skip_log = None if skip_log is None else Path(skip_log)
        self.epoch = 0
        self._failures: dict[str, str] = {}
        self._bad: set[tuple[str, str]] = set()

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        return self.index.shards

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next iteration: it seeds the shard order, the shuffle buffer, crops and captions."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def failures(self) -> dict[str, str]:
        """Samples (``<shard>:<key>``) and shards that failed to read in this process: name → reason."""
        return dict(self._failures)

    def captions(self) -> list[str]:
        """Every distinct caption of the split, in order of first appearance."""
        return read_captions(self.folder, self.split)

    def assignment(self, epoch: int, num_workers: int) -> list[list[tuple[ShardInfo, ...]]]:
        """The shards each reader takes in ``epoch``: ``[rank][worker]`` → shards (``num_workers`` 0 counts as 1).

        Raises:
            ShardCountError: fewer shards than ranks × workers, which would leave a reader without data.
        """
        workers = max(1, num_workers)
        shards = list(self.index.shards)
        readers = self.world_size * workers
        if len(shards) < readers:
            raise ShardCountError(
                f"{index_path(self.folder, self.split)}: {len(shards)} shard(s) cannot feed {self.world_size} "
                f"rank(s) x {workers} DataLoader worker(s) = {readers} readers; rank {self.world_size - 1} "
                f"worker {workers - 1} would get no data. Convert with a smaller shard_size or max_shard_mb to get "
                f"at least {readers} shards, or lower num_workers"
            )
        if self.shuffle_buffer > 0:
            order = np.random.default_rng([_SHARD_ORDER, self.seed, epoch]).permutation(len(shards))
            shards = [shards[i] for i in order]
        per_rank = [shards[r :: self.world_size] for r in range(self.world_size)]
        return [[tuple(mine[w::workers]) for w in range(workers)] for mine in per_rank]

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self.epoch
        plan = self.assignment(epoch, workers)
        quota = None
        if self.world_size > 1:
            quota = max(sum(shard.samples for shard in slot) for slots in plan for slot in slots)
        rng = np.random.default_rng([_BUFFER_ORDER, self.seed, epoch, self.rank, worker])
        return self._stream(plan[self.rank][worker], epoch, quota, rng)

    # -- internals -------------------------------------------------------------------------------------------

    def _stream(self, shards: Sequence[ShardInfo], epoch: int, quota: int | None,
                rng: np.random.Generator) -> Iterator[Item]:
        samples = self._samples(shards, cycle=quota is not None)
        first = samples if quota is None else itertools.islice(samples, quota)
        produced = 0
        for sample in shuffle_buffer(first, self.shuffle_buffer, rng):
            item = self._item(sample, epoch)
            if item is not None:
                produced += 1
                yield item
        while quota is not None and produced < quota:  # stand-ins for samples that failed
            sample = next(samples, None)
            if sample is None:
                names = ", ".join(shard.name for shard in shards)
                examples = "; ".join(f"{k}: {v}" for k, v in list(self._failures.items())[:3])
                raise NoReadableAudioError(f"{self.folder}: no sample of {names} could be read; for example {examples}")
            item = self._item(sample, epoch)
            if item is not None:
                produced += 1
                yield item

    def _samples(self, shards: Sequence[ShardInfo], cycle: bool) -> Iterator[_Sample]:
        """The samples of ``shards`` in order; with ``cycle``, again and again while any sample is not known bad."""
        while True:
            found = 0
            for shard in shards:
                for key, members in self._read(shard):
                    if (shard.name, key) not in self._bad:
                        found += 1
                        yield _Sample(shard.name, key, members)
            if not cycle or found == 0:
                return

    def _read(self, shard: ShardInfo) -> Iterator[tuple[str, dict[str, bytes]]]:
        path = self.folder / shard.name
        count = 0
        try:
            for key, members in iter_shard(path):
                count += 1
                yield key, members
        except (tarfile.TarError, OSError, EOFError) as error:
            self._record(str(path), f"damaged archive: unreadable after {count} sample(s) ({error})")
            return
        if count < shard.samples:
            self._record(str(path), f"holds {count} sample(s), its index declares {shard.samples}")

    def _item(self, sample: _Sample, epoch: int) -> Item | None:
        """The item of a sample, or ``None`` (recorded) when it cannot be read."""
        clip = ""
        try:
            index, row, ext = self._parse(sample)
            clip = f" (clip {row.audio})"
            wav = self._decode(sample.members[ext], ext)
        except (_BadSample, AudioError) as error:
            reason = error.reason if isinstance(error, AudioError) else str(error)
            self._bad.add((sample.shard, sample.key))
            self._record(f"{self.folder / sample.shard}:{sample.key}", reason + clip)
            return None
        return make_item(row, wav, index, item_generator(self.seed, epoch, index), self.segment_samples,
                         self.sample_rate, self.train)

    def _parse(self, sample: _Sample) -> tuple[int, ManifestRow, str]:
        """``(row index within the split, manifest row, audio extension)`` of a sample."""
        if not sample.key.isdigit():
            raise _BadSample(f"key {sample.key!r} is not a row number")
        audio = [ext for ext in sample.members if ext != "json"]
        if "json" not in sample.members or len(audio) != 1:
            raise _BadSample(f"expected one .json and one audio member, got {sorted(sample.members)}")
        try:
            obj = json.loads(sample.members["json"].decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _BadSample(f".json member is not valid JSON ({error})") from error
        problems = _row_problems(obj)
        if problems:
            name, expected, got = problems[0]
            raise _BadSample(f".json member: field {name!r}: expected {expected}, got {got}")
        return int(sample.key), _make_row(obj, self.folder, 0), audio[0]

    def _decode(self, data: bytes, ext: str) -> torch.Tensor:
        """``[channels, T]`` float32 at ``sample_rate`` Hz: :func:`load_audio` on a temporary copy of the bytes,
        so that decoding, checks, resampling and channel conversion are those of the manifest dataset."""
        suffix = "." + ext.rsplit(".", 1)[-1] if ext.replace(".", "").isalnum() else ""
        with tempfile.NamedTemporaryFile(prefix="audiodiff-shard-", suffix=suffix) as handle:
            handle.write(data)
            handle.flush()
            wav, _ = load_audio(handle.name, sample_rate=self.sample_rate, channels=self.channels)
        return wav

    def _record(self, name: str, reason: str) -> None:
        if name in self._failures:
            return
        self._failures[name] = reason
        log.warning("skipping unreadable sample %s: %s", name, reason)
        if self.skip_log is not None:
            append_skip(self.skip_log, name, reason)


# -- command line --------------------------------------------------------------------------------------------

def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Convert the manifest `cfg` (conf/shards.yaml) names and print a summary per split. ManifestError,
    EmptySplitError or ValueError (a bad setting, or a split without one readable clip) otherwise."""
    args = {"manifest": text(cfg, "manifest", required=True), "out": text(cfg, "out", required=True),
            "split": text(cfg, "split"), "shard_size": whole(cfg, "shard_size"),
            "max_shard_mb": number(cfg, "max_shard_mb"), "audio_format": text(cfg, "audio_format", required=True)}
    try:
        indexes = convert_manifest(**args)
    except NoReadableAudioError as error:  # about the data, not the program: a user error
        raise ValueError(str(error)) from error
    for split, index in indexes.items():
        names = f"{index.shards[0].name} .. {index.shards[-1].name}" if len(index.shards) > 1 else index.shards[0].name
        size = sum(shard.nbytes for shard in index.shards) / 2**20
        print(f"{split}: {index.samples} clip(s) in {len(index.shards)} shard(s) ({names}, {size:.1f} MiB) under "
              f"{index.folder}; {len(index.skipped)} unreadable clip(s) skipped")
        for path, reason in list(index.skipped.items())[:20]:
            print(f"  skipped {path}: {reason}")
        if len(index.skipped) > 20:
            print(f"  ... and {len(index.skipped) - 20} more, listed in {index_path(index.folder, split)}")


if __name__ == "__main__":
    from audiodiff import cli

    logging.basicConfig(level=logging.ERROR)  # skipped clips are summarised at the end rather than one by one
    cli.main("audiodiff.data.shards", "shards", main, __doc__)
