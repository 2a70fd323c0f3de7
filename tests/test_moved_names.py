"""Names from before the layered layout keep working for one release, each with a DeprecationWarning that names the
new module."""

import importlib
import subprocess
import sys

import pytest


def test_an_old_module_name_imports_the_new_module_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import audiodiff.metrics.fad\nexcept DeprecationWarning as w:\n    print(w)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "audiodiff.metrics moved to audiodiff.evaluation" in done.stdout, done.stderr  # the parent comes first


@pytest.mark.parametrize("old,new,name", [
    ("audiodiff.build", "audiodiff.models.build", "build_model"),
    ("audiodiff.metrics.fad", "audiodiff.evaluation.fad", "frechet_distance"),
    ("audiodiff.data.corpora", "audiodiff.benchmarks", "ensure_corpus"),
    ("audiodiff.metrics.attributes.sfx", "audiodiff.benchmarks.sfx.attributes", "extract_sfx"),
    ("audiodiff.lightning.ema", "audiodiff.training.ema", "EMA"),
    ("audiodiff.stages", "audiodiff.training.stages", "run_stages"),
])
def test_old_names_resolve_to_the_same_objects(old, new, name):
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        sys.modules.pop(old, None)
        moved = importlib.import_module(old)
    assert getattr(moved, name) is getattr(importlib.import_module(new), name)


def test_the_former_training_module_names_are_forwarded():
    import audiodiff.training
    from audiodiff.training.diffusion.run import train

    with pytest.warns(DeprecationWarning, match="audiodiff.training.diffusion.run.train"):
        assert audiodiff.training.train is train


def test_an_unknown_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("audiodiff.metrics.no_such_module")


def test_current_name_reads_a_stored_target_as_today():
    from audiodiff.utils.moved import current_name

    assert (current_name("audiodiff.vocoders.discriminators.MultiPeriodDiscriminator")
            == "audiodiff.adversarial.discriminators.MultiPeriodDiscriminator")
    assert (current_name("audiodiff.metrics.attributes.sfx.extract_sfx")
            == "audiodiff.benchmarks.sfx.attributes.extract_sfx")
    assert current_name("audiodiff.vocoders.hifigan.HiFiGAN") == "audiodiff.vocoders.hifigan.HiFiGAN"
    assert current_name("torch.optim.AdamW") == "torch.optim.AdamW"


def test_a_stage_checkpoint_that_names_moved_modules_still_resumes(tmp_path):
    from audiodiff.training.vocoder.run import ResumeMismatchError, check_stage_resume

    def signature(cfg):
        return cfg

    saved = {"stage": {"discriminator_choices": {"mpd": {
        "_target_": "audiodiff.vocoders.discriminators.MultiPeriodDiscriminator", "periods": [2, 3]}}}}
    current = {"stage": {"discriminator_choices": {"mpd": {
        "_target_": "audiodiff.adversarial.discriminators.MultiPeriodDiscriminator", "periods": [2, 3]}}}}
    check_stage_resume("vocoder", signature, saved, current, tmp_path / "last.ckpt")  # same run, moved names
    current["stage"]["discriminator_choices"]["mpd"]["periods"] = [2, 5]
    with pytest.raises(ResumeMismatchError, match="periods"):
        check_stage_resume("vocoder", signature, saved, current, tmp_path / "last.ckpt")
