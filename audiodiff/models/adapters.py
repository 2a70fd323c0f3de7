"""LoRA adapters of a denoiser: which modules they target, the adapter file, and applying or merging adapters.

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models": a target module's weight W [d_out, d_in]
gets a trainable update (alpha / r) · B A with A [r, d_in] and B [d_out, r] (B starts at zero, so training starts
from the base model exactly); a Conv1d with kernel k counts d_in = C_in · k. The layers themselves are peft's
(`peft.inject_adapter_in_model`), so an adapter holds Σ r · (d_in + d_out) parameters over its target modules.

Targets are chosen by module type and name, never by a list written for one network, so that they apply to every
denoiser audiodiff builds or converts (:data:`TARGET_KINDS`): ``attention`` (self-attention projections),
``cross_attention`` (projections of the attention to the text tokens), ``feedforward`` (the transformer MLPs) and
``conv`` (every Conv1d). Any other entry of a target list is a regular expression a module's dotted name must match
in full, and must match at least one Linear or Conv1d.

The adapter file is one safetensors file: the adapter weights alone (peft's names, e.g. ``blocks.0.qkv.lora_A.weight``)
and, in its metadata, JSON holding the LoRA settings, the resolved target modules, the denoiser it was trained for
and the content hash of that base denoiser's weights (:func:`weights_hash`). An adapter trained with the text encoder
(`finetune.train_text_encoder`) also holds LoRA weights of the text encoder's attention projections, named
``text_encoder.<module of the transformers model>.lora_A.weight``, and lists those modules as `text_modules`. Reading
it runs no code: safetensors tensors and JSON only.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from audiodiff import __version__
from audiodiff.utils.files import atomic_path
from audiodiff.utils.hashing import tensors_sha256

ADAPTER_FORMAT = "audiodiff-lora-1"
ADAPTER_FILE = "adapter.safetensors"
TEXT_PREFIX = "text_encoder."  # adapter tensors of the text encoder's transformers model
TargetKind = Literal["attention", "cross_attention", "feedforward", "conv"]
TARGET_KINDS: tuple[str, ...] = ("attention", "cross_attention", "feedforward", "conv")
DEFAULT_TARGETS: tuple[str, ...] = TARGET_KINDS
_ATTENTION_PARTS = frozenset({"qkv", "q", "k", "v", "kv", "to_q", "to_k", "to_v", "to_qkv", "to_kv", "to_out",
                              "attn_out", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj", "proj"})
_FEEDFORWARD_PARTS = frozenset({"mlp", "ff", "ffn", "feed_forward", "feedforward", "ffw"})
_CONDITIONING_WORDS = ("emb", "time", "ada", "cond")  # MLPs of the timestep / conditioning path are not feed-forwards
_LORA_PARTS = ("lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


class AdapterError(ValueError):
    """An adapter that cannot be trained, read or applied: bad settings, targets, file, or another base model."""


@dataclass(frozen=True)
class LoraSettings:
    """How a LoRA adapter is made.

    Attributes:
        rank: r, the rank of every update (at most min(d_in, d_out) of each target).
        alpha: the update is scaled by alpha / rank.
        dropout: dropout on the adapter's input during training.
        targets: kinds (:data:`TARGET_KINDS`) and/or full-match regular expressions of module names.
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise AdapterError(f"finetune.rank: expected a whole number >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise AdapterError(f"finetune.alpha: expected a number > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"finetune.dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            raise AdapterError(f"finetune.targets: expected a non-empty list of kinds {list(TARGET_KINDS)} or "
                               f"module-name patterns, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter as stored: `state` holds peft's adapter tensors (names without an adapter name).

    Attributes:
        state: ``<module>.lora_A.weight`` [r, d_in] (Conv1d: [r, C_in, k]) and ``<module>.lora_B.weight``
            [d_out, r] (Conv1d: [d_out, r, 1]) for every target module.
        settings: the LoRA settings it was trained with.
        modules: the dotted names of the target modules, resolved on the base denoiser.
        base_hash: :func:`weights_hash` of the base denoiser it was trained on.
        denoiser: the base denoiser's `_target_` (for messages).
        info: provenance (recipe, steps, ...), free-form.
        text_modules: target modules of the text encoder's transformers model (their tensors are named with
            :data:`TEXT_PREFIX`); empty when the text encoder did not train.
    """

    state: dict[str, Tensor]
    settings: LoraSettings
    modules: tuple[str, ...]
    base_hash: str
    denoiser: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    text_modules: tuple[str, ...] = ()

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.state.values())

    def denoiser_part(self) -> Adapter:
        """The adapter of the denoiser alone (the text encoder's tensors left out)."""
        state = {k: v for k, v in self.state.items() if not k.startswith(TEXT_PREFIX)}
        return Adapter(state, self.settings, self.modules, self.base_hash, self.denoiser, self.info)

    def text_part(self) -> Adapter | None:
        """The adapter of the text encoder's transformers model (names without :data:`TEXT_PREFIX`), or None."""
        if not self.text_modules:
            return None
        state = {k[len(TEXT_PREFIX):]: v for k, v in self.state.items() if k.startswith(TEXT_PREFIX)}
        return Adapter(state, self.settings, self.text_modules, self.base_hash, "the text encoder", self.info)


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv1d)


