"""A tiny configuration through every layer: train, stop, resume, export, generate (API and CLI), bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

import audiodiff
from audiodiff.audio.io import read_tags
from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.generate import exported
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError
from audiodiff.training.diffusion.run import ResumeMismatchError, train


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    run_dir = tmp_path_factory.mktemp("runs") / "debug"
    cfg = compose_config("train", ["recipe=debug", f"data.root={root}", f"run_dir={run_dir}"])
    train(cfg)
    return run_dir


def overrides(run_dir: Path) -> list[str]:
    root = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["audiodiff"]["config"]["data"]["root"]
    return ["recipe=debug", f"data.root={root}", f"run_dir={run_dir}"]


def test_training_writes_checkpoint_with_config_and_export(run):
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert ckpt["audiodiff"]["config"]["name"] == "debug"
    assert ckpt["audiodiff"]["config"]["denoiser"]["channels"] == 16
    assert ckpt["audiodiff"]["representation"]["sample_rate"] == 16000
    assert ckpt["state_dict"]["model.representation.fitted"].item() is True
    assert (run / "export" / "model.safetensors").is_file() and (run / "export" / "config.yaml").is_file()
    assert list((run / "previews").glob("step_*/0.wav")) and list((run / "previews").glob("step_*/0.png"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # the licences of the clips it trained on (the sfx corpus is CC0): in the checkpoint, export.json and the card
    licences = ckpt["audiodiff"]["licenses"]
    assert list(licences) == ["CC0-1.0"] and 0 < licences["CC0-1.0"] <= 48
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["licenses"] == licences and "license_warning" not in info
    assert f"- CC0-1.0: {licences['CC0-1.0']} clips" in (run / "export" / "model_card.md").read_text()


def test_rerun_resumes_instead_of_restarting(run):
    before = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    train(compose_config("train", overrides(run)))  # same command, already at max_steps: nothing to do
    after = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert after["global_step"] == 4
    for key, value in before.items():
        torch.testing.assert_close(after["state_dict"][key], value, msg=key)
    train(compose_config("train", [*overrides(run), "trainer.max_steps=6"]))  # extend the same run
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6


def test_resume_refuses_a_changed_model(run):
    with pytest.raises(ResumeMismatchError, match="denoiser"):
        train(compose_config("train", [*overrides(run), "denoiser.channels=8"]))


def test_pipeline_generates_deterministically(run):
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export")
    out = pipe(["two beeps", "a quiet hiss"], duration=0.5, steps=2, guidance=3.0, seed=7)
    assert out.audio.shape == (2, 1, 8000) and out.sample_rate == 16000
    assert torch.isfinite(out.audio).all()
    again = pipe(["two beeps", "a quiet hiss"], duration=0.5, steps=2, guidance=3.0, seed=7)
    assert torch.equal(again.audio, out.audio)
    # A prompt's latents do not depend on the rest of its batch; another seed gives other latents.
    settings = pipe.settings(2, 3.0, None)
    both = pipe.model.sample_latents(["two beeps", "a quiet hiss"], 20, [7, 8], settings)
    alone = pipe.model.sample_latents(["two beeps"], 20, [7], settings)
    torch.testing.assert_close(alone[0], both[0], atol=1e-4, rtol=1e-4)
    other = pipe.model.sample_latents(["two beeps"], 20, [8], settings)
    assert not torch.equal(other[0], alone[0])


def test_run_directory_and_export_give_the_same_audio(run):
    a = AudioDiffusionPipeline.from_pretrained(run / "export")(["a click"], duration=0.5, steps=2, seed=1)
    b = AudioDiffusionPipeline.from_pretrained(run)(["a click"], duration=0.5, steps=2, seed=1)
    torch.testing.assert_close(a.audio, b.audio)


def test_an_export_loads_without_training_code_or_state(run, tmp_path):
    export = tmp_path / "copy"
    export.mkdir()
    for name in ("config.yaml", "model.safetensors"):  # nothing but the two files, far from the run
        (export / name).write_bytes((run / "export" / name).read_bytes())
    code = ("import sys; from audiodiff.pipeline import AudioDiffusionPipeline as P; "
            f"out = P.from_pretrained({str(export)!r})(['a click'], duration=0.25, steps=2); "
            "assert out.audio.shape == (1, 1, 4000), out.audio.shape; "
            "loaded = [m for m in sys.modules if m.split('.')[0] == 'lightning' or "
            "m.startswith('audiodiff.training')]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kwargs,message", [
    ({"prompts": [""]}, "non-empty text prompt"),
    ({"prompts": []}, "at least one prompt"),
    ({"prompts": ["beep"], "duration": 0.0}, "positive number of seconds"),
    ({"prompts": ["beep"], "duration": 1000.0}, "longer than this model's maximum"),
    ({"prompts": ["beep"], "sampler": "ddim_typo"}, "unknown 'ddim_typo'"),
    ({"prompts": ["beep"], "steps": 0}, "steps"),
])
def test_bad_requests_are_named(run, kwargs, message):
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export")
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_missing_and_incompatible_models_are_named(run, tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        AudioDiffusionPipeline.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model export folder"):
        AudioDiffusionPipeline.from_pretrained(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    config = (run / "export" / "config.yaml").read_text().replace("channels: 16", "channels: 24")
    (broken / "config.yaml").write_text(config)
    (broken / "model.safetensors").write_bytes((run / "export" / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="shape"):
        AudioDiffusionPipeline.from_pretrained(broken)


def test_generate_cli_writes_audio_and_sidecar(run, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "prompt=three short high beeps",
           "seed=3", "steps=2", "duration=0.5", f"out={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == ["three_short_high_beeps_seed3.wav"]
    data, sr = sf.read(wavs[0])
    assert sr == 16000 and len(data) == 8000
    meta = json.loads(wavs[0].with_suffix(".json").read_text())
    full = meta.pop("sampler_settings")
    assert full["name"] == "flow_heun" and full["steps"] == 2 and full["spacing"] == "default"
    mark = meta.pop("watermark")  # on by default: the built-in method and the model's id as its message
    assert mark["method"] == "spectral" and len(mark["message"]) == 4 and len(mark["key"]) == 12
    model_hash, version, created = meta.pop("model_hash"), meta.pop("audiodiff_version"), meta.pop("created")
    assert len(model_hash) == 64 and mark["message"] == model_hash[:4] and version == audiodiff.__version__
    assert created.endswith("+00:00") and created[:2] == "20"
    record = json.loads(read_tags(wavs[0])["comment"])  # the file itself says how it was made
    assert record["model_hash"] == model_hash and record["prompt"] == "three short high beeps"
    assert record["seed"] == 3 and record["sampler_settings"] == full and record["watermark"] == mark
    assert meta | {"model": None} == {"prompt": "three short high beeps", "seed": 3, "sampler": "flow_heun",
                                      "steps": 2, "guidance": 3.0, "duration": 0.5, "sample_rate": 16000,
                                      "channels": 1, "model": None}


def test_generate_cli_watermark_false_writes_unmarked_audio_and_says_so(run, tmp_path):
    clips = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "prompt=rain", "seed=3",
               "steps=2", "duration=1.0", f"watermark={flag}", f"out={out}"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        clips[flag] = (sf.read(out / "rain_seed3.wav")[0], json.loads((out / "rain_seed3.json").read_text()))
    assert clips["false"][1]["watermark"] is False and clips["true"][1]["watermark"]["method"] == "spectral"


def test_generate_cli_takes_negative_prompt_and_sampler_options(run, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "prompt=a click", "seed=1",
           "steps=2", "duration=0.25", "sampler=ddim", "negative_prompt=loud noise",
           "sampler_options={eta: 0.5, spacing: karras, guidance_rescale: 0.7}", f"out={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    meta = json.loads((out / "a_click_seed1.json").read_text())
    assert meta["sampler"] == "ddim"
    assert {k: meta["sampler_settings"][k] for k in ("eta", "spacing", "guidance_rescale")} == {
        "eta": 0.5, "spacing": "karras", "guidance_rescale": 0.7}
    bad = subprocess.run([*cmd[:-2], "sampler_options={churn: 1.0}", f"out={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown sampler option(s) ['churn']" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_generate_cli_writes_nothing_on_bad_input(run, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "prompt=beep", "duration=-1",
           f"out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "duration" in proc.stderr
    assert not out.exists()


class _RunsCode:
    """Unpickling this calls `Path.touch` on a marker: stands in for arbitrary code in a crafted checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(run, tmp_path):
    marker = tmp_path / "code_ran"
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    ckpt["audiodiff"]["payload"] = _RunsCode(marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(crafted)
    with pytest.raises(ModelLoadError, match="export it first"):
        AudioDiffusionPipeline.from_pretrained(crafted)  # the pipeline reads export folders only
    with pytest.raises(ValueError, match="refused to load"):
        exported(crafted)  # the generate command exports a checkpoint first: refused there
    assert not marker.exists()


def test_generate_cli_reads_a_prompt_file_and_writes_flac_at_a_loudness(run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "two beeps", "n": 2}\n'
                       '{"prompt": "a click", "negative_prompt": "hiss", "duration": 0.5, "seed": 40}\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", f"prompts={prompts}", "steps=2",
           "duration=0.25", "format=flac", "loudness=-20", "batch_size=2", f"out={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    assert sorted(p.name for p in out.glob("*.flac")) == ["a_click_seed40.flac", "two_beeps_seed0.flac",
                                                         "two_beeps_seed2.flac"]
    click = json.loads((out / "a_click_seed40.json").read_text())
    assert click["negative_prompt"] == "hiss" and click["duration"] == 0.5
    assert click["loudness"]["target_lufs"] == -20.0
    data, sr = sf.read(out / "a_click_seed40.flac")
    assert len(data) == 8000 and sr == 16000
    for name in ("two_beeps_seed0", "two_beeps_seed2"):
        meta = json.loads((out / f"{name}.json").read_text())
        peak = float(abs(sf.read(out / f"{name}.flac")[0]).max())
        # Loudness reached, unless the 0.99 peak limit had to win, or the (barely trained) model gave near-silence
        # below BS.1770's -70 LUFS gate, which no gain can measure up to a target.
        lufs = meta["loudness"]["lufs"]
        assert lufs is None or lufs == pytest.approx(-20.0, abs=0.5) or peak == pytest.approx(0.99, abs=0.01)


