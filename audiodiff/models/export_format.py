"""The export format: a model folder holding `model.safetensors` (inference weights) beside `config.yaml` (the
resolved model configuration, every `_target_` a registered component) and `export.json` (package version and
provenance), written atomically. `AudioDiffusionPipeline.from_pretrained` reads it without any training code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from audiodiff import __version__
from audiodiff.representations.autoencoder import inference_config as autoencoder_inference_config
from audiodiff.utils.files import atomic_folder
from audiodiff.vocoders.trained import FROM_EXPORT_TARGETS
from audiodiff.vocoders.trained import inference_config as vocoder_inference_config

TEXT_ENCODER_DIR = "text_encoder"  # a text encoder an export folder carries (converted models' T5)
# model.safetensors entries of a text encoder that a fine-tune trained: they replace the weights from its source
TEXT_ENCODER_PREFIX = "text_encoder."
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def write_weights_folder(out: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                         info: dict[str, Any] | None = None, files: dict[str, str] | None = None,
                         copies: dict[str, Path] | None = None) -> Path:
    """Write `out/` atomically (`audiodiff.utils.files.atomic_folder`): `model.safetensors` (state), `config.yaml`
    (config), `export.json` (package version and `info`), any further text `files` ({name: text}) and copies of
    files ({name: source}), so readers see the old folder or the complete new one, never a mixture."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt", "audiodiff_version": __version__})
        (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "export.json").write_text(json.dumps({"audiodiff_version": __version__, **(info or {})},
                                                    indent=2) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        for name, source in (copies or {}).items():  # a name may hold a subfolder: "text_encoder/config.json"
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp / name)
    return out


def write_export(out: str | Path, state: dict[str, torch.Tensor], model_cfg: dict[str, Any],
                 card: dict[str, Any] | None = None, copies: dict[str, Path] | None = None) -> Path:
    """A diffusion model's export folder (`write_weights_folder`) with its `model_card.md` and copies of further
    files ({name: source}, e.g. the adapter a fine-tuning run trained)."""
    info = {"audiodiff_version": __version__, **(card or {})}
    return write_weights_folder(out, state, model_cfg, card, {"model_card.md": _model_card(model_cfg, info)}, copies)


def _model_card(model_cfg: dict[str, Any], info: dict[str, Any]) -> str:
    rep = model_cfg["representation"]
    lines = [
        "# audiodiff model", "",
        f"- audiodiff version: {info['audiodiff_version']}",
        f"- representation: `{rep.get('_target_')}` at {rep.get('sample_rate')} Hz",
        f"- denoiser: `{model_cfg['denoiser'].get('_target_')}`",
        f"- objective: `{model_cfg['diffusion'].get('_target_')}` ({model_cfg['diffusion'].get('prediction')})",
        f"- text encoder: `{model_cfg['text_encoder'].get('name_or_path')}`",
        f"- default clip length: {model_cfg['duration']} s",
        f"- default sampler: {model_cfg['sampler']}",
    ]
    for key in ("recipe", "run_dir", "global_step", "training_data", "init", "adapter", "adapters"):
        if key in info:
            lines.append(f"- {key.replace('_', ' ')}: {info[key]}")
    if "licenses" in info:
        lines += ["", "## Training data licences", ""]
        if info["licenses"] is None:
            lines.append("Not recorded (the training data named no manifest).")
        else:
            lines += [f"- {name}: {count} clips" for name, count in info["licenses"].items()]
        if info.get("license_warning"):
            lines += ["", f"**Warning:** this model was {info['license_warning']}."]
    lines += ["", "Load with `AudioDiffusionPipeline.from_pretrained(<this folder>)`.", ""]
    return "\n".join(lines)


def self_contained(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config with a vocoder or autoencoder loaded from an earlier stage's export folder replaced by its
    architecture: the trained weights travel in the export's `representation.*` entries, so no folder is needed."""
    model_cfg = {**model_cfg, "representation": autoencoder_inference_config(model_cfg["representation"])}
    vocoder = model_cfg.get("vocoder") or {}
    if vocoder.get("_target_") not in FROM_EXPORT_TARGETS:
        return model_cfg
    return {**model_cfg, "vocoder": vocoder_inference_config(vocoder["folder"])}


def read_info(folder: str | Path) -> dict[str, Any]:
    """An export folder's `export.json` ({} when absent); ValueError naming the file when it is not a JSON object."""
    path = Path(folder) / "export.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from err
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def read_export(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state) of an export folder; FileNotFoundError naming what is missing, ValueError for a config that
    is not a mapping. Reads data only: `config.yaml` with a safe YAML loader, weights from safetensors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a model export folder (no {' or '.join(missing)}); a training run is "
                                f"exported with `python -m audiodiff.export run=<run dir>`")
    config = yaml.safe_load((folder / CONFIG).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG}: expected a mapping of model settings, got {type(config).__name__}")
    return config, load_file(str(folder / WEIGHTS))


def carried_text_encoder(cfg: dict[str, Any]) -> dict[str, Path]:
    """The files of a text encoder an export folder carries (converted models' T5: `TEXT_ENCODER_DIR` beside the
    export's config, as `with_local_parts` resolved it), as {name inside a new export: source}; {} otherwise."""
    name = (cfg.get("text_encoder") or {}).get("name_or_path")
    if not isinstance(name, str):
        return {}
    folder = Path(name)
    if folder.name != TEXT_ENCODER_DIR or not (folder.parent / CONFIG).is_file() or not folder.is_dir():
        return {}
    return {f"{TEXT_ENCODER_DIR}/{f.name}": f for f in sorted(folder.iterdir()) if f.is_file()}


def with_local_parts(cfg: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`cfg` (an export's config) with a text encoder the export folder carries (`name_or_path` naming a subfolder
    of it, as converted models do) pointed at that subfolder's absolute path; other configs are returned as they are."""
    folder = Path(folder)
    encoder = cfg.get("text_encoder") or {}
    name = encoder.get("name_or_path")
    if isinstance(name, str) and not Path(name).is_absolute() and (folder / name / "config.json").is_file():
        return {**cfg, "text_encoder": {**encoder, "name_or_path": str((folder / name).resolve())}}
    return cfg
