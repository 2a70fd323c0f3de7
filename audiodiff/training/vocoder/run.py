"""Train (or resume) a HiFi-GAN vocoder stage from a composed configuration, export it, load the export back.

`train_vocoder(cfg)` takes conf/train.yaml composed with `stage=vocoder` (conf/stage/vocoder.yaml) and a HiFi-GAN
`vocoder` (e.g. `vocoder=hifigan_v2`): it reads `vocoder`, `data`, `trainer`, `seed`, `progress_refresh` and `stage`.
`python -m audiodiff.train recipe=<name> stage=vocoder` runs it for a recipe whose `stages` list it.

A stage run directory (`cfg.stage.run_dir`) holds `config.yaml` (resolved), `checkpoints/last.ckpt` (training state of
both players, with the resolved config, the generator's constructor arguments and the package version inside),
`tensorboard/` and, when training ends, `export/`: the generator's weights (weight norm folded in) as
`model.safetensors` beside `config.yaml` (`vocoder:` its constructor arguments with `_target_`) and `export.json`.
`audiodiff.vocoders.trained.from_export(folder)` reads that folder back.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from audiodiff.adversarial.discriminators import CombinedDiscriminator
from audiodiff.models.export_format import write_weights_folder
from audiodiff.training.checkpoints import load_checkpoint
from audiodiff.training.data import build_datamodule
from audiodiff.training.diffusion.run import ResumeMismatchError, trainer_plugins
from audiodiff.training.forecast import run_forecast
from audiodiff.training.resume import RandomState, start_run
from audiodiff.training.signals import GracefulStop
from audiodiff.training.vocoder.task import VocoderTask, generator_config
from audiodiff.utils.moved import current_name
from audiodiff.vocoders.trained import TRAINABLE, generator_class

log = logging.getLogger(__name__)

# Stage keys that may change between a run and its resumption: where it lives, how long, how often it checkpoints,
# what extra callbacks watch it.
RUN_ONLY_STAGE_KEYS = ("run_dir", "trainer", "checkpoint_every", "callbacks")


def stage_data_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The stage's data module config: the resolved `data` node with `stage.data` merged over it."""
    merged = OmegaConf.merge(OmegaConf.create(resolved["data"]), OmegaConf.create(resolved["stage"].get("data") or {}))
    container = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(container, dict)
    return container


def resume_signature(resolved: dict[str, Any]) -> dict[str, Any]:
    """What a resumed vocoder stage must share with its checkpoint: the generator, the effective data, the seed and
    every stage setting except `RUN_ONLY_STAGE_KEYS`."""
    stage = {k: v for k, v in resolved["stage"].items() if k not in RUN_ONLY_STAGE_KEYS}
    return {"vocoder": resolved["vocoder"], "data": stage_data_config(resolved), "stage": stage,
            "seed": resolved.get("seed")}


