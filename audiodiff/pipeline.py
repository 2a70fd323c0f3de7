"""Inference API: load an exported model folder (or a training run) and turn prompts into audio.

    pipe = AudioDiffusionPipeline.from_pretrained("runs/sfx/seed0/export")
    out = pipe(["three short high beeps"], duration=3.0, steps=25, guidance=3.0, seed=0)
    out.audio  # [B, C, T] float32 at out.sample_rate Hz
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor

from audiodiff.build import build_model
from audiodiff.export import CONFIG, WEIGHTS, find_checkpoint, inference_state, load_checkpoint
from audiodiff.model import DiffusionModel, SamplerSettings


class ModelLoadError(ValueError):
    """A model folder or checkpoint that is missing, incomplete or does not fit the code."""


@dataclass(frozen=True)
class GenerationOutput:
    audio: Tensor  # [B, C, T] float32
    sample_rate: int  # Hz
    settings: SamplerSettings
    seeds: list[int]
    duration: float  # seconds


class AudioDiffusionPipeline:
    """Prompt → waveform with a trained DiffusionModel (EMA weights)."""

    def __init__(self, model: DiffusionModel, model_id: str = "") -> None:
        self.model = model.eval()
        self.model_id = model_id

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> AudioDiffusionPipeline:
        """Load an export folder (config.yaml + model.safetensors), a run directory or a training .ckpt."""
        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such model folder or checkpoint")
        if path.is_dir() and (path / WEIGHTS).exists():
            if not (path / CONFIG).exists():
                raise ModelLoadError(f"{path}: has {WEIGHTS} but no {CONFIG}")
            cfg = yaml.safe_load((path / CONFIG).read_text())
            state = load_file(str(path / WEIGHTS))
        else:
            try:
                ckpt = load_checkpoint(find_checkpoint(path))
            except (FileNotFoundError, ValueError) as err:
                raise ModelLoadError(f"{path}: expected an export folder with {CONFIG} and {WEIGHTS}, a run "
                                     f"directory with checkpoints/last.ckpt, or a .ckpt file ({err})") from err
            cfg = ckpt["audiodiff"]["config"]
            state = inference_state(ckpt["state_dict"])
        try:
            model = build_model(cfg)
        except Exception as err:  # an unknown target, a missing key, a size that does not fit
            raise ModelLoadError(f"{path}: cannot build the model from its config: {err}") from err
        load_inference_state(model, state, str(path))
        return cls(model.to(device), model_id=str(path))

    def __call__(self, prompts: str | list[str], duration: float | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                 negative_prompts: str | list[str] | None = None, **options: Any) -> GenerationOutput:
        """Generate one clip per prompt (prompt i with seed `seed + i`). Unset settings fall back to the model's
        defaults; `options` are further SamplerSettings fields (spacing, eta, s_churn, guidance_rescale,
        guidance_interval, shift). A single negative prompt applies to every prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if isinstance(negative_prompts, str):
            negative_prompts = [negative_prompts] * len(prompts)
        settings = self.settings(steps, guidance, sampler, **options)
        duration = self.check_request(prompts, duration, negative_prompts)
        wav = self.model.generate(prompts, duration, settings, seed=seed, negative_prompts=negative_prompts)
        return GenerationOutput(wav.float().cpu(), self.sample_rate, settings,
                                [seed + i for i in range(len(prompts))], duration)

    def settings(self, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 **options: Any) -> SamplerSettings:
        """The model's default SamplerSettings with the given changes (None = keep); raises ValueError naming a bad
        value or an unknown option."""
        known = set(asdict(self.model.sampler)) - {"name", "steps", "guidance"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; expected some of {sorted(known)}")
        changes: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if sampler is not None:
            changes["name"] = sampler
            if sampler != self.model.sampler.name and "eta" not in changes:
                changes["eta"] = None  # the default sampler's eta does not carry over to another sampler
            if sampler != self.model.sampler.name and "s_churn" not in changes:
                changes["s_churn"] = 0.0
        if steps is not None:
            changes["steps"] = int(steps)
        if guidance is not None:
            changes["guidance"] = float(guidance)
        if "guidance_interval" in changes:
            changes["guidance_interval"] = tuple(changes["guidance_interval"])
        return replace(self.model.sampler, **changes)

    def check_request(self, prompts: list[str], duration: float | None,
                      negative_prompts: list[str] | None) -> float:
        """Validate prompts and duration; returns the duration in seconds to generate."""
        if not prompts:
            raise ValueError("prompts: expected at least one prompt, got none")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompts[{i}]: expected a non-empty text prompt, got {p!r}")
        if negative_prompts is not None and len(negative_prompts) != len(prompts):
            raise ValueError(f"negative_prompts: expected {len(prompts)} (one per prompt), got {len(negative_prompts)}")
        duration = self.model.duration if duration is None else float(duration)
        if not duration > 0:
            raise ValueError(f"duration: expected a positive number of seconds, got {duration}")
        if duration > self.model.max_duration:
            raise ValueError(f"duration: {duration} s is longer than this model's maximum of "
                             f"{self.model.max_duration} s")
        return duration


def load_inference_state(model: DiffusionModel, state: dict[str, Tensor], source: str) -> None:
    """Load `net.*` and `representation.*` weights; any other difference is an error naming both sides."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(f"{source}: weights do not match the model built from its config: "
                             f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                             f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ModelLoadError(f"{source}: {key} has shape {tuple(value.shape)} in the weights but "
                                 f"{tuple(own[key].shape)} in the model built from its config")
    model.load_state_dict(state, strict=False)


def describe(output: GenerationOutput, prompt: str, index: int, model_id: str) -> dict[str, Any]:
    """The JSON sidecar of one generated clip."""
    s = output.settings
    return {"prompt": prompt, "seed": output.seeds[index], "sampler": s.name, "steps": s.steps,
            "guidance": s.guidance, "duration": output.duration, "sample_rate": output.sample_rate,
            "model": model_id, "sampler_settings": {**asdict(s), "guidance_interval": list(s.guidance_interval)}}
