"""`python -m audiodiff.export run=<run dir or .ckpt> [out=<folder>]` (or `recipe=<name>`): write the inference
weights of a training run (EMA denoiser and representation statistics as safetensors beside config.yaml), which
`AudioDiffusionPipeline.from_pretrained(out)` loads without any training code or training state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audiodiff import cli
from audiodiff.models.export_format import CONFIG, WEIGHTS, self_contained, write_export, write_weights_folder
from audiodiff.training.checkpoints import export_run, find_checkpoint, inference_state, load_checkpoint

__all__ = ["CONFIG", "WEIGHTS", "export_run", "find_checkpoint", "inference_state", "load_checkpoint", "main",
           "self_contained", "write_export", "write_weights_folder"]


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Export the run `cfg` (conf/export.yaml) names and print the folder."""
    if cfg.run is None and cfg.recipe is None:
        raise ValueError("run: expected a run directory or .ckpt (run=...) or recipe=<name>, got neither")
    run = Path(cfg.run) if cfg.run is not None else cli.recipe_run_dir(cfg.recipe)
    out = cfg.out if cfg.out is not None else (run.parent.parent if run.is_file() else run) / "export"
    print(export_run(run, out))




if __name__ == "__main__":
    cli.main("audiodiff.export", "export", main, __doc__)
