"""Run one training job from a composed configuration: data, model, trainer, resume, export."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from audiodiff.data.latent_cache import cache_digest
from audiodiff.data.latent_datamodule import LatentDataModule
from audiodiff.models.build import MODEL_KEYS, OPTIONAL_MODEL_KEYS, build_model
from audiodiff.training.callbacks import AttributeAccuracy, AudioPreview
from audiodiff.training.checkpoints import export_run
from audiodiff.training.data import build_datamodule
from audiodiff.training.diffusion.task import DiffusionTask
from audiodiff.training.finetune import export_finetune_run, init_config, start_from_init
from audiodiff.training.forecast import run_forecast
from audiodiff.training.resume import AtomicCheckpointIO, RandomState, start_run, with_target_defaults
from audiodiff.training.signals import GracefulStop

log = logging.getLogger(__name__)


# Settings a resumed run may change: how the step runs, not what it computes.
RESUMABLE_KEYS = {"task": ("compile",), "optim": ("foreach", "fused")}


class ResumeMismatchError(ValueError):
    """The configuration differs from the one the run's checkpoint was trained with."""


def check_resume(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume a run whose model or data configuration changed (a silent change is worse than a stop)."""
    keys = [*MODEL_KEYS, *OPTIONAL_MODEL_KEYS, "data", "optim", "task", "seed", "latent_cache", "init", "finetune"]

    def comparable(cfg: dict[str, Any], key: str) -> Any:
        value = cfg.get(key)
        if key in RESUMABLE_KEYS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in RESUMABLE_KEYS[key]}
        return with_target_defaults(value) if key in MODEL_KEYS or key in OPTIONAL_MODEL_KEYS else value

    # Checkpoints from before the latent cache was recorded have no digest to compare.
    changed = [k for k in keys if comparable(saved, k) != comparable(current, k)
               and not (k == "latent_cache" and k not in saved)]
    if changed:
        detail = "; ".join(f"{k}: was {saved.get(k)!r}, now {current.get(k)!r}" for k in changed)
        if changed == ["latent_cache"]:
            raise ResumeMismatchError(
                f"{ckpt} was trained on another latent cache ({detail}): the encode stage rebuilt it for a changed "
                f"representation or data. To retrain on the new cache, delete {ckpt.parent} and "
                f"{ckpt.parent.parent / 'export'}, or use another run_name.")
        raise ResumeMismatchError(
            f"{ckpt} was trained with a different configuration ({detail}). Use another run_name for a new run, "
            f"or delete the run directory to start over.")


def latent_cache_digest(cfg: DictConfig) -> str | None:
    """Digest of the latent cache a `latents=cache` run reads (:func:`~audiodiff.data.latent_cache.cache_digest`);
    None for runs on audio, or while the cache is missing (the datamodule then says so)."""
    if cfg.data.get("_target_") != f"{LatentDataModule.__module__}.{LatentDataModule.__qualname__}":
        return None
    return cache_digest(cfg.data.cache)


def is_current(cfg: DictConfig) -> bool:
    """Whether the exported diffusion run of `cfg` was trained on the latent cache it reads now (always true for
    runs on audio): a recipe's encode stage that rebuilt its cache makes the diffusion stage stale."""
    digest = latent_cache_digest(cfg)
    if digest is None:
        return True
    trained_on = json.loads((Path(cfg.run_dir) / "export" / "export.json").read_text()).get("latent_cache")
    if trained_on != digest:
        log.info("diffusion export in %s was trained on latent cache %s, the cache is now %s", cfg.run_dir,
                 trained_on, digest)
        return False
    return True


def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """The trainer config's `plugins` (e.g. SLURMEnvironment), plus crash-safe checkpoint writing unless the config
    brings its own CheckpointIO."""
    plugins = [instantiate(p) for p in cfg.trainer.get("plugins") or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def training_licenses(datamodule: Any) -> dict[str, int] | None:
    """{licence: clips} of the training split of the datamodule's manifest (rows without a split included), or None
    for data that names no manifest."""
    from audiodiff.data.licenses import license_counts
    from audiodiff.data.manifest import read_manifest

    manifest = getattr(datamodule, "manifest_path", None)
    if manifest is None:
        return None
    train_split = getattr(datamodule, "splits", {}).get("train", "train")
    return license_counts(row for row in read_manifest(manifest()) if row.split in (None, train_split))


def train(cfg: DictConfig) -> Path:
    """Train (or resume) the run described by `cfg`; returns the run directory, which ends with an `export/`.

    SIGTERM or SIGUSR1 stop the run after the current step with `checkpoints/last.ckpt` written (and a SLURM requeue
    where configured); this function then returns without exporting, and the same call resumes the run exactly:
    same batches, same noise, same weights as if it had not stopped.

    With `init` (an export), the model comes from there and trains as `finetune` says (`audiodiff.training.finetune`).
    """
    if cfg.get("init") or cfg.get("finetune") is not None:
        cfg = init_config(cfg)
    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    digest = latent_cache_digest(cfg)  # checked on resume, recorded in the export (is_current)
    resolved = start_run(cfg, run_dir, last, check_resume, {"latent_cache": digest} if digest else None)
    datamodule = build_datamodule(cfg.data, skip_log_dir=str(run_dir))
    model = build_model(cfg)
    started = start_from_init(model, cfg) if cfg.get("init") else None
    if isinstance(datamodule, LatentDataModule):  # its setup refuses a cache made for another representation
        datamodule.bind(model.representation, resolved["representation"])
    task = DiffusionTask(model, optimizer=instantiate(cfg.optim), run_config=resolved,
                         licenses=training_licenses(datamodule), **cfg.task)
    callbacks = [
        *(instantiate(c) for c in (cfg.get("callbacks") or {}).values()),  # first: they see every step, even a last one
        GracefulStop(last),  # before the previews: a stopping step writes its checkpoint and nothing else
        run_forecast(cfg, f"{cfg.name}: diffusion stage"),
        RandomState(cfg.seed),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.checkpoint_every),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(refresh_rate=cfg.progress_refresh),  # plain text: readable in logs and terminals alike
        AudioPreview(str(run_dir / "previews"), **cfg.preview),
    ]
    if cfg.evaluation.every_n_steps > 0:
        if not cfg.data.get("corpus"):
            raise ValueError("evaluation.every_n_steps: attribute checks need a built-in corpus (data=sfx or "
                             "data=music); set evaluation.every_n_steps=0 for other data")
        callbacks.append(AttributeAccuracy(cfg.data.corpus, str(datamodule.manifest_path()), seed=cfg.seed,
                                           **cfg.evaluation))
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=trainer_plugins(cfg),
                                     default_root_dir=str(run_dir))
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SIGTERMException:
        return run_dir  # GracefulStop wrote last.ckpt at the step boundary and said so
    # A run stopped by max_time still ends with a checkpoint of its last step (all ranks take part, rank 0 writes).
    trainer.save_checkpoint(last, weights_only=False)
    if trainer.is_global_zero:
        if started is None:
            export_run(last, run_dir / "export")
        else:
            export_finetune_run(last, run_dir / "export", cfg, started)
        log.info("exported %s", run_dir / "export")
    return run_dir
