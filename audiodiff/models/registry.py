"""The components a model configuration may name, and the one builder that turns a configuration node into them.

A model folder's `config.yaml` (or a checkpoint's stored config) is data a user may have downloaded. Hydra's
`instantiate` would import and call whatever `_target_` it names, so a shared folder could run any importable
function on load. :func:`build_component` resolves `_target_` only through :data:`COMPONENTS`, audiodiff's own
model parts, and refuses anything else before importing a module. Code that brings its own component registers it
with :func:`register_component`; a configuration file can never add to the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

# `_target_` → the kind of part it builds. The keys are the dotted paths Hydra configs and exports name.
COMPONENTS: dict[str, str] = {
    "audiodiff.representations.mel.MelRepresentation": "representation",
    "audiodiff.representations.codec.CodecRepresentation": "representation",
    "audiodiff.representations.autoencoder.from_export": "representation",
    "audiodiff.representations.autoencoder.from_config": "representation",
    "audiodiff.representations.oobleck.OobleckRepresentation": "representation",
    "audiodiff.representations.same.SAMERepresentation": "representation",
    "audiodiff.autoencoders.mel_vae.MelVAE": "autoencoder",
    "audiodiff.autoencoders.waveform_vae.WaveformVAE": "autoencoder",
    "audiodiff.vocoders.griffinlim.GriffinLimVocoder": "vocoder",
    "audiodiff.vocoders.hifigan.HiFiGAN": "vocoder",
    "audiodiff.vocoders.hifigan.HiFiGAN.for_inference": "vocoder",
    "audiodiff.vocoders.hifigan.HiFiGAN.from_speecht5": "vocoder",
    "audiodiff.vocoders.vocos.Vocos": "vocoder",
    "audiodiff.vocoders.vocos.Vocos.for_inference": "vocoder",
    "audiodiff.vocoders.trained.from_export": "vocoder",
    "audiodiff.denoisers.unet1d.UNet1d": "denoiser",
    "audiodiff.denoisers.dit.DiT1d": "denoiser",
    "audiodiff.denoisers.stable_audio_dit.StableAudioDiT": "denoiser",
    "audiodiff.denoisers.stable_audio3_dit.StableAudio3DiT": "denoiser",
    "audiodiff.diffusion.objectives.FlowMatching": "diffusion",
    "audiodiff.diffusion.objectives.VPDiffusion": "diffusion",
    "audiodiff.diffusion.objectives.EDM": "diffusion",
    "audiodiff.diffusion.objectives.VDiffusion": "diffusion",
    "audiodiff.conditioning.text.TextEncoder": "text_encoder",
    "audiodiff.conditioning.timing.TimingConditioning": "timing",
    "audiodiff.conditioning.stable_audio.StableAudioConditioning": "timing",
    "audiodiff.conditioning.stable_audio3.StableAudio3Conditioning": "timing",
}
# Names older exports carry → the component that now builds them.
ALIASES: dict[str, str] = {
    "audiodiff.vocoders.hifigan.HiFiGAN.from_export": "audiodiff.vocoders.trained.from_export",
}
# Components registered by code at run time: `_target_` → (kind, callable).
_REGISTERED: dict[str, tuple[str, Callable[..., Any]]] = {}
# Hydra's instantiation keys that a model configuration may carry (and that are ignored here).
_IGNORED_KEYS = frozenset({"_recursive_", "_convert_"})


class UnknownComponentError(ValueError):
    """A configuration names a `_target_` that is not one of audiodiff's registered components."""


def register_component(target: str, kind: str, builder: Callable[..., Any]) -> None:
    """Let configurations name `target` (a `_target_` string) to build a `kind` part with `builder`.

    For code that brings its own denoiser, vocoder, ...: call it before composing or loading the config."""
    if target in COMPONENTS or target in ALIASES:
        raise ValueError(f"component {target!r} is built in already")
    _REGISTERED[target] = (kind, builder)


def component_kind(target: str) -> str | None:
    """The kind of part `target` builds, or None when it is not a registered component."""
    target = ALIASES.get(target, target)
    if target in _REGISTERED:
        return _REGISTERED[target][0]
    return COMPONENTS.get(target)


def resolve_component(target: Any, where: str, kind: str | None = None) -> Callable[..., Any]:
    """The callable a registered `_target_` names (imported only after the name is found in the registry).

    where: names the config node in errors (e.g. "model.safetensors' config.yaml: denoiser");
    kind: when given, the part must be of this kind (a denoiser node cannot build a vocoder).
    Raises UnknownComponentError naming the target and the registered choices."""
    found = component_kind(target) if isinstance(target, str) else None
    if found is None or (kind is not None and found != kind):
        choices = sorted(t for t in (*COMPONENTS, *_REGISTERED) if kind is None or component_kind(t) == kind)
        raise UnknownComponentError(
            f"{where}: _target_ {target!r} is not a registered audiodiff {kind or 'component'}; loading builds only "
            f"registered components, never other code (expected one of {choices}; code that brings its own "
            f"calls audiodiff.models.registry.register_component first)")
    target = ALIASES.get(target, target)
    if target in _REGISTERED:
        return _REGISTERED[target][1]
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then attributes
        module_name, attributes = ".".join(parts[:split]), parts[split:]
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for attribute in attributes:
            obj = getattr(obj, attribute)
        return obj
    raise UnknownComponentError(f"{where}: registered component {target!r} cannot be imported")


def build_component(node: Any, where: str, kind: str | None = None, **kwargs: Any) -> Any:
    """Build a configuration node as Hydra's `instantiate` would, resolving every `_target_` (nested ones too)
    through the registry only.

    node: a mapping with `_target_` and constructor arguments (plain Python values: resolve OmegaConf nodes
    first), lists and scalars; nested mappings with `_target_` are built first (Hydra's recursive default) and
    passed as arguments. kwargs: further arguments for the top-level call. Raises UnknownComponentError for an
    unregistered target and ValueError for a Hydra key other than `_target_`, `_recursive_`, `_convert_`."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise ValueError(f"{where}: expected a node with a _target_, got {node!r}")
    builder = resolve_component(node["_target_"], where, kind)
    arguments = {}
    for key, value in node.items():
        if key == "_target_" or key in _IGNORED_KEYS:
            continue
        if key.startswith("_") and key.endswith("_"):
            raise ValueError(f"{where}: {key} is not supported in a model configuration (only _target_)")
        arguments[key] = _build_nested(value, f"{where}.{key}")
    return builder(**arguments, **kwargs)


def _build_nested(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            return build_component(value, where)
        return {k: _build_nested(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_build_nested(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
