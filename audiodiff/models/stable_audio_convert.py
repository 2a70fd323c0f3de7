"""Convert a published Stable Audio Open folder into an audiodiff export folder (config.yaml + model.safetensors +
the T5 encoder in `text_encoder/`), which `AudioDiffusionPipeline.from_pretrained` loads without diffusers.

Accepted layouts: diffusers' (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`,
`projection_model/`, `scheduler/`), and stable-audio-tools' pair `model_config.json` + `model.safetensors` (or
`model.ckpt`), which holds no T5 weights and so takes `text_encoder=` (a transformers T5 folder). Weights are read
with safetensors (or `torch.load(weights_only=True)`, which never runs code from the file). Every config key must be
one the converter knows, every reference weight must land on exactly one of ours and shapes must match the
configuration: anything else is refused naming the file, the key and expected vs got, before OUT is touched; OUT is
written to a temporary folder and renamed into place. The mechanism is the one every family shares
(`audiodiff.models.conversion`); this module holds what is Stable Audio Open's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from audiodiff.models.conversion import (
    ConversionError,
    Converted,
    WeightPart,
    check_converted,
    diffusers_state,
    expected_state,
    pipeline_class,
    read_weights,
    require,
    text_encoder_files,
    write_converted,
)
from audiodiff.models.conversion import read_config as _read_config
from audiodiff.models.export_format import TEXT_ENCODER_DIR
from audiodiff.models.stable_audio_keys import (
    DIFFUSERS_DIT,
    DIFFUSERS_PROJECTION,
    DIFFUSERS_VAE,
    fold_weight_norm,
    rename,
    stable_audio_tools_parts,
)

__all__ = ["ConversionError", "convert", "converted", "detect_layout", "expected_state", "is_stable_audio_folder"]

Layout = Literal["diffusers", "stable-audio-tools"]
DIFFUSERS_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "projection_model", "scheduler")
# The constructor arguments of each diffusers class, as diffusers 0.42 defines them.
DIFFUSERS_CONFIG_KEYS: dict[str, set[str]] = {
    "transformer": {"sample_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
                    "num_key_value_attention_heads", "out_channels", "cross_attention_dim", "time_proj_dim",
                    "global_states_input_dim", "cross_attention_input_dim"},
    "vae": {"encoder_hidden_size", "downsampling_ratios", "channel_multiples", "decoder_channels",
            "decoder_input_channels", "audio_channels", "sampling_rate"},
    "projection_model": {"text_encoder_dim", "conditioning_dim", "min_value", "max_value"},
    "scheduler": {"sigma_min", "sigma_max", "sigma_data", "sigma_schedule", "num_train_timesteps", "solver_order",
                  "prediction_type", "rho", "solver_type", "lower_order_final", "euler_at_final", "final_sigmas_type"},
}
DIFFUSERS_CLASSES = {"transformer": "StableAudioDiTModel", "vae": "AutoencoderOobleck",
                     "projection_model": "StableAudioProjectionModel",
                     "scheduler": "CosineDPMSolverMultistepScheduler"}
# diffusers' defaults, which are the published configuration.
PUBLISHED: dict[str, dict[str, Any]] = {
    "transformer": dict(sample_size=1024, in_channels=64, num_layers=24, attention_head_dim=64, num_attention_heads=24,
                        num_key_value_attention_heads=12, out_channels=64, cross_attention_dim=768, time_proj_dim=256,
                        global_states_input_dim=1536, cross_attention_input_dim=768),
    "vae": dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8], channel_multiples=[1, 2, 4, 8, 16],
                decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=44100),
}
# Scheduler settings our sampler reproduces (other values are refused rather than silently sampled differently).
_SCHEDULER_FIXED = {"sigma_data": 1.0, "solver_order": 2, "prediction_type": "v_prediction", "solver_type": "midpoint",
                    "final_sigmas_type": "zero", "euler_at_final": False}
PIPELINE_CLASS = "StableAudioPipeline"
WEIGHT_PARTS = (WeightPart("transformer", DIFFUSERS_DIT, "net."),
                WeightPart("vae", DIFFUSERS_VAE, "representation.autoencoder.", fold=True),
                WeightPart("projection_model", DIFFUSERS_PROJECTION, "timing."))


def detect_layout(src: str | Path) -> Layout:
    """Which published layout `src` holds; ConversionError naming what is missing when it is neither."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    if (src / "model_index.json").is_file() or all((src / part).is_dir() for part in ("transformer", "vae")):
        return "diffusers"
    if (src / "model_config.json").is_file():
        return "stable-audio-tools"
    raise ConversionError(
        f"{src}: neither published Stable Audio Open layout: expected diffusers' folders ({', '.join(DIFFUSERS_PARTS)}"
        f" with model_index.json) or stable-audio-tools' model_config.json beside model.safetensors / model.ckpt")


