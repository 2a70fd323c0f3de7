"""Convert a published Stable Audio 3 folder (diffusers' layout: `model_index.json`, `transformer/`, `vae/`,
`text_encoder/`, `tokenizer/`, `duration_embedder/`, `scheduler/`) into an audiodiff export folder: the DiT as
`StableAudio3DiT`, the SAME autoencoder as `SAMERepresentation`, T5Gemma carried in `text_encoder/` and read through
transformers, the duration embedding as `StableAudio3Conditioning`, velocity flow matching with the log-SNR grid, and
the scheduler's sampling (stochastic "ping-pong" steps for the distilled model, Euler steps for the base one).

What reproduces diffusers' `StableAudio3Pipeline` (each checked against its source, diffusers 0.42): prompts capped
at 256 tokens with the mask passed; the duration embedding as global vector and as an extra cross-attention token;
the encoded empty string as the default negative prompt; the network's time input σ · num_train_timesteps; output
clamped to [-1, 1]; inpainting through the DiT's trained mask input. The shared mechanism (checks, key mapping,
atomic writing) is `audiodiff.models.conversion`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiodiff.models.conversion import (
    ConversionError,
    Converted,
    WeightPart,
    check_converted,
    diffusers_state,
    pipeline_class,
    read_config,
    require,
    text_encoder_files,
    write_converted,
)
from audiodiff.models.export_format import TEXT_ENCODER_DIR
from audiodiff.models.stable_audio3_keys import DIFFUSERS_DIT3, DIFFUSERS_DURATION, DIFFUSERS_SAME

FORMAT = "stable-audio-3"
# Text-to-audio, audio-to-audio and inpainting pipelines share one folder layout.
PIPELINE_CLASSES = ("StableAudio3Pipeline", "StableAudio3AudioToAudioPipeline", "StableAudio3InpaintPipeline")
PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "duration_embedder", "scheduler")
MAX_TEXT_TOKENS = 256  # diffusers caps T5Gemma's input here whatever the tokenizer allows
DEFAULT_DURATION = 10.0  # seconds: StableAudio3Pipeline's default request
# The constructor arguments of each diffusers class, as diffusers 0.42 defines them.
CONFIG_KEYS: dict[str, set[str]] = {
    "transformer": {"io_channels", "patch_size", "embed_dim", "depth", "num_heads", "cond_token_dim",
                    "global_cond_dim", "local_add_cond_dim", "timestep_features_dim", "ff_mult", "num_memory_tokens",
                    "use_differential_attention"},
    "vae": {"audio_channels", "patch_size", "encoder_channels", "encoder_c_mults", "encoder_strides",
            "encoder_transformer_depths", "latent_dim", "use_differential_attention", "dim_heads", "ff_mult",
            "sliding_window", "encoder_sinusoidal_blocks", "decoder_sinusoidal_blocks", "sampling_rate"},
    "duration_embedder": {"output_dim", "fourier_dim", "min_val", "max_val", "min_freq", "max_freq"},
    "scheduler": {"num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
                  "base_image_seq_len", "max_image_seq_len", "invert_sigmas", "shift_terminal", "use_karras_sigmas",
                  "use_exponential_sigmas", "use_beta_sigmas", "time_shift_type", "stochastic_sampling"},
}
CLASSES = {"transformer": "StableAudio3DiTModel", "vae": "AutoencoderSAME",
           "duration_embedder": "StableAudio3DurationEmbedder", "scheduler": "FlowMatchEulerDiscreteScheduler"}
# diffusers' defaults, which are the published configuration (SA3 Medium's DiT; SAME-S).
PUBLISHED: dict[str, dict[str, Any]] = {
    "transformer": dict(io_channels=256, patch_size=1, embed_dim=1536, depth=24, num_heads=24, cond_token_dim=768,
                        global_cond_dim=768, local_add_cond_dim=257, timestep_features_dim=256, ff_mult=4.0,
                        num_memory_tokens=64, use_differential_attention=True),
    "vae": dict(audio_channels=2, patch_size=256, encoder_channels=128, encoder_c_mults=[6], encoder_strides=[16],
                encoder_transformer_depths=[6], latent_dim=256, use_differential_attention=True, dim_heads=64,
                ff_mult=3, sliding_window=1, encoder_sinusoidal_blocks=[0], decoder_sinusoidal_blocks=[0],
                sampling_rate=44100),
    "duration_embedder": dict(output_dim=768, fourier_dim=256, min_val=0.0, max_val=384.0),
    "scheduler": dict(num_train_timesteps=1000, stochastic_sampling=False),
}
# Scheduler settings the sampler reproduces (other values are refused rather than silently sampled differently).
_SCHEDULER_FIXED = {"shift": 1.0, "use_dynamic_shifting": False, "invert_sigmas": False, "shift_terminal": None,
                    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
LOGSNR_RANGE = [-6.2, 2.0]  # StableAudio3Pipeline's logsnr_min, logsnr_max
WEIGHT_PARTS = (WeightPart("transformer", DIFFUSERS_DIT3, "net."),
                WeightPart("vae", DIFFUSERS_SAME, "representation.autoencoder.", fold=True),
                WeightPart("duration_embedder", DIFFUSERS_DURATION, "timing."))


def is_stable_audio3_folder(path: str | Path) -> bool:
    """Whether `path` is a published Stable Audio 3 folder (diffusers' layout) rather than an audiodiff export."""
    path = Path(path)
    return path.is_dir() and not (path / "config.yaml").is_file() and pipeline_class(path) in PIPELINE_CLASSES


def model_config(src: Path, encoder_config: Path | None = None) -> dict[str, Any]:
    """The audiodiff model config of the diffusers Stable Audio 3 folder `src`, every size that must agree
    checked (ConversionError naming the file, the key and expected vs got). encoder_config: the T5Gemma
    config.json to use (default: the folder's own)."""
    paths = {part: src / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
             for part in CONFIG_KEYS}
    read = {part: read_config(path, part, CONFIG_KEYS[part], CLASSES[part]) for part, path in paths.items()}
    t, v, d, s = ({**PUBLISHED[part], **read[part]} for part in ("transformer", "vae", "duration_embedder",
                                                                 "scheduler"))
    tp, vp, dp, sp = (paths[k] for k in ("transformer", "vae", "duration_embedder", "scheduler"))
    require(d, ("output_dim", "min_val", "max_val"), dp)
    width = _t5gemma_width(encoder_config or src / "text_encoder" / "config.json")
    checks = [
        (t["patch_size"] == 1, tp, f"patch_size is {t['patch_size']}; only 1 is reproduced (the published value)"),
        (t["embed_dim"] % t["num_heads"] == 0 and (t["embed_dim"] // t["num_heads"]) % 4 == 0, tp,
         f"embed_dim {t['embed_dim']} and num_heads {t['num_heads']} give no head size that is a multiple of 4"),
        (t["io_channels"] == v["latent_dim"], tp,
         f"io_channels is {t['io_channels']}, but {vp} gives latent_dim {v['latent_dim']}; expected them equal"),
        (t["local_add_cond_dim"] == v["latent_dim"] + 1, tp,
         f"local_add_cond_dim is {t['local_add_cond_dim']}, expected latent_dim + 1 = {v['latent_dim'] + 1} "
         f"(the inpainting mask and latents)"),
        (t["cond_token_dim"] == width, tp,
         f"cond_token_dim is {t['cond_token_dim']}, but the text encoder's hidden_size is {width}; expected equal"),
        (d["output_dim"] == t["cond_token_dim"] == t["global_cond_dim"], dp,
         f"output_dim is {d['output_dim']}; expected the transformer's cond_token_dim {t['cond_token_dim']} and "
         f"global_cond_dim {t['global_cond_dim']} (the duration is both a token and the global vector)"),
    ]
    for ok, path, message in checks:
        if not ok:
            raise ConversionError(f"{path}: {message}")
    for key, value in _SCHEDULER_FIXED.items():
        if key in s and s[key] != value:
            raise ConversionError(f"{sp}: {key} is {s[key]!r}; the converter reproduces only {value!r}")
    text_tokens = _text_tokens(src / "tokenizer")
    stochastic = bool(s["stochastic_sampling"])
    return {
        "representation": {"_target_": "audiodiff.representations.same.SAMERepresentation",
                           "audio_channels": v["audio_channels"], "patch_size": v["patch_size"],
                           "channels": v["encoder_channels"], "channel_multiples": list(v["encoder_c_mults"]),
                           "strides": list(v["encoder_strides"]), "depths": list(v["encoder_transformer_depths"]),
                           "latent_channels": v["latent_dim"], "differential": v["use_differential_attention"],
                           "head_dim": v["dim_heads"], "ff_mult": v["ff_mult"], "window": v["sliding_window"],
                           "sinusoidal_encoder": list(v["encoder_sinusoidal_blocks"]),
                           "sinusoidal_decoder": list(v["decoder_sinusoidal_blocks"]),
                           "sample_rate": v["sampling_rate"]},
        "vocoder": None,
        "denoiser": {"_target_": "audiodiff.denoisers.stable_audio3_dit.StableAudio3DiT",
                     "width": t["embed_dim"], "depth": t["depth"], "heads": t["num_heads"],
                     "time_features": t["timestep_features_dim"], "time_scale": float(s["num_train_timesteps"]),
                     "memory_tokens": t["num_memory_tokens"], "differential": t["use_differential_attention"],
                     "ff_mult": float(t["ff_mult"]), "local_dim": t["local_add_cond_dim"], "pooled_text": False},
        "diffusion": {"_target_": "audiodiff.diffusion.objectives.FlowMatching", "prediction": "velocity",
                      "logsnr_range": list(LOGSNR_RANGE)},
        "text_encoder": {"_target_": "audiodiff.conditioning.text.TextEncoder", "name_or_path": TEXT_ENCODER_DIR,
                         "max_length": text_tokens, "encode_empty": True},
        "timing": {"_target_": "audiodiff.conditioning.stable_audio3.StableAudio3Conditioning",
                   "text_dim": width, "min_seconds": float(d["min_val"]), "max_seconds": float(d["max_val"]),
                   "text_tokens": text_tokens, "features": d["fourier_dim"]},
        # diffusers' defaults: 8 ping-pong steps for the distilled model, 100 Euler steps for the base one; guidance 1
        "sampler": {"name": "pingpong" if stochastic else "flow_euler", "steps": 8 if stochastic else 100,
                    "guidance": 1.0, "spacing": "logsnr"},
        "duration": DEFAULT_DURATION,
    }


def _t5gemma_width(path: Path) -> int:
    """The encoder width (hidden_size) of a transformers T5Gemma config.json."""
    if not path.is_file():
        raise ConversionError(f"{path}: missing (the T5Gemma text encoder's configuration)")
    config = json.loads(path.read_text())
    encoder = config.get("encoder") if isinstance(config, dict) else None
    if config.get("model_type") != "t5gemma" or not isinstance(encoder, dict) or \
            not isinstance(encoder.get("hidden_size"), int):
        raise ConversionError(f"{path}: model_type {config.get('model_type')!r}, expected a 't5gemma' config with "
                              f"encoder.hidden_size")
    return int(encoder["hidden_size"])


def _text_tokens(folder: Path) -> int:
    """The prompt length: the tokenizer's model_max_length capped at 256, as diffusers caps it."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: missing (the T5Gemma tokenizer's settings)")
    length = json.loads(path.read_text()).get("model_max_length", MAX_TEXT_TOKENS)
    if not isinstance(length, int | float) or length < 1:
        raise ConversionError(f"{path}: model_max_length {length!r}; expected a positive token count")
    return int(min(length, MAX_TEXT_TOKENS))


def converted(src: str | Path, text_encoder: str | Path | None = None) -> Converted:
    """(model config, state, the T5Gemma folder's files by name, provenance) of the Stable Audio 3 folder `src`,
    every check passed; `convert` writes them. text_encoder: a transformers T5Gemma folder (weights and tokenizer)
    to carry instead of the folder's own."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    if pipeline_class(src) not in PIPELINE_CLASSES:
        raise ConversionError(f"{src}: not a published Stable Audio 3 folder: expected diffusers' layout "
                              f"({', '.join(PARTS)}) with a model_index.json naming one of {list(PIPELINE_CLASSES)}")
    config = model_config(src, None if text_encoder is None else Path(text_encoder) / "config.json")
    state, origin = diffusers_state(src, WEIGHT_PARTS)
    folders = [Path(text_encoder)] if text_encoder is not None else [src / "text_encoder", src / "tokenizer"]
    files = text_encoder_files(folders, _t5gemma_width, config["timing"]["text_dim"], "T5Gemma")
    check_converted(state, config, src, origin)
    card: dict[str, Any] = {"converted_from": str(src.resolve()), "source_layout": "diffusers",
                            "source_family": FORMAT}
    if text_encoder is not None:
        card["text_encoder"] = str(Path(text_encoder).resolve())
    return config, state, files, card


def convert(src: str | Path, out: str | Path, text_encoder: str | Path | None = None) -> Path:
    """Write the audiodiff export folder `out` from the Stable Audio 3 folder `src`; returns `out`. Nothing is
    written unless every check passes; then OUT appears complete at once."""
    return write_converted(out, converted(src, text_encoder))
