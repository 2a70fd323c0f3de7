"""Trainable autoencoders as diffusion representations: the mel VAE and the waveform VAE, their stage (train, resume,
refuse a changed config, export, load), AutoencoderRepresentation, and a diffusion model trained on it.

References: closed forms in float64 (snake, softplus, the Gaussian KL through torch.distributions), lengths from the
documented padding rules, numpy float64 statistics, and the networks rebuilt from the checkpoint (the export must hold
the trained weights).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from audiodiff.autoencoders import DiagonalGaussian, MelVAE, Snake, WaveformVAE
from audiodiff.autoencoders.loading import build_autoencoder, load_autoencoder
from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError
from audiodiff.representations.autoencoder import (
    AutoencoderRepresentation,
    from_config,
    from_export,
    inference_config,
)
from audiodiff.training.autoencoder.run import check_autoencoder_resume, train_autoencoder
from audiodiff.training.diffusion.run import ResumeMismatchError, train
from audiodiff.vocoders.griffinlim import GriffinLimVocoder

SR = 16000
TINY_MEL = dict(latent_channels=4, channels=8, num_res_blocks=1)
TINY_WAVE = dict(latent_channels=4, channels=4, channel_mults=[1, 2, 2, 4], strides=[2, 4, 4, 8])
TINY_DISCRIMINATORS = ["stage.discriminator_choices.mpd.channels=[4,8,8,8,8]",
                       "stage.discriminator_choices.mrd.channels=4"]


def audio(batch: int, samples: int, seed: int) -> torch.Tensor:
    """Decaying tones plus a little noise: [batch, 1, samples]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    freqs = 200 + 2000 * torch.rand(batch, 1, 1, generator=g)
    tones = torch.sin(2 * math.pi * freqs * t) * torch.exp(-3 * t)
    return 0.5 * tones + 0.02 * torch.randn(batch, 1, samples, generator=g)


def mel_vae(downsample: int = 4) -> MelVAE:
    torch.manual_seed(0)
    vae = MelVAE(downsample=downsample, **TINY_MEL)
    vae.fit_input_statistics([audio(2, 8000, 1)])
    return vae.eval()


def griffinlim(n_iter: int = 2) -> GriffinLimVocoder:
    return GriffinLimVocoder(SR, 1024, 256, n_mels=64, f_max=8000.0, power=1.0, n_iter=n_iter)