def test_generate_cli_edits_an_input_clip(run, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.3 * torch.sin(torch.arange(12000) / 16000 * 2 * torch.pi * 440).numpy(), 16000)
    base = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "prompt=two beeps", "steps=2",
            f"audio={clip}"]
    for edit, seconds in (("strength=0.5", 0.75), ("inpaint=[0.25,0.5]", 0.75), ("extend=0.5", 1.25)):
        out = tmp_path / edit.split("=")[0]
        subprocess.run([*base, edit, f"out={out}"], check=True, capture_output=True, text=True, timeout=120)
        data, _ = sf.read(out / "two_beeps_seed0.wav")
        meta = json.loads((out / "two_beeps_seed0.json").read_text())
        assert len(data) == int(seconds * 16000) and meta["audio"] == str(clip)
        assert meta["mode"] == {"strength": "variation", "inpaint": "inpaint", "extend": "continuation"}[
            edit.split("=")[0]]
    out = tmp_path / "long"
    subprocess.run([*base[:-1], "long_form=true", "duration=2.5", f"out={out}"], check=True, capture_output=True,
                   text=True, timeout=120)
    meta = json.loads((out / "two_beeps_seed0.json").read_text())
    assert meta["mode"] == "long_form" and meta["joins"] and len(sf.read(out / "two_beeps_seed0.wav")[0]) == 40000


@pytest.mark.parametrize("args, message", [
    (["prompts={bad}"], "bad.jsonl:2: field 'duration': expected number, got 'long'"),
    (["prompt=x", "strength=0.5"], "strength= edits an input clip: give audio=<file>"),
    (["prompt=x", "long_form=true"], "long_form=true needs duration=<seconds>"),
    (["prompt=x", "format=mp3"], "format: expected wav or flac, got 'mp3'"),
    (["prompt=x", "loudness=5"], "loudness: expected a target between -70 and 0 LUFS, got 5"),
])
def test_generate_cli_names_bad_requests_and_writes_nothing(run, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a click"}\n{"prompt": "two beeps", "duration": "long"}\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "audiodiff.generate", f"model={run / 'export'}", "steps=2",
           *[a.format(bad=bad) for a in args], f"out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert not out.exists()
