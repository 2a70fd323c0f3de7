"""Stable Audio Open converted into an audiodiff export folder: the whole pipeline equals diffusers'
StableAudioPipeline (same initial noise, same Brownian tree), the command line, on-the-fly conversion, the full-size
key map, and refusals of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("torchsde")
import stable_audio_tiny as tiny  # noqa: E402
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from audiodiff.models.stable_audio_convert import ConversionError, convert, expected_state  # noqa: E402
from audiodiff.models.stable_audio_keys import (  # noqa: E402
    DIFFUSERS_DIT,
    DIFFUSERS_PROJECTION,
    DIFFUSERS_VAE,
    KeyMapError,
    rename,
)
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a dog barks", "soft rain on the roof far away"]
SECONDS = 0.1
SEED = 7


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sao")
    pipe = tiny.save_diffusers_pipeline(root / "src")
    return pipe, root / "src"


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(source[1], tmp_path_factory.mktemp("out") / "export")


def _tree(seeds: list[int]) -> BrownianTreeNoiseSampler:
    shape = torch.zeros(len(seeds), tiny.DIT["in_channels"], tiny.DIT["sample_size"])
    return BrownianTreeNoiseSampler(shape, sigma_min=0.3, sigma_max=500, seed=seeds)


def _reference(pipe, steps: int, negative: str | None) -> torch.Tensor:
    """diffusers' waveforms with the noise our pipeline draws for seeds SEED, SEED + 1 and one Brownian tree."""
    noise = torch.stack([torch.randn(tiny.DIT["in_channels"], tiny.DIT["sample_size"],
                                     generator=torch.Generator().manual_seed(SEED + i)) for i in range(2)])
    tree = _tree([1, 2])
    set_timesteps = type(pipe.scheduler).set_timesteps

    def with_tree(self, *args, **kwargs):
        set_timesteps(self, *args, **kwargs)
        self.noise_sampler = tree  # the scheduler draws its own tree when this is None

    pipe.scheduler.set_timesteps = with_tree.__get__(pipe.scheduler)
    try:
        out = pipe(PROMPTS, audio_end_in_s=SECONDS, num_inference_steps=steps, guidance_scale=7.0,
                   negative_prompt=[negative] * 2 if negative else None, latents=noise.clone())
    finally:
        del pipe.scheduler.set_timesteps
    return out.audios


@pytest.mark.parametrize("steps", [2, 10])
@pytest.mark.parametrize("negative", [None, "low quality noise"])
def test_pipeline_equals_diffusers(source, converted, steps: int, negative: str | None):
    pipe, _ = source
    expected = _reference(pipe, steps, negative)
    ours = AudioDiffusionPipeline.from_pretrained(converted, watermark=False)  # parity: unmarked
    tree = _tree([1, 2])
    out = ours(PROMPTS, duration=SECONDS, steps=steps, guidance=7.0, seed=SEED,
               negative_prompts=negative, noise_sampler=lambda s, s_next: tree(torch.tensor(s), torch.tensor(s_next)))
    assert out.audio.shape == expected.shape == (2, 2, int(SECONDS * tiny.SAMPLE_RATE))
    assert tiny.relative_error(out.audio, expected) < 1e-3


@pytest.mark.parametrize("steps", [2, 10])
def test_same_seeds_give_diffusers_audio(source, converted, steps: int):
    """With the converted model's default Brownian-tree noise, seeds alone reproduce diffusers: prompt i with seed s
    equals StableAudioPipeline given a generator seeded s (the initial noise and the scheduler's tree)."""
    pipe, _ = source
    ours = AudioDiffusionPipeline.from_pretrained(converted, watermark=False)
    assert ours.model.sampler.noise == "brownian"
    got = ours(PROMPTS, duration=SECONDS, steps=steps, guidance=7.0, seed=SEED).audio
    generators = [torch.Generator().manual_seed(SEED + i) for i in range(len(PROMPTS))]
    expected = pipe(PROMPTS, audio_end_in_s=SECONDS, num_inference_steps=steps, guidance_scale=7.0,
                    generator=generators).audios
    assert tiny.relative_error(got, expected) < 1e-3


def test_export_folder_is_ordinary(converted: Path):
    config = (converted / "config.yaml").read_text()
    assert "_target_: audiodiff.denoisers.stable_audio_dit.StableAudioDiT" in config
    assert (converted / "text_encoder" / "config.json").is_file()
    assert (converted / "text_encoder" / "tokenizer_config.json").is_file()
    assert not any(k.startswith("text_encoder.") for k in load_file(str(converted / "model.safetensors")))
    pipe = AudioDiffusionPipeline.from_pretrained(converted, watermark=False)
    assert pipe.sample_rate == tiny.SAMPLE_RATE and pipe.model.representation.channels == 2
    assert pipe.model.sampler.name == "dpmpp_2m_sde" and pipe.model.sampler.steps == 100
    assert pipe.model.sampler.noise == "brownian"


