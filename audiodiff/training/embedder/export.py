"""Export a trained contrastive embedder: the model weights of its last checkpoint beside the configuration that
`audiodiff.evaluation.embedders.contrastive.load_embedder` reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audiodiff.evaluation.embedders.contrastive.model import ContrastiveConfig
from audiodiff.models.export_format import write_weights_folder
from audiodiff.training.checkpoints import load_checkpoint
from audiodiff.training.embedder.task import CHECKPOINT_KIND, model_state


def export_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """What inference needs of a resolved training configuration: name, model and text encoder nodes."""
    missing = [k for k in ("name", "model", "text_encoder") if k not in run_config]
    if missing:
        raise ValueError(f"export_config: the run configuration lacks {missing}: is it an embedder run?")
    return {"name": run_config["name"], "model": ContrastiveConfig.from_dict(dict(run_config["model"])).as_dict(),
            "text_encoder": dict(run_config["text_encoder"])}


def export_embedder(ckpt: str | Path, out: str | Path) -> Path:
    """Export the model weights of a ContrastiveTask checkpoint (loaded with `weights_only=True`) to `out`."""
    checkpoint = load_checkpoint(ckpt)
    kind = checkpoint["audiodiff"].get("kind")
    if kind != CHECKPOINT_KIND:
        raise ValueError(f"{ckpt}: a {kind or 'diffusion'} checkpoint, expected a '{CHECKPOINT_KIND}' one")
    run_config = checkpoint["audiodiff"]["config"]
    data = run_config.get("data", {})
    info = {"global_step": checkpoint.get("global_step"), "run_dir": run_config.get("run_dir"),
            "training_data": data.get("corpus") or data.get("manifest")}
    return write_weights_folder(out, model_state(checkpoint["state_dict"]), export_config(run_config), info)
