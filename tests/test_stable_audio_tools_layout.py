"""stable-audio-tools' layout (model_config.json + model.safetensors, no T5 weights, text_encoder=PATH) converts to
the same audiodiff model as diffusers' layout of the same weights. The pair is written here from a tiny random
diffusers pipeline by following stable-audio-tools' module structure (DiffusionTransformer, ContinuousTransformer,
OobleckEncoder / OobleckDecoder, NumberConditioner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("diffusers")
import stable_audio_tiny as tiny  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from audiodiff.models.stable_audio_convert import ConversionError, convert  # noqa: E402
from audiodiff.models.stable_audio_keys import KeyMapError  # noqa: E402

BLOCKS = len(tiny.VAE["downsampling_ratios"])


def sat_state(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's weights as stable-audio-tools names and lays them out."""
    out: dict[str, torch.Tensor] = {}
    dit = pipe.transformer.state_dict()
    m = "model.model."
    out[m + "timestep_features.weight"] = dit.pop("time_proj.weight")[:, None]
    for key in list(dit):
        value = dit.pop(key)
        parts = key.split(".")
        if parts[0] == "transformer_blocks":
            i, rest = parts[1], ".".join(parts[2:])
            layer = f"{m}transformer.layers.{i}."
            norms = {"norm1": "pre_norm", "norm2": "cross_attend_norm", "norm3": "ff_norm"}
            if parts[2] in norms:
                out[layer + f"{norms[parts[2]]}.{'gamma' if parts[3] == 'weight' else 'beta'}"] = value
            elif rest.startswith("ff.net.0.proj."):
                out[layer + "ff.ff.0.proj." + parts[-1]] = value
            elif rest.startswith("ff.net.2."):
                out[layer + "ff.ff.2." + parts[-1]] = value
            elif rest == "attn1.to_out.0.weight":
                out[layer + "self_attn.to_out.weight"] = value
            elif rest == "attn2.to_out.0.weight":
                out[layer + "cross_attn.to_out.weight"] = value
            elif rest == "attn2.to_q.weight":
                out[layer + "cross_attn.to_q.weight"] = value
            else:
                out[layer + rest] = value  # attn1.to_q/k/v, attn2.to_k/v: fused below
        else:
            renamed = {"timestep_proj": "to_timestep_embed", "global_proj": "to_global_embed",
                       "cross_attention_proj": "to_cond_embed", "proj_in": "transformer.project_in",
                       "proj_out": "transformer.project_out"}.get(parts[0], parts[0])
            out[m + ".".join([renamed, *parts[1:]])] = value
    for key in [k for k in out if k.endswith("attn1.to_q.weight")]:
        stem = key[: -len("attn1.to_q.weight")]
        out[stem + "self_attn.to_qkv.weight"] = torch.cat([out.pop(stem + f"attn1.to_{n}.weight") for n in "qkv"])
        out[stem + "cross_attn.to_kv.weight"] = torch.cat([out.pop(stem + f"attn2.to_{n}.weight") for n in "kv"])
    head = pipe.transformer.config.attention_head_dim
    rotary = max(head // 2, 32)
    out[m + "transformer.rotary_pos_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, rotary, 2).float() / rotary))

    unit = {"snake1": "0", "conv1": "1", "snake2": "2", "conv2": "3"}
    for key, value in pipe.vae.state_dict().items():
        coder, *rest = key.split(".")
        if rest[0] == "block":
            j, layer, *leaf = rest[1:]
            index = int(j) + 1
            if layer.startswith("res_unit"):
                n = int(layer[-1]) - 1 + (0 if coder == "encoder" else 2)
                path = f"layers.{index}.layers.{n}.layers.{unit[leaf[0]]}.{leaf[1]}"
            else:
                own = {"encoder": {"snake1": 3, "conv1": 4}, "decoder": {"snake1": 0, "conv_t1": 1}}[coder][layer]
                path = f"layers.{index}.layers.{own}.{leaf[0]}"
        else:
            index = {"conv1": 0, "snake1": BLOCKS + 1, "conv2": BLOCKS + 2}[rest[0]]
            path = f"layers.{index}.{rest[1]}"
        out[f"pretransform.model.{coder}.{path}"] = value.reshape(-1) if key.endswith(("alpha", "beta")) else value

    c = "conditioner.conditioners."
    names = (("start_number_conditioner", "seconds_start"), ("end_number_conditioner", "seconds_total"),
             ("time_positional_embedding", "embedder.embedding"), ("text_projection", "prompt.proj_out"))
    for key, value in pipe.projection_model.state_dict().items():
        for theirs, sat in names:
            key = key.replace(theirs, sat)
        out[c + key] = value
    return out


def sat_config() -> dict:
    vae, dit = tiny.VAE, tiny.DIT_64
    hop = 8
    oobleck = dict(c_mults=vae["channel_multiples"], strides=vae["downsampling_ratios"], use_snake=True)
    return {
        "model_type": "diffusion_cond", "sample_size": dit["sample_size"] * hop, "sample_rate": tiny.SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "oobleck", "requires_grad": False,
                            "config": dict(oobleck, in_channels=2, channels=vae["encoder_hidden_size"],
                                           latent_dim=2 * vae["decoder_input_channels"])},
                "decoder": {"type": "oobleck",
                            "config": dict(oobleck, out_channels=2, channels=vae["decoder_channels"],
                                           latent_dim=vae["decoder_input_channels"], final_tanh=False)},
                "bottleneck": {"type": "vae"}, "latent_dim": vae["decoder_input_channels"],
                "downsampling_ratio": hop, "io_channels": 2}},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}],
                "cond_dim": tiny.PROJECTION_64["conditioning_dim"]},
            "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
                          "config": {"io_channels": dit["in_channels"],
                                     "embed_dim": dit["attention_head_dim"] * dit["num_attention_heads"],
                                     "depth": dit["num_layers"], "num_heads": dit["num_attention_heads"],
                                     "cond_token_dim": dit["cross_attention_dim"],
                                     "global_cond_dim": dit["global_states_input_dim"],
                                     "project_cond_tokens": False, "transformer_type": "continuous_transformer"}},
            "io_channels": dit["in_channels"]},
        "training": {"use_ema": True, "demo": {"demo_every": 2000}},
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sat")
    pipe = tiny.save_diffusers_pipeline(root / "diffusers", dit=tiny.DIT_64, projection=tiny.PROJECTION_64)
    (root / "sat").mkdir()
    (root / "sat" / "model_config.json").write_text(json.dumps(sat_config(), indent=1))
    save_file({k: v.contiguous() for k, v in sat_state(pipe).items()}, str(root / "sat" / "model.safetensors"))
    t5 = root / "t5"
    shutil.copytree(root / "diffusers" / "text_encoder", t5)
    for path in (root / "diffusers" / "tokenizer").iterdir():
        shutil.copy2(path, t5 / path.name)
    return {"diffusers": root / "diffusers", "sat": root / "sat", "t5": t5, "root": root}


