"""Recipes as stages: the runner skips finished stages, runs one on request, and gives stages their overrides."""

import pytest
from omegaconf import OmegaConf

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.training.stages import compose_stage, is_finished, run_stages, stage_overrides


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    return root


def test_stage_group_choices_win_over_the_command_for_their_groups():
    cfg = OmegaConf.create({"stage_groups": {"diffusion": {"vocoder": "trained"}}})
    command = ["recipe=sfx", "vocoder=hifigan_v2", "stage=vocoder", "seed=1"]
    assert stage_overrides(command, cfg, "diffusion") == ["recipe=sfx", "seed=1", "stage=diffusion",
                                                          "vocoder=trained"]
    assert stage_overrides(command, cfg, "vocoder") == ["recipe=sfx", "vocoder=hifigan_v2", "seed=1",
                                                        "stage=vocoder"]


LATENTS = "audiodiff.data.latent_datamodule.LatentDataModule"
AUDIO = "audiodiff.data.datamodule.AudioDataModule"
GRIFFIN_LIM = "audiodiff.vocoders.griffinlim.GriffinLimVocoder"


@pytest.mark.parametrize("recipe,vocoder,data", [
    ("sfx", "audiodiff.vocoders.trained.from_export", LATENTS),
    ("sfx_quick", GRIFFIN_LIM, LATENTS),
    ("music_quick", GRIFFIN_LIM, LATENTS),
    ("sfx_long", GRIFFIN_LIM, AUDIO),
])
def test_each_recipe_gives_its_diffusion_stage_its_groups(recipe, vocoder, data):
    """sfx trains on its latent cache through the trained vocoder; the CPU presets decode with Griffin-Lim, and
    those with an encode stage train from its cache (sfx_long has none and reads audio)."""
    command = [f"recipe={recipe}"]
    stage = compose_stage(command, compose_config("train", command), "diffusion")
    assert (stage.vocoder._target_, stage.data._target_) == (vocoder, data)
    command = [f"recipe={recipe}", "vocoder=griffinlim_fast"]  # the command still chooses what the recipe leaves
    if recipe != "sfx":
        assert compose_stage(command, compose_config("train", command), "diffusion").vocoder.n_iter == 4


def test_stage_settings_are_typed_values_merged_over_the_stage_and_the_command_wins():
    command = ["recipe=sfx_vocos_gl_quick"]
    cfg = compose_config("train", command)
    stage = compose_stage(command, cfg, "vocoder").stage
    assert stage.task.adversarial_start is None  # sfx_vocos_quick's "never", inherited
    assert stage.task.lambda_spectrum == 0 and stage.task.lambda_stft == 20  # its own value, and the parent's
    assert stage.optim.lr == 3.0e-4 and stage.trainer.val_check_interval == 500
    assert stage.trainer.max_time == "00:00:15:00" and stage.data.num_workers == 1
    assert stage.task.lambda_mel == 45.0  # conf/stage/vocoder.yaml's, untouched
    command = ["recipe=sfx_vocos_gl_quick", "stage=vocoder", "stage.optim.lr=1e-4", "stage.task.lambda_stft=5"]
    stage = compose_stage(command, compose_config("train", command), "vocoder").stage
    assert stage.optim.lr == 1e-4 and stage.task.lambda_stft == 5


def test_a_stage_setting_the_stage_does_not_have_is_named():
    command = ["recipe=sfx_vocos_quick", "+stage_settings.vocoder.task.lambda_typo=3"]
    with pytest.raises(ValueError, match=r"stage_settings.vocoder: .*lambda_typo.*conf/stage/vocoder.yaml"):
        compose_stage(command, compose_config("train", command), "vocoder")


def test_finished_stages_are_skipped_and_stage_reruns_one(root, tmp_path):
    command = ["recipe=debug", f"data.root={root}", f"run_dir={tmp_path / 'run'}"]
    assert run_stages(command) == [tmp_path / "run"]
    export = tmp_path / "run" / "export" / "export.json"
    first = export.stat().st_mtime_ns
    assert run_stages(command) == []  # finished: nothing runs, nothing is rewritten
    assert export.stat().st_mtime_ns == first
    assert run_stages([*command, "stage=diffusion"]) == [tmp_path / "run"]  # asked for: resumes and re-exports
    assert export.stat().st_mtime_ns > first


def test_unknown_or_absent_stages_are_named(root, tmp_path):
    command = ["recipe=debug", f"data.root={root}", f"run_dir={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match=r"stage=vocoder: recipe 'debug' has the stages \['diffusion'\]"):
        run_stages([*command, "stage=vocoder"])
    with pytest.raises(ValueError, match=r"stage: unknown 'mixing'; expected one of"):
        run_stages([*command, "stages=[mixing,diffusion]"])
    assert not (tmp_path / "run").exists()


def test_is_finished_reads_the_stage_run_directory(tmp_path):
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "stage": {"run_dir": str(tmp_path / "vocoder")}})
    assert not is_finished(cfg)
    (tmp_path / "vocoder" / "export").mkdir(parents=True)
    (tmp_path / "vocoder" / "export" / "export.json").write_text("{}")
    assert is_finished(cfg)


def test_a_vocoder_stage_feeds_the_diffusion_stage_and_the_export_stands_alone(root, tmp_path):
    import shutil

    import torch

    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.vocoders.hifigan import HiFiGAN

    run = tmp_path / "run"
    command = ["recipe=debug_staged", f"data.root={root}", f"run_dir={run}"]
    assert run_stages(command) == [run / "vocoder", run / "encode", run]
    trained = HiFiGAN.from_export(run / "vocoder" / "export")
    exported = (run / "export" / "config.yaml").read_text()
    assert "HiFiGAN.for_inference" in exported and "from_export" not in exported
    assert run_stages(command) == []  # both finished
    shutil.rmtree(run / "vocoder")  # the export carries the vocoder's weights itself
    pipe = AudioDiffusionPipeline.from_pretrained(run / "export")
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(pipe.model.representation.vocoder.state_dict()[name], value)
    assert pipe("two beeps", duration=0.5, steps=2).audio.shape == (1, 1, 8000)


def test_the_embedder_stage_trains_the_recipes_own_evaluation_model(root, tmp_path):
    from omegaconf import open_dict

    from audiodiff.config import compose_config
    from audiodiff.evaluation.embedders.contrastive import load_embedder
    from audiodiff.training.stages import train_recipe_embedder

    run = tmp_path / "run"
    command = ["recipe=debug", f"data.root={root}", f"run_dir={run}", "stages=[embedder]"]
    cfg = compose_config("train", [*command, "stage=embedder"])
    with open_dict(cfg):
        cfg.stage.overrides = ["max_steps=2", "model.channels=[16,16]", "model.embed_dim=32", "model.text_hidden=32",
                               "data.batch_size=8", "data.num_workers=0", "data.segment_seconds=1.0",
                               "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "checkpoint_every=2",
                               "task.warmup_steps=2"]
    assert train_recipe_embedder(cfg) == run / "embedder"
    embedder = load_embedder(run / "embedder" / "export")
    assert embedder.embed_text(["two beeps"]).shape == (1, 32)
    assert run_stages(command) == []  # the runner sees the stage finished
