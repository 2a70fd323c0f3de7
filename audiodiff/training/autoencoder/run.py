"""Train (or resume) an autoencoder stage from a composed configuration, export it, load the export back.

`train_autoencoder(cfg)` takes conf/train.yaml composed with `stage=autoencoder` (conf/stage/autoencoder.yaml) and an
`autoencoder` (e.g. `autoencoder=mel_vae`): it reads `autoencoder`, `data`, `trainer`, `seed`, `progress_refresh`,
`stage` and, to voice a mel VAE's validation clips, `vocoder` (may be null).

A stage run directory (`cfg.stage.run_dir`) holds `config.yaml` (resolved), `checkpoints/last.ckpt` (training state,
with the resolved config, the autoencoder's constructor arguments and the package version inside), `tensorboard/`
and, when training ends, `export/`: the autoencoder's inference weights (weight norm folded in; a mel VAE's log-mel
statistics included) as `model.safetensors` beside `config.yaml` (`autoencoder:` its constructor arguments with
`_target_`) and `export.json`. :func:`load_autoencoder` reads that folder back;
:func:`audiodiff.representations.autoencoder.from_export` wraps it as a diffusion representation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from audiodiff.autoencoders.base import VariationalAutoencoder
from audiodiff.autoencoders.loading import build_autoencoder, load_autoencoder
from audiodiff.autoencoders.mel_vae import MelVAE
from audiodiff.models.export_format import write_weights_folder
from audiodiff.training.autoencoder.task import AutoencoderTask
from audiodiff.training.checkpoints import load_checkpoint
from audiodiff.training.data import build_datamodule
from audiodiff.training.vocoder.run import (
    RUN_ONLY_STAGE_KEYS,
    build_discriminator,
    check_stage_resume,
    fit_stage,
    stage_data_config,
    start_stage,
)

__all__ = ["check_autoencoder_resume", "export_autoencoder", "load_autoencoder", "resume_signature",
           "train_autoencoder"]


def resume_signature(resolved: dict[str, Any]) -> dict[str, Any]:
    """What a resumed autoencoder stage must share with its checkpoint: the autoencoder, the effective data, the seed
    and every stage setting except `RUN_ONLY_STAGE_KEYS` (the vocoder only voices validation clips: it may change)."""
    stage = {k: v for k, v in resolved["stage"].items() if k not in RUN_ONLY_STAGE_KEYS}
    return {"autoencoder": resolved["autoencoder"], "data": stage_data_config(resolved), "stage": stage,
            "seed": resolved.get("seed")}


def check_autoencoder_resume(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume an autoencoder stage whose configuration changed (see :func:`resume_signature`)."""
    check_stage_resume("autoencoder", resume_signature, saved, current, ckpt)


def build_training_autoencoder(cfg: DictConfig, data_sample_rate: int) -> VariationalAutoencoder:
    """The `autoencoder` node built for training (weight norm kept), refused when its sample rate is not the data's."""
    node = OmegaConf.to_container(cfg.autoencoder, resolve=True)
    assert isinstance(node, dict)
    autoencoder = build_autoencoder(node, inference=False)
    if autoencoder.sample_rate != int(data_sample_rate):
        raise ValueError(f"autoencoder.sample_rate is {autoencoder.sample_rate}, but the data are loaded at "
                         f"data.sample_rate {data_sample_rate}: set one to the other")
    return autoencoder


def train_autoencoder(cfg: DictConfig) -> Path:
    """Train (or resume) the autoencoder stage of `cfg`; returns the stage run directory, which ends with `export/`.

    A waveform VAE trains against the discriminators named in `stage.discriminators`; a mel VAE trains without, and
    voices its validation reconstructions with `cfg.vocoder` when one is configured. Under `trainer.strategy=ddp`
    the stage runs DDP with `find_unused_parameters=True` (each player's backward pass leaves the other's weights
    without gradients).

    Rerunning with the same configuration resumes from `checkpoints/last.ckpt` (weights, optimizer and LR-schedule
    states, data position, random state); a changed configuration is refused (:class:`ResumeMismatchError`). SIGTERM
    or SIGUSR1 stop after the current step with `last.ckpt` written; the function then returns without exporting.
    """
    stage = cfg.stage
    run_dir, resolved, last = start_stage(cfg, check_autoencoder_resume)
    data_cfg = stage_data_config(resolved)
    datamodule = build_datamodule(OmegaConf.create(data_cfg), skip_log_dir=str(run_dir))
    autoencoder = build_training_autoencoder(cfg, data_cfg["sample_rate"])
    is_mel = isinstance(autoencoder, MelVAE)
    discriminator = None if is_mel else build_discriminator(stage)
    vocoder = instantiate(cfg.vocoder) if is_mel and cfg.get("vocoder") is not None else None
    task = AutoencoderTask(autoencoder, discriminator, optimizer=instantiate(stage.optim), vocoder=vocoder,
                           run_config=resolved, **stage.task)
    return fit_stage(cfg, resolved, task, datamodule, last, export_autoencoder, adversarial=not is_mel)


# ---- export ---------------------------------------------------------------------------------------------------------
def export_autoencoder(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write the autoencoder of an autoencoder-stage checkpoint to `out/` (atomically: a sibling temporary folder is
    filled, then renamed over any previous export): `model.safetensors` in inference form (weight norm folded in),
    `config.yaml` holding `autoencoder:` (its constructor arguments and `_target_`), `export.json` (version, step, run,
    data, kind, latent size and rate)."""
    ckpt = load_checkpoint(ckpt_path)
    meta = ckpt["audiodiff"]
    if "autoencoder" not in meta:
        raise ValueError(f"{ckpt_path}: not an autoencoder-stage checkpoint (no 'audiodiff.autoencoder' entry)")
    autoencoder = build_autoencoder(meta["autoencoder"], inference=False)
    prefix = "autoencoder."
    autoencoder.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    state = autoencoder.remove_weight_norm().state_dict()
    data = (meta.get("config") or {}).get("data") or {}
    info = {"global_step": ckpt.get("global_step"),
            "run_dir": str(Path(ckpt_path).parent.parent), "training_data": data.get("corpus") or data.get("manifest"),
            "kind": autoencoder.kind, "latent_channels": autoencoder.latent_channels,
            "latent_hop": autoencoder.latent_hop, "frame_rate": autoencoder.frame_rate,
            "parameters": autoencoder.num_parameters()}

    return write_weights_folder(out, state, {"autoencoder": autoencoder.config()}, info)
