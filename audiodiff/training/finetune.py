"""Fine-tuning an exported model: `python -m audiodiff.train recipe=finetune init=MODEL data=manifest data.manifest=...`

`init` names an export folder (or a run directory that exported). Everything that defines the model comes from it:
the model keys of its `config.yaml` (architecture, representation, text encoder, objective, sampler, clip length)
replace the run's, and its weights, latent statistics included, are loaded before training; a command that also
sets one of those keys is refused, naming it. `finetune.method` says what trains:

- ``lora``: peft LoRA layers on the target modules (:mod:`audiodiff.models.adapters`), the base frozen. The run's
  `export/` holds the merged model (loadable like any export) and `export/adapter.safetensors`, the adapter alone
  with the base model's content hash and its LoRA settings;
- ``full``: every denoiser weight; `export/` is a plain export.

`finetune.train_text_encoder=true` trains the text encoder too: LoRA layers on its attention projections (same rank,
alpha and dropout; they go into the adapter file, see :mod:`audiodiff.models.adapters`) or all its weights (full).
The export then carries the text encoder's trained weights (`text_encoder.*` in `model.safetensors`, EMA-averaged
like the denoiser's) instead of loading it from its source, and no text cache is used during training.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from audiodiff.models.adapters import (
    ADAPTER_FILE,
    TEXT_PREFIX,
    Adapter,
    LoraSettings,
    add_lora,
    lora_parameter_count,
    save_adapter,
    target_modules,
    weights_hash,
)
from audiodiff.models.build import MODEL_KEYS, OPTIONAL_MODEL_KEYS, model_config
from audiodiff.models.export_format import CONFIG, WEIGHTS, carried_text_encoder, read_export, with_local_parts
from audiodiff.models.model import DiffusionModel
from audiodiff.pipeline import AudioDiffusionPipeline, load_inference_state

log = logging.getLogger(__name__)

# Settings that come from `init` and may not be given beside it (the config groups that build the model, too).
FROM_INIT = (*MODEL_KEYS, *OPTIONAL_MODEL_KEYS, "mel", "autoencoder", "data.segment_seconds", "data.sample_rate",
             "data.channels")


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start: no init model, or a setting that init decides."""


def init_folder(path: str | Path) -> Path:
    """The export folder `init` names: the folder itself, or a run directory's `export/`."""
    path = Path(path)
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return path
    if (path / "export" / WEIGHTS).is_file():
        return path / "export"
    what = "no such folder" if not path.exists() else "not a model export folder (no config.yaml + model.safetensors)"
    raise FinetuneError(f"init={path}: {what}; fine-tuning starts from an export (python -m audiodiff.export "
                        f"run=<run dir> makes one from a training run)")


def check_overrides(overrides: list[str]) -> None:
    """Refuse command-line settings that `init` decides (see FROM_INIT), naming the first."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == k or key.startswith(f"{k}.") for k in FROM_INIT):
            raise FinetuneError(
                f"{key}: a run started from init= takes its model from there (architecture, representation, text "
                f"encoder, latent statistics, clip length); remove {override!r}"
                + (" (finetune.segment_seconds sets the training crop)" if key.startswith("data.") else
                   ", or train a new model without init="))


def init_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with its model keys replaced by those of the `init` export and the data cropped to
    `finetune.segment_seconds` (default the model's clip length). FinetuneError without `init` or `finetune`."""
    if not cfg.get("init"):
        raise FinetuneError(f"recipe {cfg.get('name')!r} fine-tunes a model: give init=<export folder or run dir>")
    if cfg.get("finetune") is None:
        raise FinetuneError("init= needs finetune=lora or finetune=full")
    folder = init_folder(cfg.init)
    exported, _ = read_export(folder)
    exported = with_local_parts(exported, folder)  # a converted model's T5 lives in its export folder
    model = model_config(exported)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in (*MODEL_KEYS, *OPTIONAL_MODEL_KEYS):
            cfg[key] = model.get(key)
        cfg.init = str(folder)
        segment = cfg.finetune.get("segment_seconds")
        cfg.data.segment_seconds = float(segment if segment is not None else model["duration"])
        # the clips are read with the model's audio channels (a stereo model such as a converted Stable Audio
        # Open: mono clips are duplicated into both channels, see audiodiff.data.dataset)
        cfg.data.channels = model_channels(model.get("representation") or {}, int(cfg.data.channels))
    return cfg


def model_channels(representation: dict, default: int) -> int:
    """Audio channels of an exported model's representation config: `audio_channels` (Stable Audio's autoencoders),
    `channels` of the mel representation (one mel per channel), else `default`."""
    if "audio_channels" in representation:
        return int(representation["audio_channels"])
    if str(representation.get("_target_", "")).endswith("MelRepresentation"):
        return int(representation.get("channels", 1))
    return default


def lora_settings(cfg: DictConfig) -> LoraSettings | None:
    """The LoRA settings of `cfg.finetune`, or None for full fine-tuning."""
    node = cfg.finetune
    if node.method == "full":
        return None
    if node.method != "lora":
        raise FinetuneError(f"finetune.method: expected lora or full, got {node.method!r}")
    targets = node.targets
    return LoraSettings(rank=node.rank, alpha=float(node.alpha), dropout=float(node.dropout),
                        targets=tuple(targets) if OmegaConf.is_list(targets) else targets)