def test_both_layouts_give_the_same_model(folders):
    a = convert(folders["diffusers"], folders["root"] / "from_diffusers")
    b = convert(folders["sat"], folders["root"] / "from_sat", text_encoder=folders["t5"])
    config_a, config_b = (yaml.safe_load((f / "config.yaml").read_text()) for f in (a, b))
    assert config_b["sampler"].pop("name") == "dpmpp_3m_sde"  # stable-audio-tools' own sampler for the model
    assert config_a["sampler"].pop("name") == "dpmpp_2m_sde"  # the scheduler diffusers' folder names
    assert config_a == config_b
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sorted(wa) == sorted(wb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert "t5-base" in json.loads((b / "export.json").read_text())["text_encoder"]


def test_a_ckpt_is_read_without_unpickling_code(folders, tmp_path: Path):
    src = Path(shutil.copytree(folders["sat"], tmp_path / "ckpt"))
    state = load_file(str(src / "model.safetensors"))
    (src / "model.safetensors").unlink()
    torch.save({"state_dict": state}, src / "model.ckpt")
    out = convert(src, tmp_path / "out", text_encoder=folders["t5"])
    assert (out / "model.safetensors").is_file()


def test_the_pair_without_text_encoder_is_refused(folders, tmp_path: Path):
    with pytest.raises(ConversionError, match=r"model_config.json: a stable-audio-tools checkpoint holds no T5 "
                                              r"weights .*'t5-base'.* text_encoder=PATH"):
        convert(folders["sat"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"]["diffusion"]["config"].update(use_skip=True),
     "unknown key 'model.diffusion.config.use_skip'"),
    (lambda c: c["model"]["pretransform"]["config"]["decoder"]["config"].update(final_tanh=True),
     "model.pretransform.config.decoder.config.final_tanh is True; the converter reproduces only False"),
    (lambda c: c["model"].update(extra={}), "unknown key 'model.extra'"),
])
def test_bad_config_is_refused(folders, tmp_path: Path, edit, message):
    src = Path(shutil.copytree(folders["sat"], tmp_path / "bad"))
    config = sat_config()
    edit(config)
    (src / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(".", r"\.")):
        convert(src, tmp_path / "out", text_encoder=folders["t5"])


