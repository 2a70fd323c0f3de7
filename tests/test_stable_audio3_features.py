"""Every audiodiff feature on a converted (tiny, random) Stable Audio 3 model, which is stereo and samples the
length asked for: all samplers, CFG with negative prompts, audio-to-audio, inpainting (the trained mask input),
continuation, long form, the generate command's files and sidecars, the web page, LoRA fine-tuning through
`recipe=finetune`, and evaluation."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

pytest.importorskip("diffusers")
from audiodiff.diffusion.samplers import SAMPLERS  # noqa: E402
from audiodiff.models.stable_audio3_convert import convert  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402
from audiodiff.web.server import Studio  # noqa: E402
from tests import stable_audio3_tiny as tiny  # noqa: E402
from tests.test_finetune_stable_audio import clips  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = tiny.SAMPLE_RATE


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sa3_features")
    tiny.save_diffusers_pipeline(root / "src")
    return convert(root / "src", root / "export")


@pytest.fixture(scope="module")
def pipe(folder: Path) -> AudioDiffusionPipeline:
    return AudioDiffusionPipeline.from_pretrained(folder)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_gives_stereo_of_the_length_asked(pipe, sampler: str):
    out = pipe(["a dog barks", "rain on the roof"], duration=0.7, steps=3, sampler=sampler, guidance=3.0,
               negative_prompts="low quality noise")
    assert out.audio.shape == (2, 2, 112) and torch.isfinite(out.audio).all()


def test_guidance_one_is_the_conditional_model(pipe):
    a = pipe(["a dog barks"], duration=0.5, steps=3, guidance=1.0, seed=2).audio
    b = pipe(["a dog barks"], duration=0.5, steps=3, guidance=1.0, seed=2, negative_prompts="loud noise").audio
    assert torch.equal(a, b)


def test_edits_keep_both_channels(pipe):
    clip = pipe(["a dog barks"], duration=1.2, steps=2).audio[0]
    assert clip.shape == (2, 192)
    assert pipe.variation(clip, ["soft rain"], strength=0.5, steps=4).audio.shape == (1, 2, 192)
    inpainted = pipe.inpaint(clip, ["soft rain"], 0.4, 0.8, steps=2).audio
    assert inpainted.shape == (1, 2, 192) and not torch.equal(inpainted, clip[None])
    window = pipe.model.duration
    assert pipe.continuation(clip, ["soft rain"], 1.0, context=0.5, steps=2).audio.shape == (1, 2, 352)
    assert pipe.long_form(["soft rain"], window + 2.0, steps=2).audio.shape == (1, 2, int((window + 2.0) * RATE))
    with pytest.raises(ValueError, match="takes 2 channel"):
        pipe.variation(clip[:1], ["soft rain"])


def test_requests_up_to_the_duration_embedding_range(pipe):
    assert pipe.model.max_duration == 30.0  # the tiny duration embedder's max_val
    with pytest.raises(ValueError, match="longer than this model's maximum"):
        pipe(["a dog barks"], duration=31.0, steps=1)


def test_generate_command_writes_stereo_files_and_sidecars(folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={folder}", "prompt=a dog barks", "steps=2",
           "duration=0.5", "n=2", f"out={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    data, rate = sf.read(wavs[0])
    assert rate == RATE and data.shape == (80, 2)
    meta = json.loads(wavs[0].with_suffix(".json").read_text())
    assert meta["channels"] == 2 and meta["sampler"] == "pingpong"


def test_web_page_result_is_stereo(pipe):
    studio = Studio(pipe)
    reply = studio.generate({"prompt": "a dog barks", "seed": 1, "steps": 2, "duration": 1.0})
    result = studio.result(reply["id"])
    data, rate = sf.read(io.BytesIO(result.wav))
    assert rate == RATE and data.shape == (160, 2) and reply["meta"]["channels"] == 2
    assert result.png


def test_lora_fine_tuning_lowers_the_loss_and_exports(folder: Path, tmp_path: Path):
    from audiodiff.training.stages import run_stages
    from tests.test_finetune_stable_audio import CAPTION, fixed_loss

    plain = AudioDiffusionPipeline.from_pretrained(folder)
    manifest = clips(tmp_path / "clips", plain.sample_rate, 2.0)
    run_stages(["recipe=finetune", f"init={folder}", "data=manifest", f"data.manifest={manifest}",
                "finetune.segment_seconds=2.0", "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=30",
                "trainer.val_check_interval=30", "trainer.limit_val_batches=1", "task.warmup_steps=2",
                "task.ema_decay=0.5", "checkpoint_every=30", "preview.prompts=[]", "optim.lr=3e-3",
                "finetune=lora", "finetune.rank=4", f"run_dir={tmp_path / 'run'}"])
    export = tmp_path / "run" / "export"
    assert (export / "adapter.safetensors").exists()
    tuned = AudioDiffusionPipeline.from_pretrained(export)
    out = tuned([CAPTION], duration=0.5, steps=2)
    assert out.audio.shape == (1, 2, 80) and torch.isfinite(out.audio).all()
    before, after = fixed_loss(plain, manifest), fixed_loss(tuned, manifest)
    print(f"lora: loss on the clips {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before


def test_evaluation_runs_on_a_stereo_model(tmp_path: Path):
    """`audiodiff.evaluate`'s run on a converted Stable Audio 3 model at 16 kHz: attributes read the downmix."""
    from audiodiff.benchmarks import ensure_corpus
    from audiodiff.evaluation.run import EvalSettings, evaluate_model
    from tests.test_stable_audio_features import _BandEnergies

    root = tmp_path / "data"
    ensure_corpus("sfx", root, num_clips=24, workers=1)
    vae = dict(tiny.VAE, patch_size=64, sampling_rate=16000)
    tiny.save_diffusers_pipeline(tmp_path / "src", vae=vae)
    pipe = AudioDiffusionPipeline.from_pretrained(tmp_path / "src")
    settings = EvalSettings(corpus="sfx", root=str(root), n=2, steps=2, batch_size=2, n_boot=5,
                            cache=str(tmp_path / "cache"))
    report = evaluate_model(pipe, settings, tmp_path / "eval", {"bands": _BandEnergies()})
    assert len(report["per_prompt"]) == 2 and "attribute/mean" in report["summary"]
    data, rate = sf.read(tmp_path / "eval" / report["per_prompt"][0]["file"])
    assert rate == 16000 and data.shape[1] == 2