def start_from_init(model: DiffusionModel, cfg: DictConfig) -> dict[str, Any]:
    """Load the `init` weights into `model` and make its denoiser trainable as `cfg.finetune` says (LoRA layers
    added in place, or every weight); returns what the export needs: the base hash, the LoRA settings and targets."""
    folder = init_folder(cfg.init)
    _, state = read_export(folder)
    load_inference_state(model, state, str(folder))
    base_hash = weights_hash({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    if cfg.finetune.get("gradient_checkpointing"):
        if not hasattr(model.net, "gradient_checkpointing"):
            raise FinetuneError(f"finetune.gradient_checkpointing: {type(model.net).__name__} has no gradient "
                                f"checkpointing")
        model.net.gradient_checkpointing = True
    settings = lora_settings(cfg)
    total = sum(p.numel() for p in model.net.parameters())
    text_modules = unfreeze_text_encoder(model, settings) if cfg.finetune.get("train_text_encoder") else None
    if settings is None:
        model.net.requires_grad_(True)
        log.info("full fine-tuning of %s from %s: %d trainable parameters", type(model.net).__name__, folder, total)
        return {"base_hash": base_hash, "method": "full"}
    modules = target_modules(model.net, settings)
    add_lora(model.net, settings, modules)
    trained = lora_parameter_count(model.net, modules, settings.rank)
    log.info("LoRA fine-tuning of %s from %s: rank %d on %d modules, %d trainable parameters (%.2f%% of %d)",
             type(model.net).__name__, folder, settings.rank, len(modules), trained, 100 * trained / total, total)
    return {"base_hash": base_hash, "method": "lora", "settings": settings, "modules": modules,
            "text_modules": text_modules or []}


def unfreeze_text_encoder(model: DiffusionModel, settings: LoraSettings | None) -> list[str]:
    """Make `model`'s text encoder train: with LoRA `settings`, peft LoRA layers of the same rank, alpha and dropout
    on the attention projections of its transformers model (returned, dotted names inside that model); without,
    every weight ([] returned)."""
    encoder = getattr(model.text_encoder, "model", None)
    if not isinstance(encoder, torch.nn.Module):
        raise FinetuneError(f"finetune.train_text_encoder: {type(model.text_encoder).__name__} has no transformers "
                            f"model to train")
    if settings is None:
        encoder.requires_grad_(True)
        log.info("the text encoder trains too: %d parameters", sum(p.numel() for p in encoder.parameters()))
        return []
    text_settings = LoraSettings(rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                                 targets=("attention",))
    modules = target_modules(encoder, text_settings)
    add_lora(encoder, text_settings, modules)
    log.info("the text encoder trains too: LoRA rank %d on its %d attention projections, %d parameters",
             settings.rank, len(modules), lora_parameter_count(encoder, modules, settings.rank))
    return modules


def _lora_tensors(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The LoRA tensors of a peft-wrapped state (adapter "default"), under the adapter file's names."""
    return {prefix + key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): value
            for key, value in state.items() if ".lora_A.default." in key or ".lora_B.default." in key}


def export_adapter(ema_state: dict[str, Any], started: dict[str, Any], cfg: DictConfig, path: Path,
                   info: dict[str, Any], text_state: dict[str, Any] | None = None) -> Adapter:
    """Write the adapter of a LoRA run from its EMA denoiser state (peft names, adapter "default") to `path`, with
    the LoRA tensors of the text encoder's EMA state (`text_state`, names inside its transformers model) when the
    text encoder trained."""
    text_modules = tuple(started.get("text_modules") or ())
    state = {**_lora_tensors(ema_state), **(_lora_tensors(text_state or {}, TEXT_PREFIX) if text_modules else {})}
    adapter = Adapter(state, started["settings"], tuple(started["modules"]), started["base_hash"],
                      str(cfg.denoiser.get("_target_", "")), info, text_modules)
    save_adapter(path, adapter)
    return adapter


def export_finetune_run(last: Path, out: Path, cfg: DictConfig, started: dict[str, Any]) -> Path:
    """The export of a fine-tuning run's last checkpoint: a plain export for full fine-tuning; for LoRA the base
    model with the adapter merged in, and the adapter alone as `out/adapter.safetensors`."""
    from audiodiff.training.checkpoints import export_run, inference_state, license_card, load_checkpoint

    if started["method"] == "full":
        export_run(last, out)
        pipe = AudioDiffusionPipeline.from_pretrained(out)
        if not carried_text_encoder(pipe.config or {}):
            return out
        # the init model's folder carries its text encoder (a converted model's T5): so does this export
        card = json.loads((out / "export.json").read_text())
        pipe.model_id = str(cfg.init)  # recorded as the base
        return pipe.save_pretrained(out, card={k: v for k, v in card.items() if k != "audiodiff_version"})
    ckpt = load_checkpoint(last)
    averaged = inference_state(ckpt["state_dict"])
    ema = {k[len("net."):]: v for k, v in averaged.items() if k.startswith("net.")}
    text = {k[len("text_encoder.model."):]: v for k, v in averaged.items() if k.startswith("text_encoder.model.")}
    info = {"recipe": cfg.get("name"), "global_step": ckpt.get("global_step"), "init": str(cfg.init),
            "training_data": cfg.data.get("manifest") or cfg.data.get("corpus"),
            **license_card(ckpt["audiodiff"].get("licenses"))}  # the fine-tuning clips' licences
    adapter_path = Path(cfg.run_dir) / ADAPTER_FILE
    export_adapter(ema, started, cfg, adapter_path, info, text)
    pipe = AudioDiffusionPipeline.from_pretrained(cfg.init)
    pipe.load_adapter(adapter_path)
    return pipe.save_pretrained(out, card={**info, "adapter": ADAPTER_FILE, "base_hash": started["base_hash"]},
                                copies={ADAPTER_FILE: adapter_path})