# ---- building blocks ------------------------------------------------------------------------------------------------
def test_snake_matches_its_formula():
    snake = Snake(3).double()
    with torch.no_grad():
        snake.log_alpha.copy_(torch.tensor([-1.0, 0.0, 1.5]).view(1, 3, 1))
    x = torch.randn(2, 3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    alpha = np.exp([-1.0, 0.0, 1.5]).reshape(1, 3, 1)
    # Ziyin et al. (2020), Eq. 3, with BigVGAN's 1e-9 guard in the denominator.
    expected = x.numpy() + np.sin(alpha * x.numpy()) ** 2 / (alpha + 1e-9)
    np.testing.assert_allclose(snake(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_posterior_kl_sample_and_softplus_scale_match_closed_forms():
    g = torch.Generator().manual_seed(0)
    params = torch.randn(3, 2 * 5, 7, dtype=torch.float64, generator=g) * 2
    q = DiagonalGaussian.from_parameters(params)
    s = params[:, 5:].numpy()
    np.testing.assert_allclose(q.std.numpy(), np.log1p(np.exp(s)) + 1e-4, rtol=1e-12)
    torch.testing.assert_close(q.mean, params[:, :5], rtol=0, atol=0)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(q.mean, q.std),
                                                  torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(q.kl(), reference.sum(1).mean(), rtol=1e-12, atol=1e-12)  # nats per latent frame
    assert DiagonalGaussian(torch.zeros(1, 4, 3), torch.ones(1, 4, 3)).kl() == 0.0
    mean = q.mean.clone().requires_grad_(True)
    z = DiagonalGaussian(mean, q.std).sample(torch.Generator().manual_seed(5))
    noise = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(z, q.mean + q.std * noise, rtol=0, atol=0)
    z.sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean))  # reparameterised: the gradient reaches the mean


@pytest.mark.parametrize("downsample", [4, 8])
@torch.no_grad()
def test_mel_vae_compresses_time_exactly_and_pads_with_silence(downsample):
    vae = mel_vae(downsample)
    assert vae.latent_hop == 256 * downsample and vae.frame_rate == SR / (256 * downsample)
    for samples in (8000, 8191, 8192, 256 * 4 * downsample - 256, 600):
        frames = samples // 256 + 1  # centred framing
        q = vae.encode(audio(2, samples, 2))
        expected = math.ceil(frames / downsample)
        assert q.mean.shape == q.std.shape == (2, 4, expected) == (2, 4, vae.num_latent_frames(samples))
        assert vae.decode(q.mean).shape == (2, 64, expected * downsample)
    # F frames that are not a multiple of r are padded on the right with silence (log floor, normalised).
    x = vae.mel.encode(audio(1, 7500, 3))  # 30 frames
    pad = -x.shape[-1] % downsample
    silence = (math.log(1e-5) - vae.mel.mean) / vae.mel.std
    padded = torch.cat([x, silence[None, :, None].expand(1, 64, pad)], dim=-1)
    assert pad and torch.equal(vae.pad_mel(x), padded)  # also the decoder's training target
    torch.testing.assert_close(vae.encode_mel(x).mean, vae.encoder(padded)[:, :4], rtol=0, atol=0)


@torch.no_grad()
def test_waveform_vae_compresses_by_its_hop_exactly():
    torch.manual_seed(0)
    vae = WaveformVAE(**TINY_WAVE).eval()
    assert vae.latent_hop == 256
    for samples in (8192, 8193, 300, 255):
        q = vae.encode(audio(2, samples, 4))
        assert q.mean.shape == (2, 4, math.ceil(samples / 256)) == (2, 4, vae.num_latent_frames(samples))
        wav = vae.decode(q.mean)
        assert wav.shape == (2, 1, q.mean.shape[-1] * 256) and wav.abs().max() < 1
    short = audio(1, 1000, 5)  # zero-padded on the right to a multiple of the hop
    padded = torch.nn.functional.pad(short, (0, 24))
    torch.testing.assert_close(vae.encode(short).mean, vae.encode(padded).mean, rtol=0, atol=0)
    odd = WaveformVAE(latent_channels=2, channels=2, channel_mults=[1, 2, 2], strides=[3, 5, 2])  # odd strides too
    assert odd.decode(odd.encode(audio(1, 100, 6)).mean).shape == (1, 1, 4 * 30)
    count = vae.num_parameters()
    assert count == sum(p.numel() for p in vae.remove_weight_norm().parameters())  # same before and after folding
    clamped = WaveformVAE(**TINY_WAVE, output="clamp")
    assert clamped.decode(torch.full((1, 4, 3), 50.0)).abs().max() <= 1.0


# ---- the stage ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=24, workers=1)
    return root


def stage_overrides(root: Path, run_dir: Path, autoencoder: str, *extra: str) -> list[str]:
    return ["stage=autoencoder", f"autoencoder={autoencoder}", f"data.root={root}", f"run_dir={run_dir}",
            "data.num_workers=0", "trainer.log_every_n_steps=1", "+trainer.enable_model_summary=false",
            "stage.data.segment_seconds=0.5", "stage.data.batch_size=2", "stage.trainer.max_steps=3",
            "stage.trainer.val_check_interval=2", "stage.trainer.limit_val_batches=1", "stage.checkpoint_every=2",
            "stage.task.stats_batches=2", "vocoder.n_iter=2", "stage.optim.lr=1e-3", "autoencoder.channels=8",
            "autoencoder.latent_channels=4", *TINY_DISCRIMINATORS, *extra]


@pytest.fixture(scope="module")
def mel_stage(root, tmp_path_factory) -> dict[str, Any]:
    """A mel VAE stage trained 3 steps, then rerun with max_steps 5: it resumes."""
    run = tmp_path_factory.mktemp("runs") / "mel"
    stage_dir = train_autoencoder(compose_config("train", stage_overrides(root, run, "mel_vae_tiny")))
    first = load_checkpoint(stage_dir / "checkpoints" / "last.ckpt")
    train_autoencoder(compose_config("train", stage_overrides(root, run, "mel_vae_tiny", "stage.trainer.max_steps=5")))
    return {"run": run, "dir": stage_dir, "first": first}


@pytest.fixture(scope="module")
def wave_stage(root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "wave"
    return train_autoencoder(compose_config("train", stage_overrides(root, run, "waveform_vae_tiny",
                                                                     "stage.task.adversarial_start=1")))


def test_mel_stage_fits_its_mel_once_trains_and_resumes(mel_stage):
    stage_dir, first = mel_stage["dir"], mel_stage["first"]
    assert stage_dir == mel_stage["run"] / "autoencoder"
    ckpt = load_checkpoint(stage_dir / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 3 and ckpt["global_step"] == 5
    (state,) = [opt["state"] for opt in ckpt["optimizer_states"]]  # one player: no discriminator
    assert {float(s["step"]) for s in state.values()} == {5}  # the optimizer went on, it did not start over
    assert ckpt["state_dict"]["autoencoder.mel.fitted"].item() is True
    for key in ("autoencoder.mel.mean", "autoencoder.mel.std"):  # fitted once, before the first step
        assert torch.equal(ckpt["state_dict"][key], first["state_dict"][key])
    assert ckpt["audiodiff"]["autoencoder"]["latent_channels"] == 4
    events = EventAccumulator(str(stage_dir / "tensorboard")).Reload()
    assert {"train/loss", "train/recon", "train/kl", "val/log_mel_l1", "val/kl", "val/mel_l1",
            "val/stft_distance"} <= set(events.Tags()["scalars"])
    assert all(e.value > 0 for e in events.Scalars("val/stft_distance"))  # voiced through Griffin-Lim


def test_a_changed_stage_config_is_refused_with_the_key_named(mel_stage, root):
    with pytest.raises(ResumeMismatchError, match=re.escape("autoencoder.latent_channels: was 4, now 8")):
        train_autoencoder(compose_config("train", stage_overrides(root, mel_stage["run"], "mel_vae_tiny",
                                                                  "autoencoder.latent_channels=8")))
    ckpt = mel_stage["dir"] / "checkpoints" / "last.ckpt"
    cfg = compose_config("train", stage_overrides(root, mel_stage["run"], "mel_vae_tiny", "stage.trainer.max_steps=9",
                                                  "vocoder.n_iter=8"))
    check_autoencoder_resume(load_checkpoint(ckpt)["audiodiff"]["config"], OmegaConf.to_container(cfg, resolve=True),
                             ckpt)  # length and the validation vocoder may change


@pytest.mark.parametrize("kind", ["mel", "wave"])
@torch.no_grad()
def test_export_loads_the_trained_weights(kind, mel_stage, wave_stage):
    stage_dir = mel_stage["dir"] if kind == "mel" else wave_stage
    ckpt = load_checkpoint(stage_dir / "checkpoints" / "last.ckpt")
    loaded = load_autoencoder(stage_dir / "export")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert not any(hasattr(m, "parametrizations") for m in loaded.modules())  # weight norm folded in
    trained = build_autoencoder(ckpt["audiodiff"]["autoencoder"], inference=False)
    trained.load_state_dict({k[len("autoencoder."):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith("autoencoder.")})
    wav = audio(2, 4000, 7)
    torch.testing.assert_close(loaded.encode(wav).mean, trained.eval().encode(wav).mean, rtol=1e-4, atol=1e-5)
    z = trained.encode(wav).mean
    torch.testing.assert_close(loaded.decode(z), trained.decode(z), rtol=1e-4, atol=1e-5)
    if kind == "wave":
        discriminator_steps = {float(s["step"]) for s in ckpt["optimizer_states"][1]["state"].values()}
        assert ckpt["global_step"] == 3 and discriminator_steps == {2}  # from step 1 on, not counted
        events = EventAccumulator(str(stage_dir / "tensorboard")).Reload()
        assert {"train/loss_d", "train/adv", "train/fm", "train/stft", "val/mel_l1",
                "val/stft_distance"} <= set(events.Tags()["scalars"])


# ---- the representation ---------------------------------------------------------------------------------------------
@torch.no_grad()
def test_representation_shapes_lengths_and_signature():
    mel_rep = AutoencoderRepresentation(mel_vae(4), griffinlim())
    torch.manual_seed(0)
    wave_rep = AutoencoderRepresentation(WaveformVAE(**TINY_WAVE).remove_weight_norm())
    for rep, hop in ((mel_rep, 1024), (wave_rep, 256)):
        assert (rep.sample_rate, rep.channels, rep.latent_channels, rep.frame_rate) == (SR, 1, 4, SR / hop)
        for samples in (8000, 8001, 4097):
            wav = audio(2, samples, 8)
            z = rep.encode(wav)
            assert z.shape == (2, 4, rep.autoencoder.num_latent_frames(samples))
            out = rep.decode(z)
            expected = (z.shape[-1] * 4 - 1) * 256 if rep is mel_rep else z.shape[-1] * 256  # Griffin-Lim: F − 1 hops
            assert out.shape == (2, 1, expected)
            assert rep.decode(torch.zeros(1, 4, rep.num_frames(samples / SR))).shape[-1] >= samples
        # encode is the posterior mean, not a sample: the same clip gives the same latent.
        torch.testing.assert_close(rep.encode(wav), rep.autoencoder.encode(wav).mean, rtol=0, atol=0)
    assert mel_rep.signature() == {"type": "AutoencoderRepresentation", "sample_rate": SR, "channels": 1,
                                   "latent_channels": 4, "frame_rate": SR / 1024, "autoencoder": "mel_vae",
                                   "hop_length": 1024, "parameters": mel_rep.autoencoder.num_parameters()}
    assert wave_rep.signature()["autoencoder"] == "waveform_vae" and wave_rep.signature()["hop_length"] == 256


@torch.no_grad()
def test_statistics_give_unit_variance_latents_and_travel_in_the_state_dict():
    rep = AutoencoderRepresentation(mel_vae(4), griffinlim())
    assert not rep.is_fitted
    batches = [audio(3, 16000, 9), audio(2, 9000, 10)]
    rep.fit_statistics(batches)
    raw = np.concatenate([rep.autoencoder.encode(w).mean.double().numpy().transpose(0, 2, 1).reshape(-1, 4)
                          for w in batches])
    np.testing.assert_allclose(rep.mean.double().numpy(), raw.mean(0), rtol=1e-5, atol=1e-6 * raw.std())
    np.testing.assert_allclose(rep.std.double().numpy(), raw.std(0, ddof=1), rtol=1e-5)
    z = np.concatenate([rep.encode(w).double().numpy().transpose(0, 2, 1).reshape(-1, 4) for w in batches])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, rtol=1e-4)
    state = rep.state_dict()
    assert {"mean", "std", "fitted", "autoencoder_spec", "autoencoder.mel.mean", "autoencoder.encoder.0.weight"} <= set(
        state)
    twin = from_config(rep.autoencoder.config(), griffinlim())  # the architecture alone, as in a diffusion export
    twin.load_state_dict(state)
    wav = audio(1, 8000, 11)
    torch.testing.assert_close(twin.encode(wav), rep.encode(wav), rtol=0, atol=0)


@torch.no_grad()
def test_an_inference_config_rebuilds_either_kind_through_hydra(tmp_path):
    torch.manual_seed(0)
    wave_rep = AutoencoderRepresentation(WaveformVAE(**TINY_WAVE).remove_weight_norm())
    wave_rep.fit_statistics([audio(2, 4096, 12)])
    for name, rep, vocoder in (("wave", wave_rep, None), ("mel", AutoencoderRepresentation(mel_vae(4)), griffinlim())):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"autoencoder": rep.autoencoder.config()}))
        node = inference_config({"_target_": "audiodiff.representations.autoencoder.from_export",
                                 "folder": str(folder), "sample_rate": SR})
        assert node == {"_target_": "audiodiff.representations.autoencoder.from_config",
                        "autoencoder": rep.autoencoder.config(), "sample_rate": SR}
        twin = instantiate(node, vocoder=vocoder)  # Hydra builds the nested autoencoder (weight norm on) first
        assert not any(hasattr(m, "parametrizations") for m in twin.modules())
        twin.load_state_dict(rep.state_dict())
        wav = audio(1, 5000, 13)
        torch.testing.assert_close(twin.encode(wav), rep.encode(wav), rtol=0, atol=0)
    assert inference_config({"_target_": "x.Y", "a": 1}) == {"_target_": "x.Y", "a": 1}


