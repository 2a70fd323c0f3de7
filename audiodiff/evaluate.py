"""`python -m audiodiff.evaluate model=<folder> recipe=<name> [n=… seed=…]`: generate for the recipe's held-out
prompts, compute the metrics, and write `report.json`, `report.md` (with a spectrogram grid and per-prompt scores)
and the generated audio. `compare=[a/report.json,b/report.json]` prints two reports side by side, refusing ones
measured under different conditions unless `force=true`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiodiff import cli
from audiodiff.config import compose_config

log = logging.getLogger(__name__)


def load_embedders(spec: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Embedders named in `spec` ({name: weights source or None}), loaded on `device`."""
    wanted = {name: source for name, source in spec.items() if source is not None}
    if not wanted:
        return {}
    from audiodiff.evaluation.embedders import load_embedder

    return {name: load_embedder(name, source, device=device) for name, source in wanted.items()}


def run(cfg: DictConfig) -> Path:
    """Evaluate as `cfg` says; returns the report folder."""
    from audiodiff.evaluation.report import markdown_report
    from audiodiff.evaluation.run import EvalSettings, evaluate_model
    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.utils.files import write_text

    if cfg.model is None:
        raise ValueError("model: expected an export folder or run directory (model=...), got nothing")
    recipe = compose_config("train", [f"recipe={cfg.recipe}"])
    corpus = recipe.data.get("corpus")
    if corpus is None:
        raise ValueError(f"recipe {cfg.recipe!r} trains on a manifest, not a built-in corpus: nothing to score "
                         f"attributes against")
    pipe = AudioDiffusionPipeline.from_pretrained(cfg.model, device=cfg.device)
    embedders = load_embedders(OmegaConf.to_container(cfg.embedders) or {}, cfg.device)
    settings = EvalSettings(corpus=corpus, root=cfg.data_root or recipe.data.root, n=int(cfg.n), seed=int(cfg.seed),
                            guidance=cfg.guidance, steps=cfg.steps, sampler=cfg.sampler,
                            batch_size=int(cfg.batch_size), n_reference=int(cfg.n_reference),
                            n_train=int(cfg.n_train), n_boot=int(cfg.n_boot), fad_infinity=bool(cfg.fad_infinity),
                            near_copy_quantile=float(cfg.near_copy_quantile), cache=str(cfg.cache))
    model_dir = Path(cfg.model)
    out = Path(cfg.out) if cfg.out else (model_dir if model_dir.is_dir() else model_dir.parent) / "eval" / (
        f"{cfg.recipe}_seed{cfg.seed}")
    report = evaluate_model(pipe, settings, out, embedders)
    report["card"]["recipe"] = cfg.recipe

    columns = sorted({k for row in report["per_prompt"] for k in row} - {"prompt", "file", "seed", "near_copy"})
    write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "report.md", markdown_report(report, "spectrograms.png", columns))
    return out


def main(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    if cfg.compare is not None:
        from audiodiff.evaluation.report import compare_reports

        print(compare_reports(list(cfg.compare), force=bool(cfg.force)))
        return
    print(run(cfg) / "report.md")


if __name__ == "__main__":
    cli.main("audiodiff.evaluate", "evaluate", main, __doc__)
