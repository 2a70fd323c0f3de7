"""Export inference weights: EMA denoiser + representation statistics as safetensors beside config.yaml.

`python -m audiodiff.export run=<run dir or .ckpt> out=<folder>`; `AudioDiffusionPipeline.from_pretrained(out)`
loads the folder without any training code or training state.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from audiodiff import __version__

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def inference_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """From a DiffusionTask state dict, the weights inference needs: `net.*` from the EMA copy and
    `representation.*` (statistics and any trained parts). Text encoders are frozen and load from their source."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("ema.average."):
            out["net." + key[len("ema.average."):]] = value
        elif key.startswith("model.representation."):
            out[key[len("model."):]] = value
    if not any(k.startswith("net.") for k in out):
        raise ValueError("state dict has no EMA weights (keys 'ema.average.*'): is it a DiffusionTask checkpoint?")
    return out


def write_weights_folder(out: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                         info: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> Path:
    """Write `out/` atomically: `model.safetensors` (state), `config.yaml` (config), `export.json` (package version
    and `info`) and any further text `files` ({name: text}). A temporary sibling folder is filled, then renamed over
    any previous `out/`, so readers see the old folder or the complete new one, never a mixture."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt", "audiodiff_version": __version__})
        (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "export.json").write_text(json.dumps({"audiodiff_version": __version__, **(info or {})},
                                                    indent=2) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_export(out: str | Path, state: dict[str, torch.Tensor], model_cfg: dict[str, Any],
                 card: dict[str, Any] | None = None) -> Path:
    """A diffusion model's export folder (`write_weights_folder`) with its `model_card.md`."""
    info = {"audiodiff_version": __version__, **(card or {})}
    return write_weights_folder(out, state, model_cfg, card, {"model_card.md": _model_card(model_cfg, info)})


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
    for key in ("recipe", "run_dir", "global_step", "training_data"):
        if key in info:
            lines.append(f"- {key.replace('_', ' ')}: {info[key]}")
    lines += ["", "Load with `AudioDiffusionPipeline.from_pretrained(<this folder>)`.", ""]
    return "\n".join(lines)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded without executing pickled code (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors and plain data, which "
                         f"could run code when unpickled ({str(err).splitlines()[0]})") from err
    if not isinstance(ckpt, dict) or "audiodiff" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an audiodiff training checkpoint (no 'audiodiff' / 'state_dict' entries)")
    return ckpt


def find_checkpoint(run: str | Path) -> Path:
    """`run` itself if it is a file, else `<run>/checkpoints/last.ckpt`."""
    run = Path(run)
    if run.is_file():
        return run
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{run}: no checkpoints/last.ckpt (is it a training run directory?)")
    return last


def export_run(run: str | Path, out: str | Path) -> Path:
    """Export the EMA weights of a run's last checkpoint (or of a given .ckpt) to `out`."""
    from audiodiff.build import model_config

    ckpt_path = find_checkpoint(run)
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["audiodiff"]["config"]
    card = {"global_step": ckpt.get("global_step"), "recipe": cfg.get("name"), "run_dir": cfg.get("run_dir"),
            "training_data": cfg.get("data", {}).get("corpus") or cfg.get("data", {}).get("manifest")}
    if cfg.get("latent_cache"):
        card["latent_cache"] = cfg["latent_cache"]  # the digest of the latent cache it was trained on
    return write_export(out, inference_state(ckpt["state_dict"]), self_contained(model_config(cfg)), card)


def self_contained(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config with a vocoder or autoencoder loaded from an earlier stage's export folder replaced by its
    architecture: the trained weights travel in the export's `representation.*` entries, so no folder is needed."""
    from audiodiff.representations.autoencoder import inference_config

    model_cfg = {**model_cfg, "representation": inference_config(model_cfg["representation"])}
    vocoder = model_cfg.get("vocoder") or {}
    from audiodiff.vocoders.trained import FROM_EXPORT_TARGETS, inference_config

    if vocoder.get("_target_") not in FROM_EXPORT_TARGETS:
        return model_cfg
    return {**model_cfg, "vocoder": inference_config(vocoder["folder"])}


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Export the run `cfg` (conf/export.yaml) names and print the folder."""
    from audiodiff import cli

    if cfg.run is None and cfg.recipe is None:
        raise ValueError("run: expected a run directory or .ckpt (run=...) or recipe=<name>, got neither")
    run = Path(cfg.run) if cfg.run is not None else cli.recipe_run_dir(cfg.recipe)
    out = cfg.out if cfg.out is not None else (run.parent.parent if run.is_file() else run) / "export"
    print(export_run(run, out))


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.export", "export", main, __doc__)
