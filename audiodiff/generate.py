"""`python -m audiodiff.generate model=<export folder or run> prompt="..." seed=0 out=outputs/`.

Writes one wav per prompt (and per variation) with a JSON sidecar holding the prompt, seed, sampler, steps,
guidance, duration and model id.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from audiodiff.config import CONF_DIR

log = logging.getLogger(__name__)


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "clip"


def run(cfg: DictConfig) -> list[Path]:
    """Generate as `cfg` says; returns the written audio files."""
    from audiodiff.audio.io import save_audio
    from audiodiff.pipeline import AudioDiffusionPipeline, describe

    if cfg.model is None:
        raise ValueError("model: expected an export folder, run directory or .ckpt (model=...), got nothing")
    prompts = [cfg.prompt] if isinstance(cfg.prompt, str) else list(cfg.prompt or [])
    pipe = AudioDiffusionPipeline.from_pretrained(cfg.model, device=cfg.device)
    # sampler=<preset> selects a conf/sampler/ group: its settings apply unless steps=/guidance= say otherwise.
    preset = OmegaConf.to_container(cfg.sampler, resolve=True) if cfg.get("sampler") else {}
    name = preset.pop("name", None)
    steps = cfg.steps if cfg.steps is not None else preset.get("steps")
    guidance = cfg.guidance if cfg.guidance is not None else preset.get("guidance")
    preset.pop("steps", None), preset.pop("guidance", None)
    options = {**preset, **dict(cfg.get("sampler_options") or {})}
    negative = None if cfg.get("negative_prompt") is None else [str(cfg.negative_prompt)] * len(prompts)
    # Every check happens before anything is written.
    settings = pipe.settings(steps, guidance, name, **options)
    pipe.check_request(prompts, cfg.duration, negative)
    out_dir = Path(cfg.out)
    written = []
    for variation in range(int(cfg.n)):
        seed = int(cfg.seed) + variation * len(prompts)
        result = pipe(prompts, duration=cfg.duration, steps=settings.steps, guidance=settings.guidance,
                      seed=seed, sampler=settings.name, negative_prompts=negative, **options)
        for i, prompt in enumerate(prompts):
            stem = f"{slug(prompt)}_seed{result.seeds[i]}"
            path = save_audio(out_dir / f"{stem}.wav", result.audio[i], result.sample_rate)
            (out_dir / f"{stem}.json").write_text(json.dumps(describe(result, prompt, i, pipe.model_id), indent=2))
            written.append(path)
            log.info("wrote %s", path)
    return written


@hydra.main(config_path=str(CONF_DIR), config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    for path in run(cfg):
        print(path)


if __name__ == "__main__":
    main()
