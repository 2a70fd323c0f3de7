"""Few-step students (stage=distill init=TEACHER): the stage runs for a U-Net, a DiT and a converted Stable Audio Open
model (tiny, random weights), the student exports with its few-step guidance-free sampler and loads like any model,
its 2-step output approaches the teacher's many-step guided output, and what the method cannot serve is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_finetune import make_base

from audiodiff.diffusion.objectives import FlowMatching
from audiodiff.models.model import SamplerSettings
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.distill import (
    DistillError,
    DistillSettings,
    check_teacher,
    distill,
    straight_points,
    student_times,
)
from audiodiff.training.stages import run_stages

CAPTION = "a rising chirp"


def captions(folder: Path, count: int = 4) -> Path:
    """A manifest whose captions the stage reads (the audio is never opened)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f'{{"audio": "clip{i}.wav", "caption": "{CAPTION}"}}\n' for i in range(count))
    (folder / "manifest.jsonl").write_text(lines)
    return folder / "manifest.jsonl"


def run_distill(teacher: Path, tmp_path: Path, *extra: str) -> Path:
    run_dir = tmp_path / "student"
    run_stages(["recipe=debug", "stages=[distill]", "stage=distill", f"init={teacher}", "data=manifest",
                f"data.manifest={captions(tmp_path / 'clips')}", f"run_dir={run_dir}", "stage.trajectories=4",
                "stage.teacher_batch=4", "stage.teacher_steps=4", "stage.batch_size=4", "stage.max_steps=3",
                "stage.warmup_steps=1", *extra])
    return run_dir / "export"


@pytest.mark.parametrize("denoiser", ["unet1d_tiny", "dit_tiny"])
def test_stage_exports_a_student_that_loads(tmp_path: Path, denoiser: str) -> None:
    export = run_distill(make_base(tmp_path / "teacher", denoiser), tmp_path)
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    sampler = pipe.model.sampler
    assert (sampler.name, sampler.steps, sampler.guidance, sampler.spacing) == ("flow_euler", 4, 1.0, "uniform")
    assert (export / "teacher_samples.safetensors").exists() is False  # the samples stay in the run directory
    out = pipe([CAPTION], seed=0)
    assert out.audio.shape[0] == 1 and torch.isfinite(out.audio).all()
    from audiodiff.models.export_format import read_info

    info = read_info(export)
    assert info["distilled"]["guidance"] == 3.0 and info["distilled"]["steps"] == [1, 2, 4, 8]


