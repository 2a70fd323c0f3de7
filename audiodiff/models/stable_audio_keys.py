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


def rename(state: Mapping[str, Tensor], rules: list[Rule], source: str, prefix: str = "",
           source_prefix: str = "") -> dict[str, Tensor]:
    """`state` with every key renamed by the first rule matching it in full, then prefixed with `prefix`.
    KeyMapError names `source` and the key (as the file spells it: `source_prefix` + key) for a key no rule
    matches or two keys landing on one name."""
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
            raise KeyMapError(f"{source}: unexpected key {source_prefix + key!r} (shape {tuple(value.shape)}): no "
                              f"audiodiff weight corresponds to it")
        if new in out:
            raise KeyMapError(f"{source}: keys {source_prefix + origin[new]!r} and {source_prefix + key!r} both map "
                              f"to {new!r}")
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


# stable-audio-tools' checkpoint (model.safetensors / model.ckpt beside model_config.json) holds the three parts under
# these prefixes; `stable_audio_tools_parts` brings each to diffusers' names (what diffusers' own conversion script
# does), so the tables above then apply.
SAT_PREFIXES = {"model.model.": "transformer", "pretransform.model.": "vae",
                "conditioner.conditioners.": "projection_model"}
_SAT_DIT = [
    (r"timestep_features\.weight", r"time_proj.weight"),
    (r"to_timestep_embed\.(\d)\.(weight|bias)", r"timestep_proj.\1.\2"),
    (r"to_global_embed\.(\d)\.weight", r"global_proj.\1.weight"),
    (r"to_cond_embed\.(\d)\.weight", r"cross_attention_proj.\1.weight"),
    (r"(pre|post)process_conv\.weight", r"\1process_conv.weight"),
    (r"transformer\.project_(in|out)\.weight", r"proj_\1.weight"),
    (r"transformer\.layers\.(\d+)\.pre_norm\.(gamma|beta)", r"transformer_blocks.\1.norm1.\2"),
    (r"transformer\.layers\.(\d+)\.cross_attend_norm\.(gamma|beta)", r"transformer_blocks.\1.norm2.\2"),
    (r"transformer\.layers\.(\d+)\.ff_norm\.(gamma|beta)", r"transformer_blocks.\1.norm3.\2"),
    (r"transformer\.layers\.(\d+)\.self_attn\.to_qkv\.weight", r"transformer_blocks.\1.attn1.to_qkv.weight"),
    (r"transformer\.layers\.(\d+)\.self_attn\.to_out\.weight", r"transformer_blocks.\1.attn1.to_out.0.weight"),
    (r"transformer\.layers\.(\d+)\.cross_attn\.to_q\.weight", r"transformer_blocks.\1.attn2.to_q.weight"),
    (r"transformer\.layers\.(\d+)\.cross_attn\.to_kv\.weight", r"transformer_blocks.\1.attn2.to_kv.weight"),
    (r"transformer\.layers\.(\d+)\.cross_attn\.to_out\.weight", r"transformer_blocks.\1.attn2.to_out.0.weight"),
    (r"transformer\.layers\.(\d+)\.ff\.ff\.0\.proj\.(weight|bias)", r"transformer_blocks.\1.ff.net.0.proj.\2"),
    (r"transformer\.layers\.(\d+)\.ff\.ff\.2\.(weight|bias)", r"transformer_blocks.\1.ff.net.2.\2"),
    (r"transformer\.rotary_pos_emb\.inv_freq", "rotary_inv_freq"),
]
_SAT_PROJECTION = [
    (r"seconds_start\.embedder\.embedding\.0\.weights", "start_number_conditioner.time_positional_embedding.0.weights"),
    (r"seconds_start\.embedder\.embedding\.1\.(weight|bias)",
     r"start_number_conditioner.time_positional_embedding.1.\1"),
    (r"seconds_total\.embedder\.embedding\.0\.weights", "end_number_conditioner.time_positional_embedding.0.weights"),
    (r"seconds_total\.embedder\.embedding\.1\.(weight|bias)", r"end_number_conditioner.time_positional_embedding.1.\1"),
    (r"prompt\.proj_out\.(weight|bias)", r"text_projection.\1"),
]
_SAT_UNIT = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}


