"""Stereo through every layer: train a tiny two-channel model on sfx_stereo, export it, generate (API and CLI, with
loudness, sidecars, edits and long form), and refuse channel requests a model cannot honour."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio.loudness import integrated_loudness, normalize_loudness
from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.generate import run as generate
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.callbacks import audio_tags
from audiodiff.training.diffusion.run import train

MONO_EXPORT = Path(__file__).parent / "fixtures" / "export_v0_1" / "model"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx_stereo", root, num_clips=48, workers=1)
    run_dir = tmp_path_factory.mktemp("runs") / "stereo"
    cfg = compose_config("train", ["recipe=debug", f"data.root={root}", "data.corpus=sfx_stereo", "data.channels=2",
                                   f"run_dir={run_dir}"])
    train(cfg)
    return run_dir


def test_the_checkpoint_and_export_describe_a_stereo_mel_model(run):
    config = load_checkpoint(run / "checkpoints" / "last.ckpt")["audiodiff"]["config"]
    assert config["representation"]["channels"] == 2 == config["data"]["channels"]
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export")
    representation = pipe.model.representation
    assert (pipe.channels, representation.latent_channels, representation.n_mels) == (2, 128, 64)
    assert pipe.model.net.in_channels == 128
    assert representation.mean.shape == (64,) and representation.is_fitted  # one set of band statistics
    previews = sorted((run / "previews").glob("step_*/0.wav"))
    assert previews and sf.info(previews[-1]).channels == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0}).Reload()
    assert {"preview/0/left", "preview/0/right"} <= set(events.Tags()["audio"])


def test_pipeline_generates_two_channels_deterministically(run):
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export")
    out = pipe(["two beeps on the left", "a hiss in the middle"], duration=0.5, steps=2, guidance=3.0, seed=7)
    assert out.audio.shape == (2, 2, 8000) and out.sample_rate == 16000
    assert torch.isfinite(out.audio).all() and not torch.equal(out.audio[:, 0], out.audio[:, 1])
    again = pipe(["two beeps on the left", "a hiss in the middle"], duration=0.5, steps=2, guidance=3.0, seed=7)
    assert torch.equal(again.audio, out.audio)


def _generate(run: Path, out: Path, *args: str) -> list[Path]:
    return generate(compose_config("generate", [f"model={run / 'export'}", "steps=2", "duration=0.5", f"out={out}",
                                                *args]))


def test_generate_writes_stereo_files_with_sidecars_at_a_loudness(run, tmp_path):
    (path,) = _generate(run, tmp_path / "out", "prompt=three beeps on the right", "seed=3", "loudness=-20",
                        "channels=2")
    data, sr = sf.read(path)
    assert sr == 16000 and data.shape == (8000, 2)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["channels"] == 2 and meta["sample_rate"] == 16000
    assert meta["loudness"]["target_lufs"] == -20.0
    # The barely trained model may stay below BS.1770's -70 LUFS gate (no gain can measure it up to a target); the
    # normalisation itself meters both channels, as on a panned tone here.
    lufs = meta["loudness"]["lufs"]
    peak = float(np.abs(data).max())
    assert lufs is None or lufs == pytest.approx(-20.0, abs=0.5) or peak == pytest.approx(0.99, abs=0.01)
    tone = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 440)
    panned = torch.stack([0.2 * tone, 0.05 * tone])
    level = normalize_loudness(panned, 16000, target_lufs=-20.0)
    assert integrated_loudness(level, 16000) == pytest.approx(-20.0, abs=0.1)
    torch.testing.assert_close(level / level.abs().max(), panned / panned.abs().max())  # one gain: pan kept


def test_channel_requests_a_model_cannot_honour_are_refused(run, tmp_path):
    with pytest.raises(ValueError, match=r"channels: this model \(.*\) generates 2 channel\(s\) \(stereo\), got "
                                         r"channels=1"):
        _generate(run, tmp_path / "mono", "prompt=a click", "channels=1")
    assert not (tmp_path / "mono").exists()
    mono = AudioDiffusionPipeline.from_pretrained(MONO_EXPORT)
    assert mono.channels == 1
    with pytest.raises(ValueError, match=r"generates 1 channel\(s\) \(mono\), got channels=2; use a model trained "
                                         r"with data.channels=2"):
        mono.check_channels(2)
    mono.check_channels(None), mono.check_channels(1)


def test_edits_and_long_form_keep_both_channels(run, tmp_path):
    t = np.arange(12000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    stereo_clip, mono_clip = tmp_path / "left.wav", tmp_path / "mono.wav"
    sf.write(stereo_clip, np.stack([tone, 0.1 * tone], axis=1), 16000)
    sf.write(mono_clip, tone, 16000)  # a mono input fills both channels
    for clip in (stereo_clip, mono_clip):
        for edit, seconds in (("strength=0.5", 0.75), ("inpaint=[0.25,0.5]", 0.75), ("extend=0.5", 1.25)):
            out = tmp_path / f"{clip.stem}_{edit.split('=')[0]}"
            (path,) = generate(compose_config("generate", [f"model={run / 'export'}", "steps=2",
                                                           "prompt=two beeps on the left", f"audio={clip}", edit,
                                                           f"out={out}"]))
            data, _ = sf.read(path)
            assert data.shape == (int(seconds * 16000), 2)
            if edit.startswith("inpaint"):  # outside the inpainted range the input is kept, channel by channel
                rms = np.sqrt(np.mean(np.square(data[:3000]), axis=0))
                expected_db = 20.0 if clip == stereo_clip else 0.0
                assert 20 * np.log10(rms[0] / rms[1]) == pytest.approx(expected_db, abs=1.0)
    (path,) = generate(compose_config("generate", [f"model={run / 'export'}", "steps=2", "prompt=a rising sweep",
                                                   "long_form=true", "duration=2.5", f"out={tmp_path / 'long'}"]))
    assert sf.read(path)[0].shape == (40000, 2)


def test_tensorboard_gets_one_mono_track_per_channel():
    assert audio_tags("preview/0", 1) == ["preview/0"]
    assert audio_tags("preview/0", 2) == ["preview/0/left", "preview/0/right"]
    assert audio_tags("p", 3) == ["p/ch0", "p/ch1", "p/ch2"]


def test_a_44k_stereo_staged_run_trains_vocoder_cache_and_diffusion(tmp_path):
    """The staged recipe at 44.1 kHz in stereo (recipe=sfx_stereo's mel and data on debug_staged's tiny parts): the
    mono vocoder trains on each channel, the cache holds [128 bands × 2 channels] latents, diffusion reads them."""
    from audiodiff.data.latent_cache import LatentCache
    from audiodiff.training.stages import run_stages

    root = tmp_path / "data"
    ensure_corpus("sfx_stereo", root, num_clips=32, workers=1)
    run_dir = tmp_path / "run"
    command = ["recipe=debug_staged", "mel=stereo_44k", "data.corpus=sfx_stereo", "data.channels=2",
               f"data.root={root}", f"run_dir={run_dir}"]
    assert run_stages(command) == [run_dir / "vocoder", run_dir / "encode", run_dir]
    cache = LatentCache(run_dir / "encode" / "cache")
    assert cache.latent_channels == 256 and cache.index["channels"] == 2
    first = cache.clips("train")[0]
    assert cache.latents(first).shape == (256, first.frames)
    pipe = AudioDiffusionPipeline.from_pretrained(run_dir / "export")
    assert (pipe.sample_rate, pipe.channels) == (44100, 2)
    out = pipe("two beeps on the left", duration=0.5, steps=2)
    assert out.audio.shape == (1, 2, 22050) and torch.isfinite(out.audio).all()
    composed = compose_config("train", ["recipe=sfx_stereo"])
    assert (composed.representation.sample_rate, composed.representation.channels, composed.data.channels) == (
        44100, 2, 2)
    assert composed.stages == ["vocoder", "encode", "diffusion"]


def test_fine_tuning_reads_clips_with_the_exported_models_channels():
    from audiodiff.training.finetune import model_channels

    mel = "audiodiff.representations.mel.MelRepresentation"
    assert model_channels({"_target_": mel, "channels": 2}, 1) == 2
    assert model_channels({"_target_": mel}, 2) == 1  # a 0.1 export: mono
    assert model_channels({"audio_channels": 2, "_target_": "x.Oobleck"}, 1) == 2
    assert model_channels({"_target_": "x.Codec"}, 1) == 1
