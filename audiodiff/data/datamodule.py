"""LightningDataModule over a manifest (or a built-in corpus built on first use)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler

from audiodiff.data.dataset import AudioCaptionDataset, EmptySplitError, EpochSampler, collate, read_skips
from audiodiff.data.manifest import Holdout, read_manifest

log = logging.getLogger(__name__)

SKIP_LOG_NAME = "skipped_clips.tsv"


def _worker_init(_worker_id: int) -> None:
    # Each worker decodes one clip at a time; intra-op threads would only fight the main process for cores.
    torch.set_num_threads(1)


class ResumableSampler(DistributedSampler):
    """The :class:`~audiodiff.data.dataset.EpochSampler` order, sharded over ranks, that can start mid-epoch.

    Epoch ``e``'s order is the ``EpochSampler`` permutation of epoch ``e`` (``(index, epoch)`` keys), padded by
    repeating its head to a multiple of ``num_replicas`` and dealt round-robin: rank ``r`` gets positions
    ``r, r + num_replicas, …`` (as :class:`torch.utils.data.DistributedSampler` deals). With one rank the order is
    exactly ``EpochSampler``'s.

    Being a ``DistributedSampler``, Lightning keeps it as it is under DDP instead of wrapping it in a sampler of its
    own, and calls :meth:`set_epoch` at every epoch start. :meth:`resume` makes the next iteration of an epoch skip the
    keys that were already consumed; :class:`ResumableDataLoader` calls it from a checkpoint's loader state.
    """

    def __init__(self, num_items: int, *, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._order = EpochSampler(num_items, seed=seed, shuffle=True)
        self._start = 0  # keys of epoch `self.epoch` to skip on its next iteration
        self.iter_epoch = 0  # epoch and start of the iteration last begun
        self.iter_start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._start = 0  # a position belongs to its own epoch only
        self.epoch = epoch

    def resume(self, epoch: int, start: int) -> None:
        """Let the next iteration be epoch `epoch` from its `start`-th key (of this rank)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"ResumableSampler.resume: start must be in [0, {self.num_samples}], got {start}")
        self.epoch, self._start = (epoch + 1, 0) if start == self.num_samples else (epoch, start)

    def __len__(self) -> int:
        return self.num_samples  # the whole epoch, also when resuming: Lightning counts the consumed batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self._start
        self.iter_epoch, self.iter_start = epoch, start
        self.epoch, self._start = epoch + 1, 0  # without set_epoch, the next iteration is the next epoch
        self._order.set_epoch(epoch)
        keys = list(self._order)
        keys += keys[: self.total_size - len(keys)]
        return iter(keys[self.rank : self.total_size : self.num_replicas][start:])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose position Lightning saves in checkpoints.

    Lightning stores ``state_dict()`` of every training loader that has one (``fit_loop.state_dict()
    ["combined_loader"]``) and hands it back to ``load_state_dict`` on resume before the first batch is drawn. The
    state is ``{"epoch", "batches", "num_replicas", "num_items"}``: batches of ``epoch`` this loader has yielded. For a
    loader with a length Lightning draws one batch per step without read-ahead, so this is also the number of steps
    taken in the epoch (worker processes read ahead inside the iterator, which does not count). Resuming on another
    number of ranks keeps the same global sample position; resuming over another dataset size restarts the epoch.
    """

    sampler: ResumableSampler

    def __init__(self, dataset: Any, *, sampler: ResumableSampler, batch_size: int, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._yielded: int | None = None

    def __iter__(self) -> Iterator[Any]:
        self._yielded = None
        for batch in super().__iter__():
            if self._yielded is None:  # the sampler's iteration has begun by now, in any worker mode
                self._yielded = self.sampler.iter_start // self.batch_size
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        if self._yielded is None:  # nothing drawn since construction or the last resume
            epoch, batches = sampler.epoch, sampler._start // self.batch_size
        else:
            epoch, batches = sampler.iter_epoch, self._yielded
        return {"epoch": epoch, "batches": batches, "num_replicas": sampler.num_replicas,
                "num_items": len(sampler.dataset)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if state["num_items"] != len(sampler.dataset):
            log.warning("the training split has %d items, the checkpoint's had %d: epoch %d restarts from its first "
                        "batch", len(sampler.dataset), state["num_items"], state["epoch"])
            sampler.resume(state["epoch"], 0)
            return
        seen = state["batches"] * self.batch_size * state["num_replicas"]  # keys consumed over all ranks
        if state["num_replicas"] != sampler.num_replicas:
            log.warning("resuming on %d ranks a run saved on %d: the epoch goes on from the same global position, "
                        "with another assignment of clips to ranks", sampler.num_replicas, state["num_replicas"])
        start = min(-(-seen // sampler.num_replicas), sampler.num_samples)
        sampler.resume(state["epoch"], start - start % self.batch_size)
        self._yielded = None


class SkippedClipsReport(Callback):
    """At the end of every training epoch, has the datamodule summarise the clips its workers skipped."""

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, AudioDataModule):
            total = datamodule.report_skipped(trainer.current_epoch)
            pl_module.log("data/skipped_clips", float(total), rank_zero_only=True)


class AudioDataModule(lightning.LightningDataModule):
    """Train/val/test loaders of fixed-length audio segments and their captions.

    Batches are dicts from :func:`~audiodiff.data.dataset.collate`: ``wav`` ``[B, channels, segment_samples]``
    at ``sample_rate`` Hz, ``mask`` ``[B, segment_samples]``, ``caption`` (list of str), ``attributes``,
    ``index``, ``audio``.

    Training batches follow the :class:`~audiodiff.data.dataset.EpochSampler` order, whose ``(index, epoch)``
    keys carry the epoch into worker processes (Lightning calls ``set_epoch`` each epoch), so crops and captions
    differ between epochs yet do not depend on ``num_workers``. Under data parallelism each rank takes its own share
    of every epoch (:class:`ResumableSampler`), and the position within the epoch is saved in checkpoints
    (:class:`ResumableDataLoader`), so a resumed run goes on with the very batches it would have drawn.

    Clips that fail to load are skipped by the datasets and appended by every process to
    ``<skip_log_dir>/skipped_clips.tsv`` (``path<TAB>reason``); at the end of each training epoch a
    :class:`SkippedClipsReport` callback, added to the trainer in :meth:`setup`, logs their count.

    Rows without a ``split`` are training rows; when no row is in ``val_split``, a seeded ``val_fraction`` of them
    is held out for validation (:class:`~audiodiff.data.manifest.Holdout`, said in the log). A manifest without
    rows in ``val_split`` after that trains without validation (with a warning); a missing train or test split is
    an error.
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        sample_rate: int,
        channels: int = 1,
        segment_seconds: float,
        batch_size: int,
        num_workers: int = 2,
        seed: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        corpus: str | None = None,
        root: str = "data",
        corpus_builder: Callable[[str, str | Path], Path] | None = None,
        val_batch_size: int | None = None,
        persistent_workers: bool = True,
        skip_log_dir: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        """
        Args:
            manifest: JSONL manifest; empty or ``None`` to use ``corpus`` instead.
            sample_rate: Hz of the output audio.
            channels: channels of the output audio.
            segment_seconds: length of every segment in seconds.
            batch_size: training batch size.
            num_workers: DataLoader worker processes (0: load in the main process).
            seed: seeds crops, caption choices and the shuffling order.
            train_split, val_split, test_split: manifest ``split`` values of the three stages.
            corpus: built-in corpus (see :mod:`audiodiff.benchmarks`), read from ``<root>/<corpus>/manifest.jsonl``.
            root: folder of the built-in corpora.
            corpus_builder: ``(corpus, root) -> manifest`` building a corpus that is not there yet (the training
                runners pass :func:`audiodiff.benchmarks.ensure_corpus`); without one a missing corpus is an error
                that says how to build it.
            val_batch_size: batch size of validation and test (default ``batch_size``).
            persistent_workers: keep workers alive between epochs (ignored when ``num_workers`` is 0).
            skip_log_dir: folder of ``skipped_clips.tsv``; default the trainer's log dir, else a temp dir.
            val_fraction: share of the rows without a ``split`` held out for validation when no row is in
                ``val_split`` (0: none).
            split_seed: seeds which of those rows are held out (independent of ``seed``, so that runs with other
                training seeds validate on the same rows).
        """
        super().__init__()
        if not manifest and not corpus:
            raise ValueError("AudioDataModule needs a manifest path or a built-in corpus name; got neither")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(
                f"batch sizes must be >= 1, got batch_size={batch_size}, val_batch_size={val_batch_size}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters(ignore=["corpus_builder"], logger=False)
        self.manifest = manifest or None
        self.corpus = corpus
        self.root = root
        self.corpus_builder = corpus_builder
        self.sample_rate = sample_rate
        self.channels = channels
        self.segment_seconds = segment_seconds
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.holdout = Holdout(val_fraction, split_seed, train_split, val_split)
        self._holdout_said = False
        self.persistent_workers = persistent_workers
        self.skip_log_dir = skip_log_dir
        self.datasets: dict[str, AudioCaptionDataset] = {}
        self._skip_log: Path | None = None
        self._reported_skips = 0
        self._empty: set[str] = set()

    # -- data preparation ------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Build the built-in corpus when it is used and not there yet (runs on one process per node)."""
        if self.manifest is None:
            self.manifest_path()

    def manifest_path(self) -> Path:
        """The manifest in use (building the built-in corpus first if it is not there and a builder was given)."""
        if self.manifest is not None:
            return Path(self.manifest)
        assert self.corpus is not None
        if self.corpus_builder is not None:
            return Path(self.corpus_builder(self.corpus, self.root))
        manifest = Path(self.root) / self.corpus / "manifest.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: the built-in corpus {self.corpus!r} is not built; build it with "
                                    f"python -m audiodiff.prepare corpus={self.corpus} root={self.root}")
        return manifest

    @property
    def skip_log(self) -> Path:
        """The ``skipped_clips.tsv`` shared by every loading process."""
        if self._skip_log is None:
            folder = self.skip_log_dir
            if folder is None and self.trainer is not None:
                folder = self.trainer.log_dir or self.trainer.default_root_dir
            if folder is None:
                folder = tempfile.mkdtemp(prefix="audiodiff-data-")
            self._skip_log = Path(folder) / SKIP_LOG_NAME
        return self._skip_log

    def _dataset(self, stage: str) -> AudioCaptionDataset:
        return AudioCaptionDataset(
            self.manifest_path(),
            self.splits[stage],
            sample_rate=self.sample_rate,
            channels=self.channels,
            segment_seconds=self.segment_seconds,
            train=stage == "train",
            seed=self.seed,
            skip_log=self.skip_log,
            holdout=self.holdout,
        )

    def holdout_note(self) -> str | None:
        """What the hold-out did to the manifest's rows without a split, or None when every row has one."""
        rows = read_manifest(self.manifest_path())
        unsplit = sum(row.split is None for row in rows)
        if not unsplit:
            return None
        assigned = read_manifest(self.manifest_path(), holdout=self.holdout)
        held = sum(row.split is None and new.split == self.holdout.val for row, new in zip(rows, assigned,
                                                                                              strict=True))
        if held:
            why = (f"val_fraction={self.holdout.fraction:g}, split_seed={self.holdout.seed}; the manifest has no "
                   f"{self.holdout.val!r} rows")
        else:
            why = (f"the manifest has {self.holdout.val!r} rows of its own" if any(r.split == self.holdout.val
                                                                                   for r in rows)
                   else f"val_fraction={self.holdout.fraction:g}")
        return (f"{self.manifest_path()}: {unsplit} of {len(rows)} rows have no split: {unsplit - held} train on, "
                f"{held} held out for validation ({why})")

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of a stage: ``fit`` train + val, ``validate`` val, ``test``/``predict`` test."""
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: ("train", "val", "test"),
        }[stage]
        if not self._holdout_said:
            self._holdout_said = True
            note = self.holdout_note()
            if note:
                log.info("%s", note)
        for name in wanted:
            if name in self.datasets or name in self._empty:
                continue
            try:
                self.datasets[name] = self._dataset(name)
            except EmptySplitError as error:
                if not (name == "val" and stage == "fit"):
                    raise
                log.warning("%s; training without validation", error)
                self._empty.add(name)
        trainer = self.trainer
        if trainer is not None and not any(isinstance(cb, SkippedClipsReport) for cb in trainer.callbacks):
            trainer.callbacks.append(SkippedClipsReport())

    # -- loaders ---------------------------------------------------------------------------------------------

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = self.num_workers
        return {
            "num_workers": workers,
            "collate_fn": collate,
            "persistent_workers": self.persistent_workers and workers > 0,
            "worker_init_fn": _worker_init if workers > 0 else None,
            # Worker seeds come from the loader's own generator, not the global one, so that starting an epoch or
            # a validation pass draws nothing from the stream that training noise comes from (exact resume).
            "generator": torch.Generator().manual_seed(self.seed),
        }

    def _ranks(self) -> tuple[int, int]:
        """(number of ranks, this rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _require(self, name: str) -> AudioCaptionDataset:
        if name not in self.datasets:
            raise RuntimeError(f"the {name} dataset is not built; call setup() with the matching stage first")
        return self.datasets[name]

    def train_dataloader(self) -> ResumableDataLoader:
        """This rank's share of each epoch's shuffled order, resumable mid-epoch from a checkpoint."""
        dataset = self._require("train")
        replicas, rank = self._ranks()
        sampler = ResumableSampler(len(dataset), seed=self.seed, num_replicas=replicas, rank=rank)
        return ResumableDataLoader(dataset, sampler=sampler, batch_size=self.batch_size, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """In order; with several ranks each evaluates its own share (``DistributedSampler`` dealing, padded)."""
        if "val" in self._empty:
            return []  # Lightning then skips validation
        dataset = self._require("val")
        replicas, rank = self._ranks()
        sampler = DistributedSampler(dataset, replicas, rank, shuffle=False) if replicas > 1 else None
        return DataLoader(dataset, batch_size=self.val_batch_size, sampler=sampler, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._require("test"), batch_size=self.val_batch_size, **self._loader_kwargs())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- reporting -------------------------------------------------------------------------------------------

    def captions(self, split: str) -> list[str]:
        """Every distinct caption of a manifest split, in order of first appearance."""
        rows = read_manifest(self.manifest_path(), split, self.holdout)
        return list(dict.fromkeys(caption for row in rows for caption in row.captions))

    def skipped_clips(self) -> dict[str, str]:
        """Clips that any loading process (main or worker) skipped so far: audio path → reason."""
        return read_skips(self.skip_log)

    def report_skipped(self, epoch: int) -> int:
        """Log how many distinct clips were skipped so far and how many are new; returns the total."""
        total = len(self.skipped_clips())
        new = total - self._reported_skips
        self._reported_skips = total
        if new:
            message = "epoch %d: %d unreadable clip(s) skipped (%d in total so far); see %s"
            log.warning(message, epoch, new, total, self.skip_log)
        elif total:
            message = "epoch %d: no new unreadable clips (%d skipped in total); see %s"
            log.info(message, epoch, total, self.skip_log)
        return total
