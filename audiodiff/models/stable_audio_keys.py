"""Where each weight of a published Stable Audio Open checkpoint goes in audiodiff's modules.

Each table is a list of (pattern, replacement) rules applied to a reference key: the first rule whose pattern matches
the whole key renames it. A key that no rule matches, two keys that land on one name, or a weight-normed layer with
only one of its two halves are refused with the file and the key named. Weight norm (`weight_g`, `weight_v`) is
folded into the plain weight our inference modules hold: w = g · v / ‖v‖ over every dimension but the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

Rule = tuple[str, str | Callable[[re.Match[str]], str]]


class KeyMapError(ValueError):
    """A reference state dict that does not fit the key map (unknown, duplicated or half-present keys)."""


def _residual_unit(m: re.Match[str]) -> str:
    """diffusers' `<coder>.block.<i>.res_unit<n>.<layer>.<leaf>` → `<coder>.blocks.<i>.residuals.<n-1>.<ours>`."""
    part = {"snake1": "act1", "snake2": "act2", "conv1": "conv1", "conv2": "conv2"}[m.group(4)]
    leaf = f"log_{m.group(5)}" if m.group(5) in ("alpha", "beta") else m.group(5)
    return f"{m.group(1)}.blocks.{m.group(2)}.residuals.{int(m.group(3)) - 1}.{part}.{leaf}"


# diffusers' StableAudioDiTModel (transformer/diffusion_pytorch_model.safetensors) → StableAudioDiT.
DIFFUSERS_DIT: list[Rule] = [
    (r"time_proj\.weight", "time_embed.frequencies"),
    (r"timestep_proj\.([02])\.(weight|bias)", r"time_proj.\1.\2"),
    (r"global_proj\.([02])\.weight", r"global_proj.\1.weight"),
    (r"cross_attention_proj\.([02])\.weight", r"context_proj.\1.weight"),
    (r"preprocess_conv\.weight", "conv_in.weight"),
    (r"postprocess_conv\.weight", "conv_out.weight"),
    (r"proj_(in|out)\.weight", r"proj_\1.weight"),
    (r"transformer_blocks\.(\d+)\.norm([123])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"transformer_blocks\.(\d+)\.attn1\.to_([qkv])\.weight", r"blocks.\1.self_attn.\2.weight"),
    (r"transformer_blocks\.(\d+)\.attn1\.to_out\.0\.weight", r"blocks.\1.self_attn.out.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_([qkv])\.weight", r"blocks.\1.cross_attn.\2.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_out\.0\.weight", r"blocks.\1.cross_attn.out.weight"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.(weight|bias)", r"blocks.\1.ff.proj_in.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.2\.(weight|bias)", r"blocks.\1.ff.proj_out.\2"),
]

# diffusers' AutoencoderOobleck (vae/diffusion_pytorch_model.safetensors, weight norm folded) → Oobleck.
DIFFUSERS_VAE: list[Rule] = [
    (r"(encoder|decoder)\.conv1\.(weight|bias)", r"\1.conv_in.\2"),
    (r"(encoder|decoder)\.conv2\.(weight|bias)", r"\1.conv_out.\2"),
    (r"(encoder|decoder)\.snake1\.(alpha|beta)", r"\1.act_out.log_\2"),
    (r"(encoder|decoder)\.block\.(\d+)\.res_unit([123])\.(snake1|snake2)\.(alpha|beta)", _residual_unit),
    (r"(encoder|decoder)\.block\.(\d+)\.res_unit([123])\.(conv1|conv2)\.(weight|bias)", _residual_unit),
    (r"(encoder|decoder)\.block\.(\d+)\.snake1\.(alpha|beta)", r"\1.blocks.\2.act.log_\3"),
    (r"encoder\.block\.(\d+)\.conv1\.(weight|bias)", r"encoder.blocks.\1.down.\2"),
    (r"decoder\.block\.(\d+)\.conv_t1\.(weight|bias)", r"decoder.blocks.\1.up.\2"),
]

# diffusers' StableAudioProjectionModel (projection_model/diffusion_pytorch_model.safetensors) →
# StableAudioConditioning.
DIFFUSERS_PROJECTION: list[Rule] = [
    (r"text_projection\.(weight|bias)", r"text_projection.\1"),
    (r"start_number_conditioner\.time_positional_embedding\.0\.weights", "seconds_start.frequencies"),
    (r"start_number_conditioner\.time_positional_embedding\.1\.(weight|bias)", r"seconds_start.proj.\1"),
    (r"end_number_conditioner\.time_positional_embedding\.0\.weights", "seconds_total.frequencies"),
    (r"end_number_conditioner\.time_positional_embedding\.1\.(weight|bias)", r"seconds_total.proj.\1"),
]


def fold_weight_norm(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Every `X.weight_g` / `X.weight_v` pair replaced by `X.weight` = g · v / ‖v‖ (norm over all dimensions but
    the first, as `torch.nn.utils.weight_norm(dim=0)`); other keys unchanged."""
    out = {k: v for k, v in state.items() if not k.endswith((".weight_g", ".weight_v"))}
    stems = {k[: -len(".weight_g")] for k in state if k.endswith((".weight_g", ".weight_v"))}
    for stem in sorted(stems):
        g, v = state.get(stem + ".weight_g"), state.get(stem + ".weight_v")
        if g is None or v is None:
            half = "weight_g" if g is None else "weight_v"
            raise KeyMapError(f"{source}: {stem}.{half} is missing (a weight-normed layer needs weight_g and "
                              f"weight_v)")
        if stem + ".weight" in state:
            raise KeyMapError(f"{source}: {stem} has both a plain weight and weight_g / weight_v")
        out[stem + ".weight"] = torch._weight_norm(v.float(), g.float(), 0).to(v.dtype)
    return out


def rename(state: Mapping[str, Tensor], rules: list[Rule], source: str, prefix: str = "") -> dict[str, Tensor]:
    """`state` with every key renamed by the first rule matching it in full, then prefixed with `prefix`.
    KeyMapError names `source` and the key for a key no rule matches or two keys landing on one name."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match:
                new = prefix + (replacement(match) if callable(replacement) else match.expand(replacement))
                break
        else:
            raise KeyMapError(f"{source}: unexpected key {key!r} (shape {tuple(value.shape)}): no audiodiff weight "
                              f"corresponds to it")
        if new in out:
            raise KeyMapError(f"{source}: keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new], origin[new] = value, key
    return out


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str,
                origin: Callable[[str], str] | None = None) -> None:
    """Refuse a converted state that lacks or adds keys, or whose shapes differ from the model built from the
    configuration: KeyMapError naming the file, the key and expected vs got. `origin(key)` names the reference key
    a converted key came from, for the messages."""
    name = origin or (lambda k: k)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise KeyMapError(f"{source}: missing weight(s) {missing[:5]}{'…' if len(missing) > 5 else ''} "
                          f"({len(missing)} in all; expected by the model its config describes)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise KeyMapError(f"{source}: unexpected weight(s) {[name(k) for k in extra[:5]]}"
                          f"{'…' if len(extra) > 5 else ''} ({len(extra)} in all)")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise KeyMapError(f"{source}: {name(key)} has shape {tuple(value.shape)}, but its config implies "
                              f"{tuple(expected[key].shape)}")
