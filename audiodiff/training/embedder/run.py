"""`python -m audiodiff.training.embedder.run [data=music] [max_steps=N] [out=FOLDER] [overrides]`.

Trains (or resumes) the contrastive audio–text embedder described by conf/embedder.yaml on a corpus's own clips
and captions, then exports it for `load_embedder`. Rerunning the same command resumes from the run's
`checkpoints/last.ckpt`; a changed model, data, optimiser or task configuration is refused rather than mixed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from audiodiff.evaluation.embedders.contrastive.model import ContrastiveConfig, ContrastiveModel
from audiodiff.training.data import build_datamodule
from audiodiff.training.diffusion.run import ResumeMismatchError, trainer_plugins
from audiodiff.training.embedder.export import export_embedder
from audiodiff.training.embedder.task import ContrastiveTask, checkpoint_path
from audiodiff.training.resume import RandomState, start_run
from audiodiff.training.signals import GracefulStop

log = logging.getLogger(__name__)

RESUME_KEYS = ("model", "text_encoder", "data", "optim", "task", "seed")  # what a resumed run may not change


def check_resume(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume a run whose model, data, optimiser or task configuration changed."""
    changed = [k for k in RESUME_KEYS if saved.get(k) != current.get(k)]
    if changed:
        detail = "; ".join(f"{k}: was {saved.get(k)!r}, now {current.get(k)!r}" for k in changed)
        raise ResumeMismatchError(
            f"{ckpt} was trained with a different configuration ({detail}). Use another run_dir for a new run, "
            "or delete the run directory to start over.")


def build_task(cfg: DictConfig, run_config: dict[str, Any]) -> ContrastiveTask:
    """The ContrastiveTask of a composed embedder configuration (text encoder loaded, model freshly built)."""
    text_encoder = instantiate(cfg.text_encoder)
    config = ContrastiveConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True), "embedder config: model")
    model = ContrastiveModel(config, text_dim=text_encoder.dim)
    return ContrastiveTask(model, text_encoder, optimizer=instantiate(cfg.optim), run_config=run_config,
                           text_cache_file=cfg.get("text_cache_file"), **cfg.task)


def train_embedder(cfg: DictConfig) -> Path:
    """Train (or resume) the embedder run described by `cfg` (conf/embedder.yaml); returns the run directory.

    A finished run ends with its export in `cfg.out` (default `<run_dir>/export`). SIGTERM or SIGUSR1 stop after
    the current step with `checkpoints/last.ckpt` written and no export; the same call then resumes the run.
    """
    run_dir = Path(cfg.run_dir)
    last = checkpoint_path(run_dir)
    resolved = start_run(cfg, run_dir, last, check_resume)
    datamodule = build_datamodule(cfg.data, skip_log_dir=str(run_dir))
    task = build_task(cfg, resolved)
    callbacks = [
        GracefulStop(last),
        RandomState(cfg.seed),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.checkpoint_every),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(refresh_rate=cfg.progress_refresh),
    ]
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=trainer_plugins(cfg),
                                     default_root_dir=str(run_dir))
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SIGTERMException:
        return run_dir  # GracefulStop wrote last.ckpt at the step boundary and said so
    trainer.save_checkpoint(last, weights_only=False)
    if trainer.is_global_zero:
        export_embedder(last, cfg.out)
        log.info("exported %s", cfg.out)
    return run_dir


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.training.embedder.run", "embedder", lambda cfg, _: train_embedder(cfg), __doc__)
