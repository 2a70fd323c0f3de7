"""A Lightning callback that records what each rank does at every step, for tests that run training in subprocesses.

Injected through the config (`+callbacks.probe={_target_: training_probe.Probe, out: <dir>, ...}`, with this folder
on PYTHONPATH). Each rank appends JSON lines to `<out>/rank<r>.jsonl`:

- `{"event": "batch", "step", "indices", "noise"}` before a training step: the manifest rows of the batch and the
  sum of the first normals the global torch generator would give (drawn on a forked state, so nothing is consumed);
- `{"event": "step", "step", "loss", "nonfinite", "net", "ema"}` after it: the returned training loss, the count of
  skipped non-finite steps, and SHA-256 digests of the denoiser (+ representation) and of the EMA tensors;
- `{"event": "val", "loss"}` per validation batch (this rank's, unreduced) and `{"event": "val_logged", "loss"}` for
  the logged (reduced) value; `{"event": "save", "path"}` when this rank writes a checkpoint file, and
  `{"event": "preview"}` when it writes a preview clip.

`pause_at_step`: after that step, rank 0 writes `<out>/paused` and waits (up to 120 s) until it is signalled to stop
(GracefulStop.requested), so that a test can send the signal at a known step; the run then stops after that step.
`nan_at_step` / `nan_rank`: that step's training loss is NaN on that rank only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

import audiodiff.training.callbacks as preview_module
from audiodiff.training.signals import GracefulStop


def digest(*modules: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of the modules' parameters and buffers."""
    h = hashlib.sha256()
    for module in modules:
        for name, value in module.state_dict().items():
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Probe(L.Callback):
    def __init__(self, out: str, pause_at_step: int | None = None, nan_at_step: int | None = None,
                 nan_rank: int = 0) -> None:
        self.out = Path(out)
        self.pause_at_step = pause_at_step
        self.nan_at_step = nan_at_step
        self.nan_rank = nan_rank
        self.rank = 0

    def _write(self, **record: Any) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.rank = trainer.global_rank
        objective = pl_module.model.objective
        loss = objective.loss

        def poisoned(net, x0, cond, generator=None, weight=None):
            value = loss(net, x0, cond, generator=generator, weight=weight)
            if generator is None and trainer.global_step + 1 == self.nan_at_step and self.rank == self.nan_rank:
                return value * float("nan")
            return value

        objective.loss = poisoned
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint

        def recorded_save(checkpoint, path, storage_options=None):
            self._write(event="save", path=str(path))
            return save(checkpoint, path, storage_options)

        io.save_checkpoint = recorded_save
        save_audio = preview_module.save_audio

        def recorded_save_audio(*args, **kwargs):
            self._write(event="preview")
            return save_audio(*args, **kwargs)

        self._save_audio = save_audio
        preview_module.save_audio = recorded_save_audio

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        preview_module.save_audio = self._save_audio  # tests may train several times in one process

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        preview_module.save_audio = self._save_audio  # no teardown hook on this path

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[]):
            noise = float(torch.randn(64, dtype=torch.float64).sum())
        self._write(event="batch", step=trainer.global_step + 1, indices=batch["index"].tolist(), noise=noise)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = None if not outputs else float(outputs["loss"])
        self._write(event="step", step=trainer.global_step, loss=loss, nonfinite=pl_module.nonfinite_steps,
                    net=digest(pl_module.model.net, pl_module.model.representation), ema=digest(pl_module.ema))
        if trainer.global_step == self.pause_at_step and self.rank == 0:  # other ranks wait in the next collective
            (self.out / "paused").write_text(str(trainer.global_step))
            stop = next(cb for cb in trainer.callbacks if isinstance(cb, GracefulStop))
            deadline = time.monotonic() + 120
            while not stop.requested and time.monotonic() < deadline:
                time.sleep(0.02)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._write(event="val", step=trainer.global_step, loss=float(outputs), indices=batch["index"].tolist())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(event="val_logged", step=trainer.global_step, loss=float(trainer.callback_metrics["val/loss"]))
