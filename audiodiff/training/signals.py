"""Stop on SIGTERM / SIGUSR1 at the next step boundary with a checkpoint, and requeue under SLURM.

What Lightning does by itself: its `_SignalConnector` (installed after `on_fit_start`) marks `trainer.received_sigterm`
on SIGTERM and raises `SIGTERMException` after the current batch, without a checkpoint; under
`SLURMEnvironment(auto_requeue=True)` its handler for the requeue signal writes `hpc_ckpt_<n>.ckpt` and runs
`scontrol requeue` inside the signal handler, i.e. in the middle of a step, and in DDP it broadcasts from within the
SIGTERM handler, which can pair with another rank's gradient all-reduce.

:class:`GracefulStop` keeps Lightning's way of leaving (`SIGTERMException`, which unwinds the trainer through its
normal interrupt path) and its SLURM settings (`requeue_signal`, `auto_requeue`), but moves every action to a step
boundary: its handlers only record the signal; after each optimizer step all ranks agree (max-reduction) on whether
any of them was signalled, then all write `last.ckpt` together, rank 0 requeues the SLURM job if the requeue signal
came and auto-requeue is on, and every rank raises `SIGTERMException`. `audiodiff.training.diffusion.run.train`
catches it and returns normally, so the process exits with status 0; rerunning the same command resumes from
`last.ckpt`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

_STOP, _REQUEUE = 1.0, 2.0  # what a rank votes: stop and save; stop, save and requeue (the larger wins)


def slurm_job_id() -> str | None:
    """`<array job>_<task>` for an array job, else `SLURM_JOB_ID`; None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> bool:
    """`scontrol requeue <job>` (as Lightning's `_SignalConnector` does); whether it succeeded."""
    job = slurm_job_id()
    if job is None:
        log.warning("requeue requested but SLURM_JOB_ID is not set; not requeued")
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False).returncode
    except FileNotFoundError:
        log.warning("scontrol not found; SLURM job %s not requeued", job)
        return False
    if result != 0:
        log.warning("scontrol requeue %s failed with status %d", job, result)
        return False
    log.info("requeued SLURM job %s", job)
    return True


class GracefulStop(L.Callback):
    """On SIGTERM or SIGUSR1 (or the `requeue_signal` of the trainer's `SLURMEnvironment`), finish the current step,
    write `ckpt_path` on every rank's behalf and stop the run with `SIGTERMException`.

    ckpt_path: the checkpoint to write (the run's `last.ckpt`, which a rerun of the same command resumes from).

    The handlers are installed when training starts (after Lightning's own, which they replace until the trainer's
    teardown restores the handlers that were there before `fit`). A signal that arrives before, while the data and
    model are being set up, has nothing to save: the default action ends the process. The stop decision costs one
    one-element all-reduce per optimizer step when more than one process trains.
    """

    def __init__(self, ckpt_path: str | Path) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.received: int | None = None  # the first signal number received, until the run stops
        self._requeue_signal: int | None = None

    @property
    def requested(self) -> bool:
        """Whether this process has been signalled to stop."""
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only record, act at the next step boundary.
        if self.received is None or signum == self._requeue_signal:
            self.received = signum

    @staticmethod
    def _slurm(trainer: L.Trainer) -> SLURMEnvironment | None:
        env = getattr(trainer.strategy, "cluster_environment", None)
        if env is None:  # single-device strategies keep it on the connector only
            env = getattr(trainer._accelerator_connector, "cluster_environment", None)
        return env if isinstance(env, SLURMEnvironment) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        slurm = self._slurm(trainer)
        requeue = slurm.requeue_signal if slurm is not None and slurm.auto_requeue else None
        self._requeue_signal = int(requeue) if requeue is not None else None
        signals = {int(signal.SIGTERM), int(signal.SIGUSR1)}
        if requeue is not None:
            signals.add(int(requeue))
        if trainer.received_sigterm:  # caught by Lightning's handler during set-up
            self.received = int(signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread():
            log.warning("training runs outside the main thread: SIGTERM/SIGUSR1 cannot be handled there")
            return
        for signum in sorted(signals):
            signal.signal(signum, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        vote = 0.0 if self.received is None else _REQUEUE if self.received == self._requeue_signal else _STOP
        if trainer.world_size > 1:
            vote = float(trainer.strategy.reduce(torch.tensor(vote, device=pl_module.device), reduce_op="max"))
        if vote == 0.0:
            return
        name = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            log.warning("%s: stopped after step %d; %s holds it. Rerun the same command to resume.", name,
                        trainer.global_step, self.ckpt_path)
            if vote == _REQUEUE:
                requeue_slurm_job()
        raise SIGTERMException(0)