_MISSING = "<absent>"


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted paths of a nested dict to its non-dict values (lists compare whole)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def check_stage_resume(kind: str, signature: Callable[[dict[str, Any]], dict[str, Any]], saved: dict[str, Any],
                       current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume a `kind` stage (e.g. "vocoder") whose `signature` of the resolved configuration changed,
    naming every differing key with its old and new value."""
    old, new = _leaves(signature(saved), ""), _leaves(signature(current), "")
    old = {k: current_name(v) if isinstance(v, str) else v for k, v in old.items()}  # targets stored before a move
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k, _MISSING) != new.get(k, _MISSING)]
    if changed:
        detail = "; ".join(f"{k}: was {old.get(k, _MISSING)!r}, now {new.get(k, _MISSING)!r}" for k in changed)
        raise ResumeMismatchError(
            f"{ckpt} was trained with a different {kind}-stage configuration ({detail}). Use another run_name for a "
            f"new run, or delete {ckpt.parent.parent} to start the stage over.")


def check_vocoder_resume(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume a vocoder stage whose configuration changed (see :func:`resume_signature`)."""
    check_stage_resume("vocoder", resume_signature, saved, current, ckpt)


def start_stage(cfg: DictConfig, check_resume: Callable[[dict[str, Any], dict[str, Any], Path], None]
                ) -> tuple[Path, dict[str, Any], Path]:
    """Set up a manually optimised stage in `cfg.stage.run_dir` (:func:`~audiodiff.training.resume.start_run`).
    Returns (run directory, resolved configuration, path of `last.ckpt`)."""
    run_dir = Path(cfg.stage.run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    return run_dir, start_run(cfg, run_dir, last, check_resume), last


def build_discriminator(stage: DictConfig) -> CombinedDiscriminator:
    """The discriminators named in `stage.discriminators`, from `stage.discriminator_choices`, in that order."""
    names = list(stage.discriminators)
    choices = stage.discriminator_choices
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise ValueError(f"stage.discriminators: expected a non-empty list of names from stage.discriminator_choices "
                         f"{sorted(choices)}, got {names}")
    return CombinedDiscriminator([instantiate(choices[n]) for n in names])


def build_generator(vocoder_cfg: DictConfig) -> nn.Module:
    """The `vocoder` node instantiated; it must be a trainable vocoder (Griffin-Lim has nothing to train)."""
    generator = instantiate(vocoder_cfg)
    if not isinstance(generator, tuple(TRAINABLE.values())):
        raise TypeError(f"vocoder: the vocoder stage trains one of {sorted(c.__name__ for c in TRAINABLE.values())}, "
                        f"but vocoder._target_={vocoder_cfg.get('_target_')!r} built a {type(generator).__name__} "
                        "(choose a hifigan_* or vocos_*)")
    return generator


def train_vocoder(cfg: DictConfig) -> Path:
    """Train (or resume) the vocoder stage of `cfg`; returns the stage run directory, which ends with an `export/`.

    Under `trainer.strategy=ddp` the stage runs DDP with `find_unused_parameters=True`: each player's backward pass
    leaves the other player's weights without gradients.

    Rerunning with the same configuration resumes from `checkpoints/last.ckpt` (both players' weights, optimizer and
    LR-schedule states, data position); a changed configuration is refused (:class:`ResumeMismatchError`). SIGTERM or
    SIGUSR1 stop after the current step with `last.ckpt` written; the function then returns without exporting.
    """
    stage = cfg.get("stage")
    if stage is None or "discriminators" not in stage:
        raise ValueError("train_vocoder: the configuration has no vocoder stage; compose conf/train.yaml with "
                         "stage=vocoder")
    run_dir, resolved, last = start_stage(cfg, check_vocoder_resume)
    datamodule = build_datamodule(OmegaConf.create(stage_data_config(resolved)), skip_log_dir=str(run_dir))
    task = VocoderTask(build_generator(cfg.vocoder), build_discriminator(stage), optimizer=instantiate(stage.optim),
                       run_config=resolved, **stage.task)
    return fit_stage(cfg, resolved, task, datamodule, last, export_vocoder, adversarial=True)


def fit_stage(cfg: DictConfig, resolved: dict[str, Any], task: L.LightningModule, datamodule: L.LightningDataModule,
              last: Path, export: Callable[[Path, Path], Path], adversarial: bool) -> Path:
    """Fit (or resume) a manually optimised stage task into `cfg.stage.run_dir` with the stage's trainer settings
    merged over the run's, then export its last checkpoint with `export(ckpt, out)`. Returns the run directory; a
    SIGTERM/SIGUSR1 stop returns it after writing `last.ckpt`, without exporting. `adversarial`: two players
    (a generator and a discriminator), whose separate backward passes DDP must allow."""
    stage, run_dir = cfg.stage, Path(cfg.stage.run_dir)
    callbacks = [
        *(instantiate(c) for c in (stage.get("callbacks") or {}).values()),  # first: they see every step
        GracefulStop(last),
        run_forecast(cfg, f"{cfg.name}: {Path(stage.run_dir).name} stage"),
        RandomState(cfg.seed),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                        every_n_train_steps=stage.checkpoint_every),
        TQDMProgressBar(refresh_rate=cfg.progress_refresh),
    ]
    trainer_cfg = OmegaConf.merge(OmegaConf.create(resolved["trainer"]), OmegaConf.create(resolved["stage"]["trainer"]))
    if trainer_cfg.get("strategy") == "ddp" and adversarial:
        # Each player's backward leaves the other's weights out, which plain DDP takes for an error.
        trainer_cfg.strategy = "ddp_find_unused_parameters_true"
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=logger,
                                     plugins=trainer_plugins(OmegaConf.create({"trainer": trainer_cfg})),
                                     default_root_dir=str(run_dir))
    try:
        with warnings.catch_warnings():
            # Lightning warns that a manual-optimization checkpoint holds the weights after the step's update: the
            # state of step N, as in automatic optimization, is what a resume of step N needs.
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None,
                        weights_only=True)
    except SIGTERMException:
        return run_dir
    trainer.save_checkpoint(last, weights_only=False)
    if trainer.is_global_zero:
        export(last, run_dir / "export")
        log.info("exported %s", run_dir / "export")
    return run_dir


# ---- export ---------------------------------------------------------------------------------------------------------
def export_vocoder(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write the generator of a vocoder-stage checkpoint to `out/` (atomically: a sibling temporary folder is filled,
    then renamed over any previous export): `model.safetensors` with weight norm folded in, `config.yaml` holding
    `vocoder:` (its constructor arguments and `_target_`), `export.json` (version, step, run, data)."""
    ckpt = load_checkpoint(ckpt_path)
    meta = ckpt["audiodiff"]
    if "generator" not in meta:
        raise ValueError(f"{ckpt_path}: not a vocoder-stage checkpoint (no 'audiodiff.generator' entry)")
    arguments = {k: v for k, v in meta["generator"].items() if k != "_target_"}
    target = meta["generator"].get("_target_", "audiodiff.vocoders.hifigan.HiFiGAN")
    generator = generator_class(target, f"{ckpt_path} (audiodiff.generator)")(**arguments)
    prefix = "generator."
    generator.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    state = generator.remove_weight_norm().state_dict()
    data = (meta.get("config") or {}).get("data") or {}
    info = {"global_step": ckpt.get("global_step"),
            "run_dir": str(Path(ckpt_path).parent.parent), "training_data": data.get("corpus") or data.get("manifest")}

    return write_weights_folder(out, state, {"vocoder": generator_config(generator)}, info)