def module_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a Linear, or of a Conv1d (d_in = C_in · kernel / groups)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Conv1d):
        return module.in_channels * module.kernel_size[0] // module.groups, module.out_channels
    raise TypeError(f"LoRA targets Linear and Conv1d modules, got {type(module).__name__}")


def module_kind(name: str, module: nn.Module) -> str | None:
    """The target kind of the module called `name` (dotted), or None when it belongs to none."""
    if _is_conv(module):
        return "conv"
    if not isinstance(module, nn.Linear):
        return None
    parts = name.lower().split(".")
    if any("cross" in part for part in parts):
        return "cross_attention"
    if any(word in part for part in parts for word in _CONDITIONING_WORDS):
        return None
    if any("attn" in part or "attention" in part for part in parts[:-1]) or parts[-1] in _ATTENTION_PARTS - {"proj"} \
            or parts[-1].startswith("attn"):
        return "attention"
    if any(part in _FEEDFORWARD_PARTS for part in parts[:-1]):
        return "feedforward"
    return None


def _base_modules(net: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv1d modules of `net` by dotted name, with any LoRA wrapping seen through (the base layer)."""
    found: dict[str, nn.Module] = {}
    for name, module in net.named_modules():
        parts = name.split(".")
        if any(part in _LORA_PARTS for part in parts):
            continue
        if parts[-1] == "base_layer":
            name = ".".join(parts[:-1])
        if isinstance(module, nn.Linear | nn.Conv1d):
            found[name] = module
    return found


def target_modules(net: nn.Module, settings: LoraSettings) -> list[str]:
    """The dotted names of the modules of `net` the settings target, in module order.

    Raises:
        AdapterError: a pattern that matches no Linear or Conv1d module (naming some that exist), no module at all
            targeted, or a rank larger than a target's dimensions (naming the module and its dimensions).
    """
    modules = _base_modules(net)
    chosen: set[str] = set()
    for target in settings.targets:
        if target in TARGET_KINDS:
            chosen |= {name for name, module in modules.items() if module_kind(name, module) == target}
            continue
        try:
            pattern = re.compile(target)
        except re.error as err:
            raise AdapterError(f"finetune.targets: {target!r} is neither a kind {list(TARGET_KINDS)} nor a regular "
                               f"expression ({err})") from err
        matched = {name for name in modules if pattern.fullmatch(name)}
        if not matched:
            examples = ", ".join(list(modules)[:8])
            raise AdapterError(f"finetune.targets: {target!r} matches no Linear or Conv1d module of this "
                               f"{type(net).__name__} (kinds are {list(TARGET_KINDS)}; a pattern must match a whole "
                               f"dotted name, such as {examples})")
        chosen |= matched
    if not chosen:
        raise AdapterError(f"finetune.targets: {list(settings.targets)} select no module of this {type(net).__name__}")
    names = [name for name in modules if name in chosen]
    for name in names:
        d_in, d_out = module_dims(modules[name])
        if settings.rank > min(d_in, d_out):
            raise AdapterError(f"finetune.rank={settings.rank} is larger than module {name!r} allows: it maps "
                               f"{d_in} → {d_out} dimensions, so its rank is at most {min(d_in, d_out)}; lower the "
                               f"rank or leave the module out of finetune.targets")
    return names


def lora_parameter_count(net: nn.Module, modules: Sequence[str], rank: int) -> int:
    """Σ r · (d_in + d_out) over `modules` of `net`: the parameters of a rank-`rank` adapter."""
    found = _base_modules(net)
    return sum(rank * sum(module_dims(found[name])) for name in modules)


def add_lora(net: nn.Module, settings: LoraSettings, modules: Sequence[str], name: str = "default") -> None:
    """Wrap `modules` of `net` (in place) in peft LoRA layers of adapter `name`, made trainable; every other
    parameter is frozen. The new B matrices are zero, so the network computes what it did before."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=_exact(modules))
    with warnings.catch_warnings():  # a second adapter on one network is what we mean
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, net, adapter_name=name)


def _exact(modules: Sequence[str]) -> str:
    """A peft `target_modules` regex matching exactly these dotted names."""
    return "^(" + "|".join(re.escape(m) for m in modules) + ")$"


