"""CodecRepresentation: continuous EnCodec / DAC latents, checked against the codecs' own encoder and decoder, through
training, export and loading with tiny randomly initialised codecs saved locally."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import DictConfig
from safetensors.torch import load_file
from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel, PreTrainedModel

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError
from audiodiff.representations.codec import CodecRepresentation
from audiodiff.training.diffusion.run import train

KINDS = ("encodec", "dac")
# Hop 32 and 8 (EnCodec) / 16 (DAC) latent channels: a few thousand parameters each.
TINY = {
    "encodec": dict(num_filters=4, upsampling_ratios=[8, 4], hidden_size=8, num_lstm_layers=1, codebook_size=16,
                    target_bandwidths=[1.0], kernel_size=3, last_kernel_size=3),
    "dac": dict(encoder_hidden_size=4, downsampling_ratios=[4, 8], decoder_hidden_size=16, n_codebooks=2,
                codebook_size=16, codebook_dim=4),
}


def make_codec(kind: str, sample_rate: int = 16000, **changes) -> PreTrainedModel:
    torch.manual_seed(0)
    settings = {**TINY[kind], **changes, "sampling_rate": sample_rate}
    model = EncodecModel(EncodecConfig(**settings)) if kind == "encodec" else DacModel(DacConfig(**settings))
    return model.eval()


def save_codec(kind: str, path: Path, **changes) -> PreTrainedModel:
    model = make_codec(kind, **changes)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module", params=KINDS)
def codec(request, tmp_path_factory) -> tuple[str, PreTrainedModel, Path]:
    """(kind, the codec model, its save_pretrained folder)."""
    path = tmp_path_factory.mktemp(request.param) / "codec"
    return request.param, save_codec(request.param, path), path


def audio(batch: int, samples: int, seed: int, channels: int = 1) -> torch.Tensor:
    return 0.3 * torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_shapes_frame_rate_and_signature(codec):
    kind, model, path = codec
    rep = CodecRepresentation(kind, str(path))
    hop = math.prod(TINY[kind]["upsampling_ratios" if kind == "encodec" else "downsampling_ratios"])
    assert (rep.sample_rate, rep.channels, rep.hop_length) == (16000, 1, hop)
    assert rep.latent_channels == model.config.hidden_size
    assert rep.frame_rate == 16000 / hop
    for samples in (40 * hop, 40 * hop + 1, 41 * hop - 1):
        z = rep.encode(audio(2, samples, 0))
        assert z.shape == (2, rep.latent_channels, math.ceil(samples / hop))
        assert rep.decode(z).shape == (2, 1, z.shape[-1] * hop)
    assert rep.num_frames(0.1) == math.ceil(1600 / hop) and rep.num_frames(0.1) * hop >= 1600
    sig = rep.signature()
    assert sig | {"codec": None} == {"type": "CodecRepresentation", "sample_rate": 16000, "channels": 1,
                                     "latent_channels": rep.latent_channels, "frame_rate": 16000 / hop,
                                     "kind": kind, "codec": None, "hop_length": hop}
    assert sig["codec"] == str(path)


@torch.no_grad()
def test_round_trip_is_the_codecs_continuous_path(codec):
    kind, model, path = codec
    rep = CodecRepresentation(kind, str(path))
    hop = rep.hop_length
    wav = audio(2, 50 * hop, 1)
    # Unfitted statistics (mean 0, std 1): exactly the codec's decoder(encoder(x)), no quantiser in between.
    assert torch.equal(rep.encode(wav), model.encoder(wav))
    assert torch.equal(rep.decode(rep.encode(wav)), model.decoder(model.encoder(wav)))
    # A length off the hop is zero-padded to the next multiple before encoding.
    short = wav[..., : 49 * hop + 5]
    padded = torch.nn.functional.pad(short, (0, hop - 5))
    assert torch.equal(rep.decode(rep.encode(short)), model.decoder(model.encoder(padded)))
    # Fitted statistics scale the latent and are undone before decoding.
    rep.fit_statistics([audio(2, 50 * hop, 2)])
    expected = (model.encoder(wav) - rep.mean[:, None]) / rep.std[:, None]
    torch.testing.assert_close(rep.encode(wav), expected, rtol=0, atol=0)
    reference = model.decoder(model.encoder(wav))
    torch.testing.assert_close(rep.decode(rep.encode(wav)), reference, rtol=1e-4,
                               atol=1e-4 * float(reference.abs().max()))


@torch.no_grad()
def test_statistics_give_unit_variance_latents_on_the_fitting_data(codec):
    kind, model, path = codec
    rep = CodecRepresentation(kind, str(path))
    assert not rep.is_fitted
    hop = rep.hop_length
    batches = [audio(3, 60 * hop, 3), audio(2, 25 * hop, 4)]  # batches of other sizes and lengths
    rep.fit_statistics(batches)
    assert rep.is_fitted
    # Reference: numpy float64 statistics of the codec's own encoder output over every frame.
    raw = np.concatenate([model.encoder(w).double().numpy().transpose(0, 2, 1).reshape(-1, rep.latent_channels)
                          for w in batches])
    np.testing.assert_allclose(rep.mean.double().numpy(), raw.mean(0), rtol=1e-5, atol=1e-6 * raw.std())
    np.testing.assert_allclose(rep.std.double().numpy(), raw.std(0, ddof=1), rtol=1e-5)
    z = np.concatenate([rep.encode(w).double().numpy().transpose(0, 2, 1).reshape(-1, rep.latent_channels)
                        for w in batches])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, rtol=1e-4)


@torch.no_grad()
def test_codec_weights_stay_out_of_the_state_dict_but_follow_the_module(codec):
    kind, model, path = codec
    rep = CodecRepresentation(kind, str(path))
    assert list(rep.state_dict()) == ["mean", "std", "fitted", "codec_spec"]
    assert list(rep.parameters()) == []
    assert all(not p.requires_grad for p in rep.codec.parameters())
    rep.train()
    assert not rep.codec.training and not any(m.training for m in rep.codec.modules())
    rep.to(torch.float64)  # a dtype cast reaches the codec the way a device move does
    assert {p.dtype for p in rep.codec.parameters()} == {torch.float64} and rep.mean.dtype == torch.float64
    wav = audio(1, 20 * rep.hop_length, 5)
    torch.testing.assert_close(rep.decode(rep.encode(wav)).float(), model.decoder(model.encoder(wav)),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_cuda_matches_cpu(codec):
    kind, model, path = codec
    rep = CodecRepresentation(kind, str(path))
    wav = audio(2, 30 * rep.hop_length, 6)
    on_cpu = rep.decode(rep.encode(wav))
    rep.cuda()
    assert {p.device.type for p in rep.codec.parameters()} == {"cuda"}
    on_gpu = rep.decode(rep.encode(wav.cuda()))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-3 * float(on_cpu.abs().max()))


def test_refuses_what_does_not_fit(tmp_path):
    encodec, dac = tmp_path / "encodec", tmp_path / "dac"
    save_codec("encodec", encodec)
    save_codec("dac", dac)
    with pytest.raises(ValueError, match="sample_rate 16000.*sample_rate 24000"):
        CodecRepresentation("encodec", str(encodec), sample_rate=24000)
    with pytest.raises(ValueError, match="channels 1.*channels 2"):
        CodecRepresentation("dac", str(dac), channels=2)
    with pytest.raises(ValueError, match="'dac' checkpoint.*kind is 'encodec'"):
        CodecRepresentation("encodec", str(dac))
    with pytest.raises(ValueError, match="vocoder"):
        CodecRepresentation("dac", str(dac), vocoder=torch.nn.Identity())
    with pytest.raises(FileNotFoundError, match="no such folder"):
        CodecRepresentation("dac", str(tmp_path / "nowhere"))
    save_codec("encodec", tmp_path / "normalised", normalize=True)
    with pytest.raises(ValueError, match="normalize"):
        CodecRepresentation("encodec", str(tmp_path / "normalised"))
    rep = CodecRepresentation("encodec", str(encodec))
    with pytest.raises(ValueError, match=r"expected wav \[B, 1, T\].*\(2, 2, 640\)"):
        rep.encode(torch.zeros(2, 2, 640))
    with pytest.raises(ValueError, match=r"expected z \[B, 8, L\]"):
        rep.decode(torch.zeros(2, 16, 20))


# ---- through training, export and loading ----------------------------------------------------------------------
def run_config(kind: str, codec_path: Path, data_root: Path, run_dir: Path) -> DictConfig:
    cfg = compose_config("train", ["recipe=debug", f"representation={kind}", "vocoder=none",
                                   f"representation.name_or_path={codec_path}", "representation.sample_rate=16000",
                                   f"data.root={data_root}", f"run_dir={run_dir}", "trainer.max_steps=2",
                                   "preview.prompts=[]"])
    assert cfg.vocoder is None  # vocoder=none: the codec decodes its own latents
    return cfg


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=8, workers=1)
    return root


@pytest.fixture(scope="module")
def run(codec, data_root) -> Path:
    kind, _, path = codec
    run_dir = path.parent / "run"
    train(run_config(kind, path, data_root, run_dir))
    return run_dir


def test_diffusion_model_trains_exports_and_generates(codec, run):
    kind, model, path = codec
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["audiodiff"]["representation"]["kind"] == kind
    assert ckpt["state_dict"]["model.representation.fitted"].item() is True
    # Only the latent statistics and the codec's description travel; the codec loads from its folder.
    weights = load_file(str(run / "export" / "model.safetensors"))
    assert sorted(k for k in weights if not k.startswith("net.")) == [
        "representation.codec_spec", "representation.fitted", "representation.mean", "representation.std"]
    assert not any(k.startswith(("model.representation.codec.", "model.representation._codec")) for k in
                   ckpt["state_dict"])
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export", watermark=False)  # the decoder's own output
    rep = pipe.model.representation
    assert isinstance(rep, CodecRepresentation) and rep.is_fitted
    torch.testing.assert_close(rep.std, weights["representation.std"], rtol=0, atol=0)
    out = pipe(["two beeps"], duration=0.3, steps=2, seed=1)
    assert out.audio.shape == (1, 1, 4800) and out.sample_rate == 16000
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() > 0
    # The generated latents are decoded by the codec's own decoder.
    settings = pipe.settings(2, None, None)
    z = pipe.model.sample_latents(["two beeps"], rep.num_frames(0.3), [1], settings)
    with torch.no_grad():
        expected = model.decoder(z * weights["representation.std"][:, None] + weights["representation.mean"][:, None])
    torch.testing.assert_close(out.audio, expected[..., :4800], rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def swap_codec(export: Path, tmp_path: Path, kind: str, **changes) -> Path:
    """A copy of `export` whose config names another codec (as if the codec's folder had been replaced)."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    other = tmp_path / "other_codec"
    save_codec(kind, other, **changes)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["representation"]["name_or_path"] = str(other)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return copy


def test_export_refuses_another_sample_rate(codec, run, tmp_path):
    kind = codec[0]
    export = swap_codec(run / "export", tmp_path, kind, sample_rate=24000)
    with pytest.raises(ModelLoadError, match="has sample_rate 24000, but the configuration asks for sample_rate 16000"):
        AudioDiffusionPipeline.from_pretrained(export)


def test_export_refuses_another_latent_size(codec, run, tmp_path):
    kind, model, _ = codec
    width = "hidden_size" if kind == "encodec" else "encoder_hidden_size"
    export = swap_codec(run / "export", tmp_path, kind, **{width: 2 * TINY[kind][width]})
    d = model.config.hidden_size
    with pytest.raises(ModelLoadError, match=f"made with a codec of .*latent_channels {d}, but the codec loaded now "
                                             f"\\('.*other_codec'\\) has .*latent_channels {2 * d}"):
        AudioDiffusionPipeline.from_pretrained(export)


def test_export_refuses_another_hop(codec, run, tmp_path):
    kind = codec[0]
    ratios = "upsampling_ratios" if kind == "encodec" else "downsampling_ratios"
    export = swap_codec(run / "export", tmp_path, kind, **{ratios: [4, 4]})
    with pytest.raises(ModelLoadError, match="hop_length 32.*hop_length 16"):
        AudioDiffusionPipeline.from_pretrained(export)
