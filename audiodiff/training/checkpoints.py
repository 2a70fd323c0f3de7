"""Training checkpoints: reading them without running pickled code, and turning a run's last checkpoint into an
export folder (`audiodiff.models.export_format`)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from audiodiff.models.build import model_config
from audiodiff.models.export_format import self_contained, write_export

log = logging.getLogger(__name__)


def inference_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """From a DiffusionTask state dict, the weights inference needs: `net.*` from the EMA copy, and the model's
    other parts as they are: `representation.*` (statistics and any trained parts), `timing.*` (a timing
    conditioner with weights, such as Stable Audio's seconds embedders). A frozen text encoder loads from its source;
    one the run trained (`text_ema.average.*`, fine-tuning with `finetune.train_text_encoder`) is exported from its
    EMA copy as `text_encoder.model.*`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("ema.average."):
            out["net." + key[len("ema.average."):]] = value
        elif key.startswith("text_ema.average."):
            out["text_encoder.model." + key[len("text_ema.average."):]] = value
        elif key.startswith("model.") and not key.startswith(("model.net.", "model.text_encoder.")):
            out[key[len("model."):]] = value
    if not any(k.startswith("net.") for k in out):
        raise ValueError("state dict has no EMA weights (keys 'ema.average.*'): is it a DiffusionTask checkpoint?")
    return out


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
    ckpt_path = find_checkpoint(run)
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["audiodiff"]["config"]
    card = {"global_step": ckpt.get("global_step"), "recipe": cfg.get("name"), "run_dir": cfg.get("run_dir"),
            "training_data": cfg.get("data", {}).get("corpus") or cfg.get("data", {}).get("manifest")}
    if cfg.get("latent_cache"):
        card["latent_cache"] = cfg["latent_cache"]  # the digest of the latent cache it was trained on
    card.update(license_card(ckpt["audiodiff"].get("licenses")))
    return write_export(out, inference_state(ckpt["state_dict"]), self_contained(model_config(cfg)), card)


def license_card(counts: dict[str, int] | None) -> dict[str, Any]:
    """The export.json fields of a run's training licences ({licence: clips}; None: not recorded): "licenses" and,
    for clips under non-commercial or unknown licences, "license_warning" (also logged as a warning)."""
    from audiodiff.data.licenses import license_warning

    if counts is None:
        return {"licenses": None}
    warning = license_warning(counts)
    if warning:
        log.warning("export: this model was %s", warning)
    return {"licenses": dict(counts), **({"license_warning": warning} if warning else {})}