def test_a_different_autoencoder_or_setting_is_refused_naming_both_sides():
    mel_rep = AutoencoderRepresentation(mel_vae(4), griffinlim())
    other = AutoencoderRepresentation(WaveformVAE(**TINY_WAVE).remove_weight_norm())
    with pytest.raises(RuntimeError, match=r"made with a mel_vae autoencoder \(sample_rate 16000, latent_hop 1024, "
                                           r"latent_channels 4, .*but this representation's is a waveform_vae "
                                           r"autoencoder \(sample_rate 16000, latent_hop 256"):
        other.load_state_dict(mel_rep.state_dict())
    with pytest.raises(RuntimeError, match=r"latent_hop 1024.*latent_hop 2048"):
        AutoencoderRepresentation(mel_vae(8), griffinlim()).load_state_dict(mel_rep.state_dict())
    with pytest.raises(ValueError, match="sample_rate 16000, but the configuration asks for sample_rate 24000"):
        AutoencoderRepresentation(mel_vae(4), sample_rate=24000)
    with pytest.raises(ValueError, match="n_fft: configuration 512, autoencoder 1024"):
        AutoencoderRepresentation(mel_vae(4), n_fft=512)
    with pytest.raises(ValueError, match="vocoder .*does not match.*hop_length: representation 256, vocoder 128"):
        AutoencoderRepresentation(mel_vae(4), GriffinLimVocoder(SR, 1024, 128, n_mels=64, f_max=8000.0, power=1.0))
    with pytest.raises(ValueError, match="decodes with its own decoder"):
        AutoencoderRepresentation(WaveformVAE(**TINY_WAVE), griffinlim())
    with pytest.raises(RuntimeError, match="needs a vocoder"):
        AutoencoderRepresentation(mel_vae(4)).decode(torch.zeros(1, 4, 2))