def _sat_vae_rules(blocks: int) -> list[Rule]:
    """stable-audio-tools' Oobleck (`{en,de}coder.layers.<i>...`, `blocks` strided blocks) → diffusers' names."""

    def block(m: re.Match[str]) -> str:
        coder, index, rest = m.group(1), int(m.group(2)), m.group(3)
        if index == 0:
            return f"{coder}.conv1.{rest}"
        if index == blocks + 1:
            return f"{coder}.snake1.{rest}"
        if index == blocks + 2:
            return f"{coder}.conv2.{rest}"
        if index > blocks + 2:
            return f"?{m.group(0)}"
        inner = re.fullmatch(r"layers\.(\d)\.(.+)", rest)
        if inner is None:
            return f"?{m.group(0)}"
        layer, leaf = int(inner.group(1)), inner.group(2)
        first_unit = 0 if coder == "encoder" else 2  # encoder: units then snake, conv; decoder: snake, conv, units
        if first_unit <= layer < first_unit + 3:
            unit = re.fullmatch(r"layers\.([0-3])\.(.+)", leaf)
            if unit is None:
                return f"?{m.group(0)}"
            name = f"res_unit{layer - first_unit + 1}.{_SAT_UNIT[unit.group(1)]}"
            return f"{coder}.block.{index - 1}.{name}.{unit.group(2)}"
        own = {"encoder": {3: "snake1", 4: "conv1"}, "decoder": {0: "snake1", 1: "conv_t1"}}[coder].get(layer)
        return f"{coder}.block.{index - 1}.{own}.{leaf}" if own else f"?{m.group(0)}"

    return [(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", block)]


def stable_audio_tools_parts(state: Mapping[str, Tensor], blocks: int, rotary_dim: int,
                             source: str) -> dict[str, dict[str, Tensor]]:
    """A stable-audio-tools checkpoint's state dict → {"transformer", "vae", "projection_model"} in diffusers' key
    names and layouts: fused q/k/v split, layer-norm gamma/beta as weight/bias, Fourier weights squeezed, snake
    parameters shaped [1, C, 1]. The rotary frequencies (a derived buffer) are checked against ours for rotary_dim
    and dropped. blocks: the autoencoder's strided blocks. KeyMapError names `source` and the key of anything
    else."""
    parts: dict[str, dict[str, Tensor]] = {part: {} for part in SAT_PREFIXES.values()}
    for key, value in state.items():
        prefix = next((p for p in SAT_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise KeyMapError(f"{source}: unexpected key {key!r} (expected keys under {sorted(SAT_PREFIXES)})")
        parts[SAT_PREFIXES[prefix]][key[len(prefix):]] = value
    dit = rename(parts["transformer"], _SAT_DIT, source, "", "model.model.")
    inv_freq = dit.pop("rotary_inv_freq", None)
    expected = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    if inv_freq is not None and (inv_freq.shape != expected.shape or not torch.allclose(inv_freq.float(), expected)):
        raise KeyMapError(f"{source}: model.model.transformer.rotary_pos_emb.inv_freq has shape "
                          f"{tuple(inv_freq.shape)}, expected the rotary frequencies of {rotary_dim} dimensions "
                          f"{tuple(expected.shape)} (half of each attention head)")
    out: dict[str, Tensor] = {}
    for key, value in dit.items():
        if key.endswith("to_qkv.weight"):
            out.update(zip((key.replace("qkv", n) for n in "qkv"), value.chunk(3, dim=0), strict=True))
        elif key.endswith("to_kv.weight"):
            out.update(zip((key.replace("kv", n) for n in "kv"), value.chunk(2, dim=0), strict=True))
        elif key == "time_proj.weight":
            out[key] = value.reshape(-1)
        else:
            out[key.replace(".gamma", ".weight").replace(".beta", ".bias")] = value
    vae = rename(parts["vae"], _sat_vae_rules(blocks), source, "", "pretransform.model.")
    bad = [k for k in vae if k.startswith("?")]
    if bad:
        raise KeyMapError(f"{source}: unexpected key 'pretransform.model.{bad[0][1:]}' (not a layer of an Oobleck "
                          f"autoencoder with {blocks} blocks)")
    vae = {k: v.reshape(1, -1, 1) if k.endswith((".alpha", ".beta")) else v for k, v in vae.items()}
    projection = rename(parts["projection_model"], _SAT_PROJECTION, source, "", "conditioner.conditioners.")
    return {"transformer": out, "vae": vae, "projection_model": projection}