def is_stable_audio_folder(path: str | Path) -> bool:
    """Whether `path` is a published Stable Audio Open folder (either layout) rather than an audiodiff export."""
    path = Path(path)
    if not path.is_dir() or (path / "config.yaml").is_file():
        return False
    if (path / "model_index.json").is_file():
        return pipeline_class(path) == PIPELINE_CLASS
    return (path / "model_config.json").is_file()


def read_config(path: Path, part: str) -> dict[str, Any]:
    """A Stable Audio Open component's config.json, checked: the class it names and no key outside the known
    constructor arguments (ConversionError naming the file and the key)."""
    return _read_config(path, part, DIFFUSERS_CONFIG_KEYS[part], DIFFUSERS_CLASSES[part])


def diffusers_model_config(src: Path) -> dict[str, Any]:
    """The audiodiff model config of a diffusers Stable Audio Open folder."""
    paths = {part: src / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
             for part in DIFFUSERS_CONFIG_KEYS}
    configs = {part: read_config(path, part) for part, path in paths.items()}
    return model_config(configs, paths, _tokenizer_length(src / "tokenizer"))


def model_config(configs: Mapping[str, Mapping[str, Any]], paths: Mapping[str, Path], text_tokens: int,
                 sampler: str = "dpmpp_2m_sde") -> dict[str, Any]:
    """The audiodiff model config from the four parts' settings in diffusers' terms (`configs`: transformer, vae,
    projection_model, scheduler; missing transformer / vae keys take the published values), checked for sizes that
    must agree; `paths[part]` names the file each came from in errors. text_tokens: the padded prompt length;
    sampler: the default sampler (the source's own: diffusers' scheduler is DPM-Solver++(2M) SDE,
    stable-audio-tools samples Stable Audio Open with DPM-Solver++(3M) SDE), 100 steps, guidance 7."""
    t = {**PUBLISHED["transformer"], **configs["transformer"]}
    v = {**PUBLISHED["vae"], **configs["vae"]}
    p, s = configs["projection_model"], configs["scheduler"]
    tp, vp, pp, sp = (paths[k] for k in ("transformer", "vae", "projection_model", "scheduler"))
    require(p, ("text_encoder_dim", "conditioning_dim", "min_value", "max_value"), pp)
    if t["cross_attention_input_dim"] != t["cross_attention_dim"]:
        raise ConversionError(f"{tp}: cross_attention_input_dim {t['cross_attention_input_dim']} differs from "
                              f"cross_attention_dim {t['cross_attention_dim']}; expected them equal")
    if t["cross_attention_dim"] != p["conditioning_dim"]:
        raise ConversionError(f"{tp}: cross_attention_dim is {t['cross_attention_dim']}, but {pp} gives "
                              f"conditioning_dim {p['conditioning_dim']}; expected them equal")
    if t["global_states_input_dim"] != 2 * p["conditioning_dim"]:
        raise ConversionError(f"{tp}: global_states_input_dim is {t['global_states_input_dim']}, expected "
                              f"2 × conditioning_dim = {2 * p['conditioning_dim']} ({pp})")
    if v["encoder_hidden_size"] != 2 * v["decoder_input_channels"]:
        raise ConversionError(f"{vp}: encoder_hidden_size {v['encoder_hidden_size']} must be 2 × "
                              f"decoder_input_channels = {2 * v['decoder_input_channels']} (mean and scale)")
    if t["in_channels"] != v["decoder_input_channels"]:
        raise ConversionError(f"{tp}: in_channels is {t['in_channels']}, but {vp} gives decoder_input_channels "
                              f"{v['decoder_input_channels']}; expected them equal")
    for key, value in _SCHEDULER_FIXED.items():
        if key in s and s[key] != value:
            raise ConversionError(f"{sp}: {key} is {s[key]!r}; the converter reproduces only {value!r}")
    schedule = s.get("sigma_schedule", "exponential")
    if schedule not in ("exponential", "karras") or (schedule == "karras" and s.get("rho", 7.0) != 7.0):
        raise ConversionError(f"{sp}: sigma_schedule {schedule!r} (rho {s.get('rho', 7.0)}); expected 'exponential' "
                              f"or 'karras' with rho 7")
    hop = 1
    for stride in v["downsampling_ratios"]:
        hop *= int(stride)
    config = {
        "representation": {"_target_": "audiodiff.representations.oobleck.OobleckRepresentation",
                           "audio_channels": v["audio_channels"], "latent_channels": v["decoder_input_channels"],
                           "channels": v["encoder_hidden_size"], "decoder_channels": v["decoder_channels"],
                           "strides": list(v["downsampling_ratios"]),
                           "channel_multiples": list(v["channel_multiples"]), "sample_rate": v["sampling_rate"]},
        "vocoder": None,
        "denoiser": {"_target_": "audiodiff.denoisers.stable_audio_dit.StableAudioDiT",
                     "width": t["num_attention_heads"] * t["attention_head_dim"], "depth": t["num_layers"],
                     "heads": t["num_attention_heads"], "kv_heads": t["num_key_value_attention_heads"],
                     "time_features": t["time_proj_dim"], "out_channels": t["out_channels"],
                     "context_mask": False, "pooled_text": False},
        "diffusion": {"_target_": "audiodiff.diffusion.objectives.VDiffusion",
                      "sigma_min": float(s.get("sigma_min", 0.3)), "sigma_max": float(s.get("sigma_max", 500.0))},
        "text_encoder": {"_target_": "audiodiff.conditioning.text.TextEncoder", "name_or_path": TEXT_ENCODER_DIR,
                         "max_length": text_tokens},
        "timing": {"_target_": "audiodiff.conditioning.stable_audio.StableAudioConditioning",
                   "text_dim": p["text_encoder_dim"], "width": p["conditioning_dim"],
                   "min_seconds": float(p["min_value"]), "max_seconds": float(p["max_value"]),
                   "text_tokens": text_tokens},
        "sampler": {"name": sampler, "steps": 100, "guidance": 7.0, "eta": 1.0, "noise": "brownian",
                    "spacing": "default" if schedule == "exponential" else "karras"},
        "duration": t["sample_size"] * hop / v["sampling_rate"],
    }
    return config