# ---- diffusion on the autoencoder's latents -------------------------------------------------------------------------
def test_a_diffusion_model_trains_on_the_latents_and_its_export_is_self_contained(mel_stage, root, tmp_path):
    folder = tmp_path / "autoencoder_export"  # removed below: the diffusion export must not need it
    shutil.copytree(mel_stage["dir"] / "export", folder)
    run_dir = tmp_path / "diffusion"
    cfg = compose_config("train", ["recipe=debug", "representation=autoencoder", f"representation.folder={folder}",
                                   "autoencoder=mel_vae_tiny", "autoencoder.channels=8",
                                   "autoencoder.latent_channels=4",
                                   f"data.root={root}", f"run_dir={run_dir}", "data.num_workers=0",
                                   "trainer.max_steps=2", "preview.prompts=[]", "vocoder.n_iter=2"])
    train(cfg)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["audiodiff"]["representation"]["autoencoder"] == "mel_vae"
    weights = load_file(str(run_dir / "export" / "model.safetensors"))
    assert weights["representation.fitted"].item() is True
    assert any(k.startswith("representation.autoencoder.decoder.") for k in weights)
    exported = load_file(str(folder / "model.safetensors"))
    for key, value in exported.items():  # the autoencoder is frozen: its weights travel unchanged
        assert torch.equal(weights[f"representation.autoencoder.{key}"], value), key

    config_file = run_dir / "export" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["representation"] = inference_config(config["representation"])
    assert config["representation"]["_target_"] == "audiodiff.representations.autoencoder.from_config"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(folder)
    pipe = AudioDiffusionPipeline.from_pretrained(run_dir / "export")
    rep = pipe.model.representation
    assert isinstance(rep, AutoencoderRepresentation) and rep.is_fitted and rep.autoencoder.is_fitted
    torch.testing.assert_close(rep.std, weights["representation.std"], rtol=0, atol=0)
    out = pipe(["two beeps"], duration=0.3, steps=2, seed=1)
    assert out.audio.shape == (1, 1, 4800) and out.sample_rate == SR
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() > 0

    config["representation"]["autoencoder"]["latent_channels"] = 8  # not the autoencoder the weights were made with
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ModelLoadError, match=r"made with a mel_vae autoencoder \(sample_rate 16000, latent_hop 1024, "
                                             r"latent_channels 4, .*but this representation's is a mel_vae autoencoder "
                                             r"\(sample_rate 16000, latent_hop 1024, latent_channels 8"):
        AudioDiffusionPipeline.from_pretrained(run_dir / "export")


