"""LightningDataModule that streams train/val/test segments from a shard folder (see :mod:`audiodiff.data.shards`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import lightning
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from audiodiff.data.datamodule import SKIP_LOG_NAME
from audiodiff.data.dataset import collate, read_skips
from audiodiff.data.shards import ShardDataset, index_path, read_captions, resolve_rank

log = logging.getLogger(__name__)


def _worker_init(_worker_id: int) -> None:
    # Each worker decodes one clip at a time; intra-op threads would only fight the main process for cores.
    torch.set_num_threads(1)


class ShardEpochs(Callback):
    """Hands the epoch to the training shards before each epoch's loader starts, and at each epoch's end has the
    datamodule summarise the samples its readers skipped."""

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, ShardDataModule):
            datamodule.set_epoch(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, ShardDataModule):
            total = datamodule.report_skipped(trainer.current_epoch)
            pl_module.log("data/skipped_clips", float(total), rank_zero_only=True)


class ShardDataModule(lightning.LightningDataModule):
    """Train/val/test loaders of fixed-length segments and captions streamed from tar shards.

    Batches are those of :class:`~audiodiff.data.datamodule.AudioDataModule` (:func:`~audiodiff.data.dataset.collate`
    of :class:`~audiodiff.data.shards.ShardDataset` items): ``wav`` ``[B, channels, segment_samples]`` at
    ``sample_rate`` Hz, ``mask`` ``[B, segment_samples]``, ``caption``, ``attributes``, ``index``, ``audio``.

    Each rank reads its own shards (the trainer's global rank and world size); training permutes the shards every
    epoch and mixes samples through a shuffle buffer. The training loader needs at least ``world_size x
    max(1, num_workers)`` shards (checked in :meth:`setup`); validation and test use as many workers as their shards
    allow. Loaders restart their workers every epoch so that the epoch set by the :class:`ShardEpochs` callback
    (added to the trainer in :meth:`setup`) reaches them. A run resumed from a checkpoint restarts its epoch's
    stream from the beginning.

    Skipped samples are appended by every process to ``<skip_log_dir>/skipped_clips.tsv`` and counted at the end of
    each training epoch. A folder without a ``val`` index trains without validation (with a warning); a missing
    train or test index is an error.
    """

    def __init__(
        self,
        shards: str,
        *,
        sample_rate: int,
        channels: int = 1,
        segment_seconds: float,
        batch_size: int,
        num_workers: int = 2,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        val_batch_size: int | None = None,
        skip_log_dir: str | None = None,
    ) -> None:
        """
        Args:
            shards: folder written by ``python -m audiodiff.data.shards``.
            sample_rate: Hz of the output audio.
            channels: channels of the output audio.
            segment_seconds: length of every segment in seconds.
            batch_size: training batch size.
            num_workers: DataLoader worker processes (0: load in the main process).
            seed: seeds crops, caption choices, the shard order and the shuffle buffer.
            shuffle_buffer: encoded samples each training worker holds to mix its stream (see ShardDataset).
            train_split, val_split, test_split: shard sets of the three stages.
            val_batch_size: batch size of validation and test (default ``batch_size``).
            skip_log_dir: folder of ``skipped_clips.tsv``; default the trainer's log dir, else a temp dir.
        """
        super().__init__()
        if not shards:
            raise ValueError("ShardDataModule needs a shard folder (data.shards=<folder>); got none")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, val_batch_size={val_batch_size}")
        if num_workers < 0 or shuffle_buffer < 0:
            raise ValueError(f"num_workers and shuffle_buffer must be >= 0, got {num_workers} and {shuffle_buffer}")
        self.save_hyperparameters(logger=False)
        self.shards = Path(shards)
        self.sample_rate = sample_rate
        self.channels = channels
        self.segment_seconds = segment_seconds
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.skip_log_dir = skip_log_dir
        self.datasets: dict[str, ShardDataset] = {}
        self._skip_log: Path | None = None
        self._reported_skips = 0
        self._empty: set[str] = set()

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

    def _rank(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return resolve_rank()

    def _dataset(self, stage: str) -> ShardDataset:
        rank, world_size = self._rank()
        train = stage == "train"
        return ShardDataset(
            self.shards,
            self.splits[stage],
            sample_rate=self.sample_rate,
            channels=self.channels,
            segment_seconds=self.segment_seconds,
            train=train,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer if train else 0,
            rank=rank,
            world_size=world_size,
            skip_log=self.skip_log,
        )

    def setup(self, stage: str | None = None) -> None:
        """Open the shard sets of a stage: ``fit`` train + val, ``validate`` val, ``test``/``predict`` test.

        Raises:
            ShardIndexError: a needed index (other than val when fitting) or shard is missing.
            ShardCountError: fewer training shards than ranks x workers, or fewer val/test shards than ranks.
        """
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: ("train", "val", "test"),
        }[stage]
        for name in wanted:
            if name in self.datasets or name in self._empty:
                continue
            if name == "val" and stage == "fit" and not index_path(self.shards, self.splits[name]).exists():
                log.warning("%s: no %s shards (no %s.json); training without validation",
                            self.shards, self.splits[name], self.splits[name])
                self._empty.add(name)
                continue
            self.datasets[name] = self._dataset(name)
        for name in wanted:
            if name in self.datasets:  # fail now, naming the counts, rather than in a worker process
                self.datasets[name].assignment(0, self._workers(name))
        trainer = self.trainer
        if trainer is not None and not any(isinstance(cb, ShardEpochs) for cb in trainer.callbacks):
            trainer.callbacks.append(ShardEpochs())

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next training loader iteration (shard order, shuffle buffer, crops, captions)."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    # -- loaders ---------------------------------------------------------------------------------------------

    def _require(self, name: str) -> ShardDataset:
        if name not in self.datasets:
            raise RuntimeError(f"the {name} shards are not open; call setup() with the matching stage first")
        return self.datasets[name]

    def _workers(self, name: str) -> int:
        """Training uses ``num_workers``; validation and test as many as their shards can feed."""
        if name == "train":
            return self.num_workers
        dataset = self.datasets[name]
        return min(self.num_workers, len(dataset.shards) // dataset.world_size)

    def _loader(self, name: str, batch_size: int) -> DataLoader:
        dataset, workers = self._require(name), self._workers(name)
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                          worker_init_fn=_worker_init if workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None:  # a resumed run starts at its checkpoint's epoch
            self._require("train").set_epoch(self.trainer.current_epoch)
        return self._loader("train", self.batch_size)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if "val" in self._empty:
            return []  # Lightning then skips validation
        return self._loader("val", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- reporting -------------------------------------------------------------------------------------------

    def captions(self, split: str) -> list[str]:
        """Every distinct caption of a split's shards, in order of first appearance (empty for a val split that
        has no shards)."""
        if split == self.splits["val"] and "val" in self._empty:
            return []
        return read_captions(self.shards, split)

    def skipped_clips(self) -> dict[str, str]:
        """Samples that any loading process (main or worker) skipped so far: name → reason."""
        return read_skips(self.skip_log)

    def report_skipped(self, epoch: int) -> int:
        """Log how many distinct samples were skipped so far and how many are new; returns the total."""
        total = len(self.skipped_clips())
        new = total - self._reported_skips
        self._reported_skips = total
        if new:
            log.warning("epoch %d: %d unreadable sample(s) skipped (%d in total so far); see %s",
                        epoch, new, total, self.skip_log)
        elif total:
            log.info("epoch %d: no new unreadable samples (%d skipped in total); see %s", epoch, total, self.skip_log)
        return total
