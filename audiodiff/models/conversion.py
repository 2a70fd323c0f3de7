"""The mechanism every published-model converter shares (Stable Audio Open, Stable Audio 3): reading and checking a
diffusers folder's configurations and weight files, renaming weights by key tables with missing / extra / shape
reporting, collecting the text encoder's folder, and writing the export folder atomically. A family supplies only
what is its own: its configuration keys and classes, its key tables and how its settings become an audiodiff model
config (`audiodiff.models.stable_audio_convert`, `audiodiff.models.stable_audio3_convert`; the command and folder
detection over both: `audiodiff.models.published`).

Weights are read with safetensors (or `torch.load(weights_only=True)`, which never runs code from the file). Every
config key must be one the converter knows, every reference weight must land on exactly one of ours and shapes must
match the configuration: anything else is refused naming the file, the key and expected vs got, before OUT is
touched; OUT is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from audiodiff.models.export_format import TEXT_ENCODER_DIR, write_export
from audiodiff.models.registry import build_component
from audiodiff.models.stable_audio_keys import Rule, check_state, fold_weight_norm, rename
from audiodiff.utils.files import atomic_folder

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# Keys diffusers writes into every config.json besides the constructor arguments.
BOOKKEEPING = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}

Converted = tuple[dict[str, Any], dict[str, Tensor], dict[str, Path], dict[str, Any]]
"""(model config, state dict, the text encoder folder's files by name, provenance card)."""


class ConversionError(ValueError):
    """A source folder that is not a published checkpoint this converter can take, with the reason."""


@dataclass(frozen=True)
class WeightPart:
    """One diffusers component's weights: its folder, key table, the prefix of our keys, and whether its
    weight-normed layers are folded first."""

    folder: str
    rules: list[Rule]
    prefix: str
    fold: bool = False


def read_config(path: Path, part: str, keys: set[str], expected_class: str) -> dict[str, Any]:
    """A diffusers component's config.json, checked: the class it names and no key outside `keys` (the
    constructor arguments); ConversionError naming the file and the key. Returns it without bookkeeping keys."""
    if not path.is_file():
        raise ConversionError(f"{path}: missing (the {part} configuration)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("_class_name", expected_class) != expected_class:
        raise ConversionError(f"{path}: _class_name is {config['_class_name']!r}, expected {expected_class!r}")
    unknown = sorted(set(config) - keys - BOOKKEEPING)
    if unknown:
        raise ConversionError(f"{path}: unknown key {unknown[0]!r}{f' (and {unknown[1:]})' if unknown[1:] else ''}; "
                              f"expected keys among {sorted(keys)}")
    return {k: v for k, v in config.items() if k not in BOOKKEEPING}


def read_weights(folder: Path, names: Iterable[str] = WEIGHT_FILES) -> tuple[dict[str, Tensor], Path]:
    """(state dict, file) of the first weight file of `names` in `folder`; safetensors, or a torch file read with
    weights_only=True (tensors only, never code)."""
    for name in names:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                return load_file(str(path)), path
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # an unpickling refusal or a corrupt file
                raise ConversionError(f"{path}: cannot be read as plain tensors ({err})") from err
            if not isinstance(state, dict):
                raise ConversionError(f"{path}: expected a state dict, got {type(state).__name__}")
            return state, path
    raise ConversionError(f"{folder}: no weights (expected one of {list(names)})")


def require(config: Mapping[str, Any], keys: Iterable[str], path: Path) -> None:
    """ConversionError naming `path` and the first of `keys` that `config` lacks."""
    for key in keys:
        if key not in config:
            raise ConversionError(f"{path}: key {key!r} is missing")


def diffusers_state(src: Path, parts: Sequence[WeightPart]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(our state dict, our key → 'file: reference key') from the weight files of a diffusers folder's `parts`."""
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for part in parts:
        reference, path = read_weights(src / part.folder)
        if part.fold:
            reference = fold_weight_norm(reference, str(path))
        renamed = rename(reference, part.rules, str(path), part.prefix)
        back = {new: old for new, old in zip(renamed, reference, strict=True)}
        state.update(renamed)
        origin.update({k: f"{path}: {back[k]}" for k in renamed})
    return state, origin


def expected_state(config: Mapping[str, Any]) -> dict[str, Tensor]:
    """The weights (shapes only: built on the meta device) that the model `config` describes needs in its export:
    net.*, representation.* and timing.*; the text encoder travels as its own folder."""
    with torch.device("meta"):
        rep = build_component(config["representation"], "representation", "representation")
        timing = build_component(config["timing"], "timing", "timing")
        denoiser = {k: v for k, v in config["denoiser"].items() if k != "pooled_text"}
        net = build_component(denoiser, "denoiser", "denoiser", in_channels=rep.latent_channels,
                              context_dim=timing.token_dim, global_dim=timing.dim)
    parts = {"net.": net, "representation.": rep, "timing.": timing}
    return {prefix + k: v for prefix, module in parts.items() for k, v in module.state_dict().items()}


def check_converted(state: Mapping[str, Tensor], config: Mapping[str, Any], src: Path,
                    origin: Mapping[str, str]) -> None:
    """Refuse a converted state with missing or extra weights or wrong shapes (KeyMapError naming the file and key,
    expected vs got) against the model its config describes."""
    check_state(state, expected_state(config), str(src), lambda k: origin.get(k, k))


def text_encoder_files(folders: Sequence[Path], width: Callable[[Path], int], text_dim: int | None,
                       what: str) -> dict[str, Path]:
    """The files of the text encoder folder an export carries (model config, weights and tokenizer) gathered from
    `folders`, checked: a config.json whose width (`width(path)`) is `text_dim` when given, and a tokenizer.
    what: names the encoder in errors ("T5", "T5Gemma")."""
    files: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ConversionError(f"{folder}: no such folder (the {what} text encoder)")
        for path in sorted(folder.iterdir()):
            if path.is_file():
                if path.name in files:
                    raise ConversionError(f"{path}: {path.name} is also in {files[path.name].parent}")
                files[path.name] = path
    config_path = files.get("config.json")
    if config_path is None:
        raise ConversionError(f"{folders[0]}: no config.json (expected a transformers {what} encoder folder)")
    got = width(config_path)
    if text_dim is not None and got != text_dim:
        raise ConversionError(f"{config_path}: the {what} encoder's width is {got}, but the model expects "
                              f"{text_dim}")
    if "tokenizer_config.json" not in files:
        raise ConversionError(f"{folders[-1]}: no tokenizer_config.json (the {what} tokenizer)")
    return files


def write_converted(out: str | Path, converted: Converted) -> Path:
    """Write the export folder `out` (config.yaml, model.safetensors, the card and the text encoder's folder) from a
    family's `converted` result; OUT appears complete, text encoder included, or not at all."""
    config, state, encoder_files, card = converted
    out = Path(out)
    with atomic_folder(out) as tmp:
        write_export(tmp, state, config, card)  # (writes a complete folder and renames it onto tmp)
        (tmp / TEXT_ENCODER_DIR).mkdir()
        for name, path in encoder_files.items():
            shutil.copy2(path, tmp / TEXT_ENCODER_DIR / name)
    return out


def pipeline_class(path: Path) -> str | None:
    """The `_class_name` of a diffusers folder's model_index.json (None when there is none or it is unreadable)."""
    index = path / "model_index.json"
    if not index.is_file():
        return None
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError, OSError):
        return None
    return name if isinstance(name, str) else None