def test_converted_stable_audio_open_distils(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    pytest.importorskip("torchsde")
    import stable_audio_tiny as tiny

    from audiodiff.models.stable_audio_convert import convert

    tiny.save_diffusers_pipeline(tmp_path / "src")
    teacher = convert(tmp_path / "src", tmp_path / "teacher")
    export = run_distill(teacher, tmp_path)
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    assert (pipe.model.sampler.name, pipe.model.sampler.guidance) == ("flow_euler", 1.0)
    out = pipe([CAPTION], seed=0)
    assert torch.isfinite(out.audio).all()


def test_converted_stable_audio_3_distils_and_its_few_step_release_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from audiodiff.models.stable_audio3_convert import convert
    from tests import stable_audio3_tiny as tiny

    tiny.save_diffusers_pipeline(tmp_path / "base_src", seed=1, stochastic=False, num_train_timesteps=1000)
    export = run_distill(convert(tmp_path / "base_src", tmp_path / "base"), tmp_path / "base_run")
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    assert (pipe.model.sampler.name, pipe.model.sampler.guidance) == ("flow_euler", 1.0)
    assert torch.isfinite(pipe([CAPTION], seed=0, duration=1.0).audio).all()
    tiny.save_diffusers_pipeline(tmp_path / "released_src", seed=0)
    with pytest.raises(DistillError, match="sampler.name='pingpong'"):
        run_distill(convert(tmp_path / "released_src", tmp_path / "released"), tmp_path / "released_run")


@pytest.mark.parametrize("denoiser", ["unet1d_tiny", "dit_tiny"])
def test_student_two_steps_approach_the_guided_teacher(tmp_path: Path, denoiser: str) -> None:
    """Toy problem with a known answer: the teacher's 16-step guided endpoints of the training starts. After
    distillation the 2-step student (guidance 1) lands much closer to them than the teacher does in 2 steps."""
    pipe = AudioDiffusionPipeline.from_pretrained(make_base(tmp_path / "teacher", denoiser), watermark=False)
    model = pipe.model
    n = 8
    settings = DistillSettings(steps=(1, 2), default_steps=2, trajectories=n, teacher_batch=n, batch_size=n,
                               max_steps=100, lr=2e-3, warmup_steps=5, ema_decay=0.0)
    frames = model.representation.num_frames(model.duration)
    seeds = list(range(n))  # distill(seed=0) draws trajectory i from seed i

    def error(settings_: SamplerSettings) -> float:
        z = model.sample_latents([CAPTION] * n, frames, seeds, settings_)
        return float(torch.mean((z - target) ** 2) / torch.mean(target**2))

    from audiodiff.training.distill import teacher_samples

    times = student_times(model.objective, (1, 2), "uniform", 1.0)
    teacher = SamplerSettings(name="flow_heun", steps=16, guidance=3.0, spacing="uniform")
    _, target = teacher_samples(model, [CAPTION] * n, frames, seeds, teacher, n, times)
    before = error(SamplerSettings(name="flow_euler", steps=2, guidance=3.0, spacing="uniform"))
    record = distill(pipe, [CAPTION], settings, tmp_path / "run")
    after = error(SamplerSettings(name="flow_euler", steps=2, guidance=1.0, spacing="uniform"))
    assert record["global_step"] == 100
    print(f"{denoiser}: 2-step error relative to the teacher's endpoints {before:.3f} -> {after:.3f}")
    assert after < 0.3 * before, (before, after)


def test_straight_points_and_student_times() -> None:
    objective = FlowMatching()
    times = student_times(objective, (1, 2, 4, 8), "uniform", 1.0)
    assert torch.allclose(times, torch.arange(8, 0, -1, dtype=torch.float64) / 8)  # nested grids: the 8-step one
    start, x0 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    assert torch.allclose(straight_points(start, x0, 1.0, torch.ones(2)), start)
    assert torch.allclose(straight_points(start, x0, 0.9, torch.full((2,), 0.9)), start, atol=1e-6)
    mid = straight_points(start, x0, 1.0, torch.full((2,), 0.25))
    assert torch.allclose(mid, 0.75 * x0 + 0.25 * start)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="teacher_sampler: 'pingpong'"):
        DistillSettings(teacher_sampler="pingpong")
    with pytest.raises(DistillError, match="default_steps"):
        DistillSettings(steps=(1, 2), default_steps=4)
    pipe = AudioDiffusionPipeline.from_pretrained(make_base(tmp_path / "teacher", "unet1d_tiny"), watermark=False)
    with pytest.raises(DistillError, match="distilled=.*few-step student already"):
        check_teacher(pipe.model, {"distilled": {"teacher": "t"}}, "student")

    class Unknown:
        pass

    pipe.model.objective = Unknown()  # type: ignore[assignment]
    with pytest.raises(DistillError, match="diffusion._target_: Unknown"):
        check_teacher(pipe.model, {}, "teacher")


def test_a_student_is_not_distilled_again(tmp_path: Path) -> None:
    export = run_distill(make_base(tmp_path / "teacher", "unet1d_tiny"), tmp_path / "first")
    with pytest.raises(DistillError, match="few-step student already"):
        run_distill(export, tmp_path / "second")
    with pytest.raises(DistillError, match="give init="):
        run_stages(["recipe=debug", "stages=[distill]", "stage=distill", f"run_dir={tmp_path / 'none'}"])