def test_from_pretrained_converts_a_diffusers_folder(source, converted: Path):
    direct = AudioDiffusionPipeline.from_pretrained(source[1], watermark=False)
    loaded = AudioDiffusionPipeline.from_pretrained(converted, watermark=False)
    a = direct(PROMPTS[:1], duration=SECONDS, steps=2, seed=1).audio
    b = loaded(PROMPTS[:1], duration=SECONDS, steps=2, seed=1).audio
    assert torch.equal(a, b)
    assert direct.model_id == str(source[1])


def test_command_line(source, tmp_path: Path):
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "audiodiff.convert", "stable-audio-open", str(source[1]), str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith(str(out)) and (out / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "audiodiff.convert", "stable-audio-open", str(tmp_path), str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and "neither published Stable Audio Open layout" in bad.stderr


def test_full_size_key_map_on_meta_device():
    """The published size, built on the meta device: every reference weight maps onto exactly one of ours and
    none of ours is left without one."""
    import diffusers
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    with torch.device("meta"):
        dit = diffusers.StableAudioDiTModel()  # the defaults are the published configuration
        vae = diffusers.AutoencoderOobleck()
        projection = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                                max_value=512)
    vae_state = fold_weight_norm_meta(vae.state_dict())
    ours = {**rename(dit.state_dict(), DIFFUSERS_DIT, "transformer", "net."),
            **rename(vae_state, DIFFUSERS_VAE, "vae", "representation.autoencoder."),
            **rename(projection.state_dict(), DIFFUSERS_PROJECTION, "projection_model", "timing.")}
    config = {
        "representation": {"_target_": "audiodiff.representations.oobleck.OobleckRepresentation"},
        "denoiser": {"_target_": "audiodiff.denoisers.stable_audio_dit.StableAudioDiT"},
        "timing": {"_target_": "audiodiff.conditioning.stable_audio.StableAudioConditioning"},
    }
    expected = expected_state(config)  # our modules at their published defaults
    # rename refuses two reference keys landing on one of ours; equal counts and key sets make the map one-to-one
    assert len(ours) == len(dit.state_dict()) + len(vae_state) + len(projection.state_dict())
    assert set(ours) == set(expected)
    assert all(ours[k].shape == expected[k].shape for k in ours)
    net = sum(v.numel() for k, v in expected.items() if k.startswith("net."))
    assert net == sum(v.numel() for v in dit.state_dict().values()) == 1_056_939_136


def fold_weight_norm_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight-norm folding by shape only (meta tensors carry no values)."""
    out = {k: v for k, v in state.items() if not k.endswith((".weight_g", ".weight_v"))}
    out.update({k[: -len("_v")]: v for k, v in state.items() if k.endswith(".weight_v")})
    return out


# ---- bad input -------------------------------------------------------------------------------------------------


def _copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "copy"))


def test_neither_layout(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ConversionError, match="neither published Stable Audio Open layout"):
        convert(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_config_key(source, tmp_path: Path):
    src = _copy(source[1], tmp_path)
    path = src / "transformer" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "use_flash": True}))
    with pytest.raises(ConversionError, match=r"transformer/config.json: unknown key 'use_flash'"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _edit_weights(src: Path, part: str, edit) -> Path:
    path = src / part / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))
    return path


def test_missing_and_extra_weights(source, tmp_path: Path):
    src = _copy(source[1], tmp_path)
    _edit_weights(src, "transformer", lambda s: s.pop("transformer_blocks.1.attn2.to_k.weight"))
    with pytest.raises(KeyMapError, match=r"missing weight\(s\) \['net.blocks.1.cross_attn.k.weight'\]"):
        convert(src, tmp_path / "out")
    src2 = _copy(source[1], tmp_path / "b")
    _edit_weights(src2, "transformer", lambda s: s.update({"transformer_blocks.0.attn1.norm_q.weight": torch.ones(8)}))
    with pytest.raises(KeyMapError, match=r"transformer/diffusion_pytorch_model.safetensors: unexpected key "
                                          r"'transformer_blocks.0.attn1.norm_q.weight'"):
        convert(src2, tmp_path / "out")
    src3 = _copy(source[1], tmp_path / "c")
    _edit_weights(src3, "vae", lambda s: s.pop("encoder.conv1.weight_g"))
    with pytest.raises(KeyMapError, match=r"encoder.conv1.weight_g is missing"):
        convert(src3, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shape_disagrees_with_config(source, tmp_path: Path):
    src = _copy(source[1], tmp_path)
    _edit_weights(src, "transformer", lambda s: s.update({"proj_in.weight": torch.zeros(32, 9)}))
    with pytest.raises(KeyMapError, match=r"transformer/diffusion_pytorch_model.safetensors: proj_in.weight has "
                                          r"shape \(32, 9\), but its config implies \(32, 8\)"):
        convert(src, tmp_path / "out")


def test_a_converted_folder_missing_a_weight_is_refused(converted: Path, tmp_path: Path):
    broken = Path(shutil.copytree(converted, tmp_path / "broken"))
    state = load_file(str(broken / "model.safetensors"))
    state.pop("timing.seconds_total.proj.bias")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing.*timing.seconds_total.proj.bias"):
        AudioDiffusionPipeline.from_pretrained(broken)
