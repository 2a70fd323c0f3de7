"""Trainable vocoders and their export folders.

The vocoder stage trains any generator listed in :data:`TRAINABLE` (HiFi-GAN, Vocos). Each one takes the
representation's linear-magnitude mel ``[B, n_mels, F]`` and returns ``[B, F * hop_length]`` samples, computes its
own input with ``.mel``, and describes itself with ``export_config()`` (constructor arguments and ``_target_``).
An export folder holds ``config.yaml`` (``vocoder:`` that description) and ``model.safetensors`` (inference-form
weights); :func:`from_export` reads it back whichever generator it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file
from torch import nn

from audiodiff.vocoders.hifigan import HiFiGAN
from audiodiff.vocoders.vocos import Vocos

# `_target_` of a generator's config → its class.
TRAINABLE: dict[str, type[nn.Module]] = {
    "audiodiff.vocoders.hifigan.HiFiGAN": HiFiGAN,
    "audiodiff.vocoders.vocos.Vocos": Vocos,
}
FROM_EXPORT_TARGET = "audiodiff.vocoders.trained.from_export"
# Older configurations name the HiFi-GAN loader; it reads the same folders.
FROM_EXPORT_TARGETS = (FROM_EXPORT_TARGET, "audiodiff.vocoders.hifigan.HiFiGAN.from_export")


def generator_class(target: str, where: str) -> type[nn.Module]:
    """The trainable vocoder class named by `target` (a config's `_target_`); `where` names the config in errors."""
    if target not in TRAINABLE:
        raise ValueError(f"{where}: vocoder _target_ {target!r} is not a trainable vocoder; expected one of "
                         f"{sorted(TRAINABLE)}")
    return TRAINABLE[target]


def export_arguments(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(`_target_`, constructor arguments) of the generator recorded in a vocoder export's `config.yaml`."""
    config_file = Path(folder) / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found (expected a vocoder export folder)")
    config = yaml.safe_load(config_file.read_text())
    node = config.get("vocoder") if isinstance(config, dict) else None
    if not isinstance(node, dict) or "_target_" not in node:
        raise ValueError(f"{config_file}: expected a `vocoder:` node with a _target_, got {node!r}")
    generator_class(node["_target_"], str(config_file))
    return node["_target_"], {k: v for k, v in node.items() if k != "_target_"}


def inference_config(folder: str | Path) -> dict[str, Any]:
    """The `vocoder` node that rebuilds an exported generator's architecture in inference form, without its folder
    (the weights travel elsewhere, e.g. in a diffusion export): `{_target_: <class>.for_inference, ...}`."""
    target, arguments = export_arguments(folder)
    return {"_target_": f"{target}.for_inference", **arguments}


def from_export(folder: str | Path) -> nn.Module:
    """The generator a vocoder stage exported to `folder`, in inference form on the CPU. As a Hydra target:
    `{_target_: audiodiff.vocoders.trained.from_export, folder: ...}` (conf/vocoder/trained.yaml)."""
    target, arguments = export_arguments(folder)
    weights_file = Path(folder) / "model.safetensors"
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} not found (expected a vocoder export folder)")
    generator = TRAINABLE[target].for_inference(**arguments)
    try:
        generator.load_state_dict(load_file(str(weights_file)), strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_file} does not fit {Path(folder) / 'config.yaml'}: {error}") from error
    return generator