def _tokenizer_length(folder: Path) -> int:
    """The length diffusers pads prompts to: the tokenizer's model_max_length (128 for Stable Audio Open)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: missing (the T5 tokenizer's settings)")
    length = json.loads(path.read_text()).get("model_max_length", 128)
    if not isinstance(length, int) or not 1 <= length <= 4096:
        raise ConversionError(f"{path}: model_max_length {length!r}; expected the padded prompt length (128)")
    return length


# stable-audio-tools' model_config.json: the keys each section may hold (`training` is not read), and the values
# of those that would change the network, which must be the ones this converter reproduces.
SAT_KEYS: dict[str, set[str]] = {
    "": {"model_type", "sample_size", "sample_rate", "audio_channels", "model", "training"},
    "model": {"pretransform", "conditioning", "diffusion", "io_channels"},
    "model.pretransform": {"type", "iterate_batch", "config", "model_half", "chunked", "scale", "enable_grad"},
    "model.pretransform.config": {"encoder", "decoder", "bottleneck", "latent_dim", "downsampling_ratio",
                                  "io_channels", "sample_rate"},
    "model.pretransform.config.encoder": {"type", "config", "requires_grad"},
    "model.pretransform.config.encoder.config": {"in_channels", "channels", "c_mults", "strides", "latent_dim",
                                                 "use_snake", "antialias_activation"},
    "model.pretransform.config.decoder": {"type", "config", "requires_grad"},
    "model.pretransform.config.decoder.config": {"out_channels", "channels", "c_mults", "strides", "latent_dim",
                                                 "use_snake", "antialias_activation", "use_nearest_upsample",
                                                 "final_tanh"},
    "model.pretransform.config.bottleneck": {"type"},
    "model.conditioning": {"configs", "cond_dim"},
    "model.diffusion": {"type", "cross_attention_cond_ids", "global_cond_ids", "config", "diffusion_objective"},
    "model.diffusion.config": {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim",
                               "project_cond_tokens", "transformer_type", "patch_size", "diffusion_objective"},
}
SAT_FIXED: dict[str, Any] = {
    "model_type": "diffusion_cond", "model.pretransform.type": "autoencoder", "model.pretransform.scale": 1.0,
    "model.pretransform.config.encoder.type": "oobleck", "model.pretransform.config.decoder.type": "oobleck",
    "model.pretransform.config.encoder.config.use_snake": True,
    "model.pretransform.config.decoder.config.use_snake": True,
    "model.pretransform.config.encoder.config.antialias_activation": False,
    "model.pretransform.config.decoder.config.antialias_activation": False,
    "model.pretransform.config.decoder.config.use_nearest_upsample": False,
    "model.pretransform.config.decoder.config.final_tanh": False,
    "model.pretransform.config.bottleneck.type": "vae", "model.diffusion.type": "dit",
    "model.diffusion.diffusion_objective": "v", "model.diffusion.config.diffusion_objective": "v",
    "model.diffusion.cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
    "model.diffusion.global_cond_ids": ["seconds_start", "seconds_total"],
    "model.diffusion.config.project_cond_tokens": False, "model.diffusion.config.patch_size": 1,
    "model.diffusion.config.transformer_type": "continuous_transformer",
}
# SAT's defaults where the published file leaves a key out.
_SAT_DEFAULTS = {"model.pretransform.config.decoder.config.final_tanh": True,
                 "model.diffusion.config.project_cond_tokens": True}


def _section(config: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    node: Any = config
    for part in [p for p in name.split(".") if p]:
        if not isinstance(node, Mapping) or part not in node:
            raise ConversionError(f"{path}: key {name!r} is missing")
        node = node[part]
    if not isinstance(node, Mapping):
        raise ConversionError(f"{path}: {name!r} must be an object, got {type(node).__name__}")
    return node


def read_stable_audio_tools_config(path: Path) -> tuple[dict[str, dict[str, Any]], int, str]:
    """(the four parts' settings in diffusers' terms, the padded prompt length, the T5 model name) of a
    stable-audio-tools model_config.json, checked key by key (ConversionError naming the file and the key)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    for name, allowed in SAT_KEYS.items():
        section = _section(config, name, path)
        unknown = sorted(set(section) - allowed)
        if unknown:
            where = f"{name}.{unknown[0]}" if name else unknown[0]
            raise ConversionError(f"{path}: unknown key {where!r}; expected keys of {name or 'the top level'} among "
                                  f"{sorted(allowed)}")
    for name, value in SAT_FIXED.items():
        section, _, key = name.rpartition(".")
        node = _section(config, section, path)
        got = node.get(key, _SAT_DEFAULTS.get(name, value))
        if got != value:
            raise ConversionError(f"{path}: {name} is {got!r}; the converter reproduces only {value!r}")
    pre = config["model"]["pretransform"]["config"]
    enc, dec = pre["encoder"]["config"], pre["decoder"]["config"]
    dit = config["model"]["diffusion"]["config"]
    conditioners = {c.get("id"): c for c in config["model"]["conditioning"]["configs"]}
    if sorted(conditioners) != ["prompt", "seconds_start", "seconds_total"]:
        raise ConversionError(f"{path}: model.conditioning.configs has ids {sorted(map(str, conditioners))}; expected "
                              f"prompt, seconds_start and seconds_total")
    prompt = conditioners["prompt"]
    if prompt.get("type") != "t5":
        raise ConversionError(f"{path}: the prompt conditioner is {prompt.get('type')!r}; expected 't5'")
    seconds = [conditioners[k].get("config", {}) for k in ("seconds_start", "seconds_total")]
    if any(conditioners[k].get("type") != "number" for k in ("seconds_start", "seconds_total")) or \
            seconds[0] != seconds[1]:
        raise ConversionError(f"{path}: seconds_start and seconds_total must be 'number' conditioners with one "
                              f"range, got {seconds}")
    head = dit["embed_dim"] // dit["num_heads"]
    if head // 2 < 32:
        raise ConversionError(f"{path}: model.diffusion.config gives heads of {head} dimensions; stable-audio-tools "
                              f"rotates max({head} / 2, 32) of them, and only heads of 64 or more are reproduced")
    for a, b in (("in_channels", "out_channels"), ("c_mults", "c_mults"), ("strides", "strides")):
        if enc.get(a) != dec.get(b):
            raise ConversionError(f"{path}: the encoder's {a} {enc.get(a)} and the decoder's {b} {dec.get(b)} differ")
    hop = 1
    for stride in enc["strides"]:
        hop *= int(stride)
    if hop != pre.get("downsampling_ratio", hop):
        raise ConversionError(f"{path}: model.pretransform.config.downsampling_ratio is {pre['downsampling_ratio']}, "
                              f"but the strides {enc['strides']} give {hop}")
    if config["sample_size"] % hop:
        raise ConversionError(f"{path}: sample_size {config['sample_size']} is not a multiple of the hop {hop}")
    cond_dim = config["model"]["conditioning"]["cond_dim"]
    parts = {
        "transformer": dict(sample_size=config["sample_size"] // hop, in_channels=dit["io_channels"],
                            num_layers=dit["depth"], attention_head_dim=head, num_attention_heads=dit["num_heads"],
                            num_key_value_attention_heads=dit["cond_token_dim"] // head,
                            out_channels=dit["io_channels"], cross_attention_dim=dit["cond_token_dim"],
                            time_proj_dim=256, global_states_input_dim=dit["global_cond_dim"],
                            cross_attention_input_dim=dit["cond_token_dim"]),
        "vae": dict(encoder_hidden_size=enc["channels"], downsampling_ratios=list(enc["strides"]),
                    channel_multiples=list(enc["c_mults"]), decoder_channels=dec["channels"],
                    decoder_input_channels=dec["latent_dim"], audio_channels=enc["in_channels"],
                    sampling_rate=config["sample_rate"]),
        "projection_model": dict(text_encoder_dim=None, conditioning_dim=cond_dim,
                                 min_value=seconds[0].get("min_val", 0), max_value=seconds[0].get("max_val", 1)),
        "scheduler": dict(sigma_min=0.3, sigma_max=500.0),
    }
    if enc["latent_dim"] != 2 * dec["latent_dim"]:
        raise ConversionError(f"{path}: the encoder's latent_dim {enc['latent_dim']} must be twice the decoder's "
                              f"{dec['latent_dim']} (mean and scale)")
    parts["vae"]["encoder_hidden_size"] = enc["latent_dim"]
    if enc["channels"] != enc["latent_dim"]:
        raise ConversionError(f"{path}: the encoder's channels {enc['channels']} differ from its latent_dim "
                              f"{enc['latent_dim']}; only equal ones are reproduced")
    prompt_config = prompt.get("config", {})
    return parts, int(prompt_config.get("max_length", 128)), str(prompt_config.get("t5_model_name", "t5-base"))


