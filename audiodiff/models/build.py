"""Instantiate a DiffusionModel from the model part of a configuration.

Sizes flow from the instantiated parts, never from repeated literals: the denoiser's input channels are the
representation's `latent_channels`, its context width is the text encoder's `dim`.
"""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiodiff.models.model import DiffusionModel, SamplerSettings
from audiodiff.models.registry import build_component, resolve_component

MODEL_KEYS = ("representation", "vocoder", "denoiser", "diffusion", "text_encoder", "sampler", "duration")
OPTIONAL_MODEL_KEYS = ("timing",)


def model_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved model-defining part of a run configuration (what an export's config.yaml holds)."""
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    missing = [k for k in MODEL_KEYS if k not in container]
    if missing:
        raise KeyError(f"model configuration lacks {missing}; expected keys {list(MODEL_KEYS)}")
    optional = {k: container[k] for k in OPTIONAL_MODEL_KEYS if container.get(k) is not None}
    return {**{k: container[k] for k in MODEL_KEYS}, **optional}


def _build_timing(node: dict[str, Any], text_dim: int) -> Any:
    """The timing part; one that also projects the text states (Stable Audio's, a `text_dim` argument) is given
    the text encoder's width unless the node states it."""
    builder = resolve_component(node.get("_target_"), "timing", "timing")
    takes_text = "text_dim" in inspect.signature(builder).parameters
    extra = {"text_dim": text_dim} if takes_text and node.get("text_dim") is None else {}
    return build_component({k: v for k, v in node.items() if not (k == "text_dim" and v is None)}, "timing", "timing",
                           **extra)


def build_model(cfg: DictConfig | dict[str, Any]) -> DiffusionModel:
    """DiffusionModel from a config holding MODEL_KEYS (a full run config or an export's config.yaml).

    Every part is built through the component registry (`audiodiff.models.registry`): a config naming any other
    `_target_` is refused before anything is imported, so loading a downloaded model folder cannot run its code."""
    mcfg = model_config(cfg)
    vocoder = build_component(mcfg["vocoder"], "vocoder", "vocoder") if mcfg.get("vocoder") is not None else None
    representation = build_component(mcfg["representation"], "representation", "representation", vocoder=vocoder)
    text_encoder = build_component(mcfg["text_encoder"], "text_encoder", "text_encoder")
    timing = _build_timing(mcfg["timing"], text_encoder.dim) if "timing" in mcfg else None
    denoiser = dict(mcfg["denoiser"])
    # `pooled_text`: also add the pooled caption embedding to the timestep embedding (beside cross-attention).
    pooled = denoiser.pop("pooled_text", True)
    # A timing part that adds cross-attention tokens of its own (Stable Audio's) states their width.
    context_dim = getattr(timing, "token_dim", None) or text_encoder.dim
    net = build_component(denoiser, "denoiser", "denoiser", in_channels=representation.latent_channels,
                          context_dim=context_dim, pooled_dim=text_encoder.dim if pooled else None,
                          global_dim=timing.dim if timing is not None else None)
    objective = build_component(mcfg["diffusion"], "diffusion", "diffusion")
    sampler = SamplerSettings(**mcfg["sampler"])
    return DiffusionModel(representation, net, text_encoder, objective, sampler, duration=float(mcfg["duration"]),
                          timing=timing)