def test_unexpected_and_missing_sat_keys(folders, tmp_path: Path):
    src = Path(shutil.copytree(folders["sat"], tmp_path / "keys"))
    state = load_file(str(src / "model.safetensors"))
    save_file({**state, "model_ema.foo": torch.zeros(1)}, str(src / "model.safetensors"))
    with pytest.raises(KeyMapError, match=r"model.safetensors: unexpected key 'model_ema.foo'"):
        convert(src, tmp_path / "out", text_encoder=folders["t5"])
    state.pop("pretransform.model.decoder.layers.1.layers.2.layers.1.weight_v")
    save_file(state, str(src / "model.safetensors"))
    with pytest.raises(KeyMapError, match=r"decoder.block.0.res_unit1.conv1.weight_v is missing"):
        convert(src, tmp_path / "out", text_encoder=folders["t5"])


def test_from_pretrained_names_what_the_pair_lacks(folders):
    from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError

    with pytest.raises(ModelLoadError, match="holds no T5 weights"):
        AudioDiffusionPipeline.from_pretrained(folders["sat"])


def test_full_size_stable_audio_tools_key_map_on_meta_device():
    """The published size, on the meta device: every stable-audio-tools key lands on exactly one of ours."""
    from types import SimpleNamespace

    import diffusers
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    from audiodiff.models.stable_audio_convert import expected_state
    from audiodiff.models.stable_audio_keys import (
        DIFFUSERS_DIT,
        DIFFUSERS_PROJECTION,
        DIFFUSERS_VAE,
        fold_weight_norm,
        rename,
        stable_audio_tools_parts,
    )

    with torch.device("meta"):
        pipe = SimpleNamespace(transformer=diffusers.StableAudioDiTModel(), vae=diffusers.AutoencoderOobleck(),
                               projection_model=StableAudioProjectionModel(768, 768, 0, 512))
        state = sat_state_published(pipe)
    parts = stable_audio_tools_parts(state, 5, 32, "model.safetensors")
    with torch.device("meta"):
        vae = fold_weight_norm(parts["vae"], "model.safetensors")
    ours = {**rename(parts["transformer"], DIFFUSERS_DIT, "t", "net."),
            **rename(vae, DIFFUSERS_VAE, "v", "representation.autoencoder."),
            **rename(parts["projection_model"], DIFFUSERS_PROJECTION, "p", "timing.")}
    expected = expected_state({
        "representation": {"_target_": "audiodiff.representations.oobleck.OobleckRepresentation"},
        "denoiser": {"_target_": "audiodiff.denoisers.stable_audio_dit.StableAudioDiT"},
        "timing": {"_target_": "audiodiff.conditioning.stable_audio.StableAudioConditioning"}})
    assert set(ours) == set(expected) and all(ours[k].shape == expected[k].shape for k in ours)
    weight_norm_pairs = sum(k.endswith("weight_g") for k in state)
    assert len(ours) == len(state) - 1 - weight_norm_pairs + sum(k.endswith("to_qkv.weight") for k in state) * 2 \
        + sum(k.endswith("to_kv.weight") for k in state)  # - inv_freq, fused q/k/v and k/v split


def sat_state_published(pipe) -> dict[str, torch.Tensor]:
    """`sat_state` for published-size meta modules (five autoencoder blocks; real rotary frequencies)."""
    global BLOCKS
    saved, BLOCKS = BLOCKS, 5
    try:
        state = sat_state(pipe)
    finally:
        BLOCKS = saved
    state["model.model.transformer.rotary_pos_emb.inv_freq"] = 1.0 / (
        10000 ** (torch.arange(0, 32, 2, device="cpu").float() / 32))
    return state
