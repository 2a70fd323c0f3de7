"""Build an autoencoder from its configuration and read an autoencoder export folder (inference only, no training code).

An export folder (written by :func:`audiodiff.training.autoencoder.run.export_autoencoder`) holds `model.safetensors`
(inference weights: weight norm folded in, the mel VAE's log-mel statistics included), `config.yaml` with
`autoencoder:` (constructor arguments and `_target_`) and `export.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file

from audiodiff.autoencoders.base import VariationalAutoencoder
from audiodiff.autoencoders.mel_vae import MEL_VAE_TARGET, MelVAE
from audiodiff.autoencoders.waveform_vae import WAVEFORM_VAE_TARGET, WaveformVAE

AUTOENCODERS: dict[str, type[VariationalAutoencoder]] = {MEL_VAE_TARGET: MelVAE, WAVEFORM_VAE_TARGET: WaveformVAE}
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def build_autoencoder(node: Mapping[str, Any], inference: bool = True) -> VariationalAutoencoder:
    """The autoencoder a configuration node describes (`_target_` one of AUTOENCODERS, the rest its constructor
    arguments), untrained; with `inference` in inference form (weight norm folded, eval mode, frozen). Only the known
    classes are built, so a config file cannot make this import anything else."""
    target = node.get("_target_")
    if target not in AUTOENCODERS:
        raise ValueError(f"autoencoder: _target_ must be one of {sorted(AUTOENCODERS)}, got {target!r}")
    model = AUTOENCODERS[target](**{k: v for k, v in node.items() if k != "_target_"})
    if inference:
        model.remove_weight_norm().eval().requires_grad_(False)
    return model


def read_export_config(folder: str | Path) -> dict[str, Any]:
    """The `autoencoder:` node of an export folder's config.yaml."""
    config_file = Path(folder) / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"autoencoder export: {config_file} not found (expected a folder written by the "
                                "autoencoder stage, with config.yaml and model.safetensors)")
    config = yaml.safe_load(config_file.read_text())
    node = config.get("autoencoder") if isinstance(config, dict) else None
    if not isinstance(node, dict) or node.get("_target_") not in AUTOENCODERS:
        raise ValueError(f"autoencoder export: {config_file} must hold `autoencoder:` with _target_ one of "
                         f"{sorted(AUTOENCODERS)}, got {node.get('_target_') if isinstance(node, dict) else node!r}")
    return node


def load_autoencoder(folder: str | Path) -> VariationalAutoencoder:
    """The trained autoencoder exported to `folder`, in inference form (weight norm folded, eval mode, frozen, on
    the CPU). Raises when the weights do not fit the configuration, naming both files."""
    folder = Path(folder)
    node = read_export_config(folder)
    weights_file = folder / WEIGHTS
    if not weights_file.is_file():
        raise FileNotFoundError(f"autoencoder export: {weights_file} not found")
    model = build_autoencoder(node)
    try:
        model.load_state_dict(load_file(str(weights_file)), strict=True)
    except RuntimeError as error:
        raise ValueError(f"autoencoder export: {weights_file} does not fit {folder / CONFIG}: {error}") from error
    if not model.is_fitted:
        raise ValueError(f"autoencoder export: {weights_file} holds unfitted input statistics (a {model.kind} whose "
                         "log-mel statistics were never set): re-export it from a trained stage")
    return model