def test_from_export_refuses_a_folder_without_an_autoencoder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        from_export(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"autoencoder": {"_target_": "os.system"}}))
    with pytest.raises(ValueError, match="_target_ one of"):
        from_export(tmp_path)


# ---- stereo ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_a_stereo_representation_encodes_each_channel_with_the_mono_autoencoder():
    torch.manual_seed(0)
    for autoencoder, vocoder in ((mel_vae(4), griffinlim()), (WaveformVAE(**TINY_WAVE).remove_weight_norm(), None)):
        mono = AutoencoderRepresentation(autoencoder, vocoder)
        stereo = AutoencoderRepresentation(autoencoder, vocoder, channels=2)
        assert (stereo.channels, stereo.latent_channels) == (2, 8) and stereo.mean.shape == (4,)
        left, right = audio(2, 8000, 1), audio(2, 8000, 2)
        stereo.fit_statistics([torch.cat([left, right], dim=1)])
        mono.load_state_dict(stereo.state_dict())  # same statistics: the buffers keep the mono shapes
        z = stereo.encode(torch.cat([left, right], dim=1))
        torch.testing.assert_close(z[:, :4], mono.encode(left))
        torch.testing.assert_close(z[:, 4:], mono.encode(right))
        out = stereo.decode(z)
        assert out.shape[:2] == (2, 2)
        torch.testing.assert_close(out[:, 1:], mono.decode(z[:, 4:]))
        with pytest.raises(ValueError, match=r"expected wav \[B, 2, T\] \(2 channel\(s\)\), got \(2, 1, 8000\)"):
            stereo.encode(left)


def test_the_autoencoder_stage_trains_on_each_channel_of_stereo_data(root, tmp_path):
    stage_dir = train_autoencoder(compose_config("train", stage_overrides(root, tmp_path / "run", "mel_vae_tiny",
                                                                          "data.channels=2")))
    ckpt = load_checkpoint(stage_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["state_dict"]["autoencoder.mel.fitted"].item() is True
    rep = instantiate(compose_config("train", ["representation=autoencoder", "autoencoder=mel_vae_tiny",
                                               f"run_dir={tmp_path / 'run'}", "data.channels=2",
                                               "autoencoder.channels=8", "autoencoder.latent_channels=4"]
                                     ).representation)
    assert (rep.channels, rep.latent_channels) == (2, 8)
