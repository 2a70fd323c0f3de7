"""Every inference feature on a converted (tiny, random) Stable Audio Open model, which is stereo: all samplers,
CFG with negative prompts, audio-to-audio, inpainting, continuation, long form, n variations, the generate command's
stereo files and sidecars, and the web page's per-channel spectrogram."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from PIL import Image

pytest.importorskip("diffusers")
import stable_audio_tiny as tiny  # noqa: E402

from audiodiff.diffusion.samplers import SAMPLERS  # noqa: E402
from audiodiff.models.stable_audio_convert import convert  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402
from audiodiff.web.server import SPECTROGRAM_GAP, Studio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = tiny.SAMPLE_RATE


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sao_features")
    tiny.save_diffusers_pipeline(root / "src")
    return convert(root / "src", root / "export")


@pytest.fixture(scope="module")
def pipe(folder: Path) -> AudioDiffusionPipeline:
    return AudioDiffusionPipeline.from_pretrained(folder)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_gives_stereo(pipe, sampler: str):
    out = pipe(["a dog barks", "rain on the roof"], duration=0.1, steps=3, sampler=sampler,
               negative_prompts="low quality noise")
    assert out.audio.shape == (2, 2, 100) and torch.isfinite(out.audio).all()


def test_edits_keep_both_channels(pipe):
    clip = pipe(["a dog barks"], duration=0.12, steps=2).audio[0]
    assert clip.shape == (2, 120)
    assert pipe.variation(clip, ["soft rain"], strength=0.5, steps=4).audio.shape == (1, 2, 120)
    inpainted = pipe.inpaint(clip, ["soft rain"], 0.04, 0.08, crossfade=0.008, steps=2).audio
    assert inpainted.shape == (1, 2, 120)
    assert pipe.continuation(clip, ["soft rain"], 0.1, crossfade=0.008, steps=2).audio.shape == (1, 2, 220)
    assert pipe.long_form(["soft rain"], 0.3, crossfade=0.008, steps=2).audio.shape == (1, 2, 300)
    with pytest.raises(ValueError, match="takes 2 channel"):
        pipe.variation(clip[:1], ["soft rain"])


def test_generate_command_writes_stereo_files_and_sidecars(folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={folder}", "prompt=a dog barks", "steps=2",
           "duration=0.1", "n=2", "loudness=-20", f"out={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == ["a_dog_barks_seed0.wav", "a_dog_barks_seed1.wav"]
    data, rate = sf.read(wavs[0])
    assert rate == RATE and data.shape == (100, 2)
    meta = json.loads(wavs[0].with_suffix(".json").read_text())
    assert meta["channels"] == 2 and meta["sample_rate"] == RATE and meta["sampler"] == "dpmpp_2m_sde"
    assert meta["loudness"]["target_lufs"] == -20.0


def test_web_page_result_is_stereo_with_a_spectrogram_per_channel(pipe):
    studio = Studio(pipe)
    reply = studio.generate({"prompt": "a dog barks", "seed": 1, "steps": 2, "duration": 0.1})
    result = studio.result(reply["id"])
    data, rate = sf.read(io.BytesIO(result.wav))
    assert rate == RATE and data.shape == (100, 2)
    assert reply["meta"]["channels"] == 2
    image = Image.open(io.BytesIO(result.png))
    assert image.height == 2 * 160 + SPECTROGRAM_GAP  # two 80-band spectrograms at 2 pixels per band


def test_audio_to_audio_encodes_a_posterior_sample(pipe, monkeypatch):
    """Stable Audio's audio-to-audio starts from a posterior sample of the input, seeded per prompt."""
    rep = pipe.model.representation
    drawn = []
    sample = rep.encode_sample

    def spy(wav, generator=None):
        drawn.append(generator.initial_seed())
        return sample(wav, generator)

    monkeypatch.setattr(rep, "encode_sample", spy)
    clip = torch.randn(2, 120) * 0.1
    a = pipe.variation(clip, ["soft rain", "a dog barks"], strength=0.3, steps=4, seed=5).audio
    b = pipe.variation(clip, ["soft rain", "a dog barks"], strength=0.3, steps=4, seed=5).audio
    assert torch.equal(a, b) and len(set(drawn)) == 2 and 5 not in drawn  # apart from the diffusion noise's seed
    mean = rep.encode(clip[None])
    assert not torch.allclose(sample(clip[None], torch.Generator().manual_seed(1)), mean)


def test_the_parts_are_selectable_from_hydra():
    """A training configuration can choose every Stable Audio part by its config group (tiny sizes here)."""
    from audiodiff.config import compose_config
    from audiodiff.models.build import build_model

    cfg = compose_config("train", [
        "recipe=debug", "representation=oobleck", "vocoder=none", "denoiser=stable_audio_dit", "timing=stable_audio",
        "diffusion=v_cosine", "sampler=stable_audio", "data.segment_seconds=0.05",
        "representation.channels=8", "representation.latent_channels=4", "representation.decoder_channels=4",
        "representation.strides=[4,8]", "representation.channel_multiples=[1,2]",
        "denoiser.width=64", "denoiser.depth=1", "denoiser.heads=1", "denoiser.kv_heads=1",
        "denoiser.time_features=16", "timing.width=32"])
    model = build_model(cfg)
    assert type(model.net).__name__ == "StableAudioDiT" and model.net.context_dim == 32
    assert model.timing.text_projection.in_features == model.text_encoder.dim  # the text encoder's width
    assert model.sampler.name == "dpmpp_2m_sde" and model.sampler.guidance == 7.0  # (steps: the debug recipe's)
    wav = model.generate(["two beeps"], settings=model.sampler.__class__(name="dpmpp_2m_sde", steps=2))
    assert wav.shape == (1, 2, round(0.05 * 44100)) and torch.isfinite(wav).all()


def test_evaluation_runs_on_a_stereo_model(tmp_path: Path):
    """`audiodiff.evaluate`'s run on a converted stereo model at 16 kHz (1 s window): attributes read the downmix."""
    from audiodiff.benchmarks import ensure_corpus
    from audiodiff.evaluation.run import EvalSettings, evaluate_model

    root = tmp_path / "data"
    ensure_corpus("sfx", root, num_clips=24, workers=1)
    vae = dict(tiny.VAE, downsampling_ratios=[4, 8], sampling_rate=16000)
    tiny.save_diffusers_pipeline(tmp_path / "src", dit=dict(tiny.DIT, sample_size=500), vae=vae)
    pipe = AudioDiffusionPipeline.from_pretrained(tmp_path / "src")
    settings = EvalSettings(corpus="sfx", root=str(root), n=2, steps=2, batch_size=2, n_boot=5,
                            cache=str(tmp_path / "cache"))
    report = evaluate_model(pipe, settings, tmp_path / "eval", {"bands": _BandEnergies()})
    assert len(report["per_prompt"]) == 2 and "attribute/mean" in report["summary"]
    data, rate = sf.read(tmp_path / "eval" / report["per_prompt"][0]["file"])
    assert rate == 16000 and data.shape == (16000, 2)


class _BandEnergies:
    """A deterministic stand-in embedder (as in test_evaluate): mean log energy in 16 bands of the downmix."""

    id = "band-energies-v1"
    sample_rate = 16000

    def embed(self, wavs, sample_rate):
        out = []
        for w in wavs:
            spec = torch.stft(w.mean(0), 512, window=torch.hann_window(512), return_complex=True).abs()
            out.append(torch.log(spec[:256].reshape(16, 16, -1).mean(dim=(1, 2)) + 1e-5))
        return torch.stack(out)