def test_the_parts_are_selectable_from_hydra():
    """A training configuration can choose every Stable Audio 3 part by its config group (tiny sizes here)."""
    from audiodiff.config import compose_config
    from audiodiff.models.build import build_model

    cfg = compose_config("train", [
        "recipe=debug", "representation=same", "vocoder=none", "denoiser=stable_audio3_dit", "timing=stable_audio3",
        "diffusion=flow_v", "sampler=stable_audio3", "data.segment_seconds=0.05", "representation.patch_size=8",
        "representation.channels=8", "representation.channel_multiples=[2]", "representation.strides=[4]",
        "representation.depths=[1]", "representation.latent_channels=8", "representation.head_dim=8",
        "denoiser.width=32", "denoiser.depth=1", "denoiser.heads=2", "denoiser.time_features=16",
        "denoiser.memory_tokens=2"])
    model = build_model(cfg)
    assert type(model.net).__name__ == "StableAudio3DiT" and model.net.context_dim == model.text_encoder.dim
    assert model.sampler.name == "pingpong" and model.sampler.spacing == "logsnr"
    assert not model.fixed_window and model.max_duration == 384.0
    wav = model.generate(["two beeps"], duration=0.1, settings=model.sampler.__class__(name="pingpong", steps=2,
                                                                                         guidance=3.0))
    assert wav.shape == (1, 2, 4410) and torch.isfinite(wav).all()