def _tuner_layers(net: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [module for module in net.modules() if isinstance(module, LoraLayer)]


def adapter_names(net: nn.Module) -> list[str]:
    """The LoRA adapters `net` holds, in the order they were added."""
    names: dict[str, None] = {}
    for layer in _tuner_layers(net):
        names.update(dict.fromkeys(layer.lora_A.keys()))
    return list(names)


def adapter_state(net: nn.Module, name: str = "default") -> dict[str, Tensor]:
    """Adapter `name`'s tensors of `net`, under the names the adapter file stores."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(net, adapter_name=name).items()}


def base_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of a network holding LoRA layers, as the plain network's: LoRA tensors left out, the wrapped
    layers' ``base_layer`` names unwrapped (the base weights as they are, nothing merged)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if any(part in _LORA_PARTS for part in parts):
            continue
        out[".".join(p for p in parts if p != "base_layer")] = value
    return out


def weights_hash(state: Mapping[str, Tensor]) -> str:
    """Content hash (SHA-256 hex) of a denoiser's weights, plain names (:func:`base_state` of a LoRA-wrapped one):
    what an adapter records of the base model it was trained on."""
    return tensors_sha256(base_state(state))


def merged_state(net: nn.Module) -> dict[str, Tensor]:
    """The plain network's state with every active adapter merged in: W + Σ_adapters strength · (alpha / r) · B A
    (peft's `get_delta_weight`, which includes the scaling a strength sets)."""
    from peft.tuners.lora import LoraLayer

    state = {k: v.detach().clone() for k, v in base_state(net.state_dict()).items()}
    with torch.no_grad():
        for prefix, module in net.named_modules():
            if isinstance(module, LoraLayer):
                weight = f"{prefix}.weight"
                for name in module.active_adapters:
                    if name in module.lora_A:
                        state[weight] = state[weight] + module.get_delta_weight(name).to(state[weight].dtype)
    return state


def apply_adapter(net: nn.Module, adapter: Adapter, name: str, strength: float = 1.0) -> None:
    """Add `adapter` to `net` as adapter `name` at `strength` (its update scaled by strength · alpha / r), active
    together with the adapters already there.

    Raises:
        AdapterError: a target module `net` does not have, or adapter tensors that do not fit it.
    """
    from peft import set_peft_model_state_dict

    modules = _base_modules(net)
    missing = [m for m in adapter.modules if m not in modules]
    if missing:
        raise AdapterError(f"the adapter targets modules this {type(net).__name__} does not have ({missing[:3]}); it "
                           f"was trained for the denoiser {adapter.denoiser or 'of another model'}")
    for module in adapter.modules:
        d_in, d_out = module_dims(modules[module])
        a, b = adapter.state.get(f"{module}.lora_A.weight"), adapter.state.get(f"{module}.lora_B.weight")
        if a is None or b is None or a[0].numel() != d_in or b.shape[0] != d_out:
            raise AdapterError(f"the adapter's weights for {module!r} do not fit this model's {d_in} → {d_out} "
                               f"module; it was trained for another model")
    add_lora(net, adapter.settings, adapter.modules, name)
    result = set_peft_model_state_dict(net, adapter.state, adapter_name=name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise AdapterError(f"the adapter holds tensors this model has no place for: {unexpected[:3]}")
    active = adapter_names(net)
    for layer in _tuner_layers(net):
        layer.set_adapter([n for n in active if n in layer.lora_A])
    set_adapter_strength(net, name, strength)
    net.requires_grad_(False)


def set_adapter_strength(net: nn.Module, name: str, strength: float) -> None:
    """Scale adapter `name`'s update in `net` by `strength` · alpha / r (peft's `set_scale`)."""
    for layer in _tuner_layers(net):
        if name in layer.lora_A:
            layer.set_scale(name, strength)


def save_adapter(path: str | Path, adapter: Adapter) -> Path:
    """Write `adapter` as one safetensors file (atomically): its tensors, and its settings as JSON metadata."""
    meta = {"format": ADAPTER_FORMAT, "audiodiff_version": __version__, "base_hash": adapter.base_hash,
            "denoiser": adapter.denoiser, "lora": asdict(adapter.settings), "modules": list(adapter.modules),
            "text_modules": list(adapter.text_modules), "info": adapter.info}
    with atomic_path(path) as temp:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state.items()}, str(temp),
                  metadata={"audiodiff_adapter": json.dumps(meta)})
    return Path(path)


def read_adapter(path: str | Path) -> Adapter:
    """An adapter file (or a folder holding `adapter.safetensors`), read as tensors and JSON only.

    Raises:
        AdapterError: a missing file, or one that is not an audiodiff LoRA adapter.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise AdapterError(f"{path}: no such adapter file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("audiodiff_adapter", "null"))
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # not safetensors, or bad JSON
        raise AdapterError(f"{path}: not a safetensors adapter file ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{path}: not an audiodiff LoRA adapter (no {ADAPTER_FORMAT!r} metadata)")
    try:
        lora = meta["lora"]
        settings = LoraSettings(rank=int(lora["rank"]), alpha=float(lora["alpha"]), dropout=float(lora["dropout"]),
                                targets=tuple(lora["targets"]))
        return Adapter(state, settings, tuple(meta["modules"]), str(meta["base_hash"]), str(meta.get("denoiser", "")),
                       dict(meta.get("info") or {}), tuple(meta.get("text_modules") or ()))
    except (KeyError, TypeError, ValueError) as err:
        raise AdapterError(f"{path}: malformed adapter metadata ({err})") from err