def stable_audio_tools_state(src: Path, blocks: int, rotary_dim: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(our state dict, our key → 'file: reference key') from a stable-audio-tools checkpoint beside
    model_config.json: model.safetensors, or model.ckpt read with weights_only=True (a Lightning checkpoint's
    `state_dict` taken)."""
    state, path = read_weights(src, ("model.safetensors", "model.ckpt"))
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    parts = stable_audio_tools_parts(state, blocks, rotary_dim, str(path))
    parts["vae"] = fold_weight_norm(parts["vae"], str(path))
    ours: dict[str, Tensor] = {}
    for part in WEIGHT_PARTS:
        ours.update(rename(parts[part.folder], part.rules, str(path), part.prefix))
    return ours, {k: f"{path}: {k}" for k in ours}


def converted(src: str | Path, text_encoder: str | Path | None = None) -> Converted:
    """(model config, state, the T5 folder's files by name, provenance) of the Stable Audio Open folder `src`
    (either layout), every check passed; `convert` writes them as an export folder. text_encoder: as for
    `convert`."""
    src = Path(src)
    layout = detect_layout(src)
    card: dict[str, Any] = {"converted_from": str(src.resolve()), "source_layout": layout}
    if layout == "diffusers":
        config = diffusers_model_config(src)
        state, origin = diffusers_state(src, WEIGHT_PARTS)
        encoder_files = _text_encoder_files(src, text_encoder, config["timing"]["text_dim"])
    else:
        config_path = src / "model_config.json"
        parts, text_tokens, t5_name = read_stable_audio_tools_config(config_path)
        if text_encoder is None:
            raise ConversionError(f"{config_path}: a stable-audio-tools checkpoint holds no T5 weights "
                                  f"(stable-audio-tools loads {t5_name!r} by name); pass text_encoder=PATH to a "
                                  f"transformers T5 folder with its tokenizer")
        encoder_files = _text_encoder_files(src, text_encoder, None)
        parts["projection_model"]["text_encoder_dim"] = _t5_width(encoder_files["config.json"])
        paths = {part: config_path for part in DIFFUSERS_CONFIG_KEYS}
        config = model_config(parts, paths, text_tokens, sampler="dpmpp_3m_sde")
        head = parts["transformer"]["attention_head_dim"]
        state, origin = stable_audio_tools_state(src, len(parts["vae"]["downsampling_ratios"]), head // 2)
        card["text_encoder"] = f"{Path(text_encoder).resolve()} (in place of {t5_name})"
    check_converted(state, config, src, origin)
    return config, state, encoder_files, card


def convert(src: str | Path, out: str | Path, text_encoder: str | Path | None = None) -> Path:
    """Write the audiodiff export folder `out` from the Stable Audio Open folder `src` (either layout); returns
    `out`. text_encoder: a transformers T5 folder (weights and tokenizer); required for stable-audio-tools'
    layout, which holds no T5 weights; for diffusers' it replaces the folder's own. Nothing is written unless every
    check passes; then OUT appears complete at once."""
    return write_converted(out, converted(src, text_encoder))


def _t5_width(config_path: Path) -> int:
    t5 = json.loads(config_path.read_text())
    if t5.get("model_type") not in ("t5", "mt5", "umt5") or not isinstance(t5.get("d_model"), int):
        raise ConversionError(f"{config_path}: model_type {t5.get('model_type')!r}, expected a 't5' config with "
                              f"d_model")
    return int(t5["d_model"])


def _text_encoder_files(src: Path, text_encoder: str | Path | None, text_dim: int | None) -> dict[str, Path]:
    """The files of the T5 encoder folder the export carries (model config, weights and tokenizer), checked."""
    folders = [Path(text_encoder)] if text_encoder is not None else [src / "text_encoder", src / "tokenizer"]
    return text_encoder_files(folders, _t5_width, text_dim, "T5")
