"""Instantiate a DiffusionModel from the model part of a configuration.

Sizes flow from the instantiated parts, never from repeated literals: the denoiser's input channels are the
representation's `latent_channels`, its context width is the text encoder's `dim`.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from audiodiff.model import DiffusionModel, SamplerSettings

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


def build_model(cfg: DictConfig | dict[str, Any]) -> DiffusionModel:
    """DiffusionModel from a config holding MODEL_KEYS (a full run config or an export's config.yaml)."""
    mcfg = OmegaConf.create(model_config(cfg))
    vocoder = instantiate(mcfg.vocoder) if mcfg.get("vocoder") is not None else None  # vocoder=none
    representation = instantiate(mcfg.representation, vocoder=vocoder)
    text_encoder = instantiate(mcfg.text_encoder)
    timing = instantiate(mcfg.timing) if "timing" in mcfg else None
    denoiser = OmegaConf.to_container(mcfg.denoiser, resolve=True)
    # `pooled_text`: also add the pooled caption embedding to the timestep embedding (beside cross-attention).
    pooled = denoiser.pop("pooled_text", True)
    net = instantiate(denoiser, in_channels=representation.latent_channels, context_dim=text_encoder.dim,
                      pooled_dim=text_encoder.dim if pooled else None,
                      global_dim=timing.dim if timing is not None else None)
    objective = instantiate(mcfg.diffusion)
    sampler = SamplerSettings(**OmegaConf.to_container(mcfg.sampler, resolve=True))
    return DiffusionModel(representation, net, text_encoder, objective, sampler, duration=float(mcfg.duration),
                          timing=timing)