def test_cpu_preset_composes_its_distill_stage() -> None:
    from audiodiff.training.stages import _compose, compose_stage

    overrides = ["recipe=sfx_quick_distill", "init=runs/sfx_quick/seed0/export"]
    cfg = compose_stage(overrides, _compose(overrides), "distill")
    settings = DistillSettings.from_config(cfg.stage)
    assert (settings.trajectories, settings.max_steps, settings.max_seconds) == (3072, 8000, 1740)
    assert (settings.guidance, settings.default_steps, settings.steps) == (3.0, 4, (1, 2, 4, 8))
    assert cfg.stage.run_dir == "runs/sfx_quick_distill/seed0"


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import audiodiff.training.distill as distill_module

    teacher = make_base(tmp_path / "teacher", "unet1d_tiny")
    settings = DistillSettings(trajectories=4, teacher_batch=4, teacher_steps=4, batch_size=4, max_steps=6,
                               warmup_steps=1, checkpoint_every=3)

    def student(run_dir: Path) -> dict[str, torch.Tensor]:
        pipe = AudioDiffusionPipeline.from_pretrained(teacher, watermark=False)
        distill(pipe, [CAPTION], settings, run_dir)
        return pipe.model.net.state_dict()

    straight = student(tmp_path / "straight")
    calls = {"n": 0}
    loss = distill_module.distillation_loss

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # during step 5, after the state of step 3 was saved
            raise KeyboardInterrupt
        return loss(*args, **kwargs)

    monkeypatch.setattr(distill_module, "distillation_loss", stopping)
    with pytest.raises(KeyboardInterrupt):
        student(tmp_path / "stopped")
    monkeypatch.setattr(distill_module, "distillation_loss", loss)
    resumed = student(tmp_path / "stopped")
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)


def test_a_student_stopped_by_max_seconds_is_unfinished(tmp_path: Path) -> None:
    from audiodiff.training.stages import _compose, compose_stage, is_finished
    from audiodiff.utils.files import write_json

    overrides = ["recipe=sfx_quick_distill", "init=teacher", f"run_dir={tmp_path}"]
    cfg = compose_stage(overrides, _compose(overrides), "distill")
    assert not is_finished(cfg, "distill")
    write_json(tmp_path / "export" / "export.json", {"global_step": 1200, "max_steps": 8000})
    assert not is_finished(cfg, "distill")
    write_json(tmp_path / "export" / "export.json", {"global_step": 8000, "max_steps": 8000})
    assert is_finished(cfg, "distill")


def test_few_step_evaluation_scores_and_times_both_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recipes/sfx/eval_few_step.py's generation, scoring and table on a tiny teacher and its student."""
    import importlib.util

    script = Path(__file__).parents[1] / "recipes" / "sfx" / "eval_few_step.py"
    spec = importlib.util.spec_from_file_location("eval_few_step", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "eval_few_step", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    teacher = make_base(tmp_path / "teacher", "unet1d_tiny")
    student = run_distill(teacher, tmp_path)
    prompts = ["three loud high beeps", "a quiet low rising sweep"]
    truths = [{"kind": "beeps", "count": 3, "pitch": "high"}, {"kind": "sweep", "direction": "rising"}]
    rows = [module.Configuration("teacher", 2, 3.0), module.Configuration("student", 2, None)]
    for row, path in zip(rows, (teacher, student), strict=True):
        pipe = AudioDiffusionPipeline.from_pretrained(path, watermark=False)
        scores, sampling, total, emb = module.generate_and_score(pipe, prompts, truths, row.steps, row.guidance,
                                                                 0, 2, None)
        assert emb is None and 0 < sampling <= total
        row.scores.append(scores)
        row.sampling.append(sampling)
        row.end_to_end.append(total)
    text = module.table(rows, {})
    assert "| teacher | 2 | 3 |" in text and "| student | 2 | own |" in text
