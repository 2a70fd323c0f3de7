"""The vocoder stage end to end with a tiny HiFi-GAN: train, stop on SIGTERM, resume, refuse a changed config,
export, load back and decode.

References: an uninterrupted run of the same steps (a stopped and resumed run must match it bit for bit, weights and
both optimizers), closed forms for step counts and the learning-rate decay, and the generator rebuilt from the
checkpoint (the export must hold the trained weights).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.training.diffusion.run import ResumeMismatchError
from audiodiff.training.vocoder.run import build_discriminator, check_vocoder_resume, train_vocoder
from audiodiff.vocoders.hifigan import HiFiGAN

STEPS = 5
ADVERSARIAL_START = 1  # one mel-only step, then the discriminators come in
LR, DECAY, DECAY_EVERY = 2e-4, 0.5, 2
TINY_DISCRIMINATORS = ["stage.discriminator_choices.mpd.channels=[4,8,16,16,16]",
                       "stage.discriminator_choices.msd.channels=[16,16,32,32,64,64,64]",
                       "stage.discriminator_choices.mrd.channels=4"]


class SignalAt(L.Callback):
    """Sends this process SIGTERM after training step `step`; GracefulStop then writes last.ckpt and stops the run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)  # 42 training clips: 21 batches of 2, one epoch
    return root


def overrides(root: Path, run_dir: Path, *extra: str, vocoder: str = "hifigan_tiny") -> list[str]:
    return ["stage=vocoder", f"vocoder={vocoder}", f"data.root={root}", f"run_dir={run_dir}", "data.num_workers=0",
            "trainer.log_every_n_steps=1", "+trainer.enable_model_summary=false",
            "stage.data.segment_seconds=0.5", "stage.data.batch_size=2", f"stage.trainer.max_steps={STEPS}",
            "stage.trainer.val_check_interval=2", "stage.trainer.limit_val_batches=1", "stage.checkpoint_every=2",
            f"stage.task.adversarial_start={ADVERSARIAL_START}", f"stage.optim.lr={LR}",
            f"stage.task.lr_decay={DECAY}", f"stage.task.lr_decay_every={DECAY_EVERY}", *TINY_DISCRIMINATORS, *extra]


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted run, and a run stopped by SIGTERM after step 3 then rerun with the same command."""
    base = tmp_path_factory.mktemp("runs")
    reference = train_vocoder(compose_config("train", overrides(root, base / "reference")))
    stop = "+stage.callbacks.stop={_target_: test_vocoder_training.SignalAt, step: 3}"
    run = train_vocoder(compose_config("train", overrides(root, base / "run", stop)))
    stopped = load_checkpoint(run / "checkpoints" / "last.ckpt")
    exported_when_stopped = (run / "export").exists()
    assert train_vocoder(compose_config("train", overrides(root, base / "run"))) == run
    return {"root": root, "reference": reference, "run": run, "stopped": stopped,
            "exported_when_stopped": exported_when_stopped}


def test_steps_count_generator_updates_and_the_learning_rate_decays(runs):
    ckpt = load_checkpoint(runs["reference"] / "checkpoints" / "last.ckpt")
    assert runs["reference"].name == "vocoder"  # ${run_dir}/vocoder
    assert ckpt["global_step"] == STEPS  # batches, not optimizer steps of both players
    generator_state, discriminator_state = (opt["state"] for opt in ckpt["optimizer_states"])
    assert {float(s["step"]) for s in generator_state.values()} == {STEPS}
    assert {float(s["step"]) for s in discriminator_state.values()} == {STEPS - ADVERSARIAL_START}  # after warm-up
    expected_lr = LR * DECAY ** (STEPS // DECAY_EVERY)
    for opt in ckpt["optimizer_states"]:
        assert opt["param_groups"][0]["lr"] == pytest.approx(expected_lr, rel=1e-12)
    assert ckpt["audiodiff"]["config"]["stage"]["task"]["lambda_mel"] == 45.0
    assert ckpt["audiodiff"]["generator"]["upsample_initial_channel"] == 32


def test_without_a_step_interval_the_learning_rate_decays_once_per_epoch(root, tmp_path):
    epoch = 2  # batches per epoch, by limiting them
    run = train_vocoder(compose_config("train", overrides(root, tmp_path, "stage.task.lr_decay_every=null",
                                                          f"+stage.trainer.limit_train_batches={epoch}",
                                                          f"stage.trainer.max_steps={2 * epoch}")))
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2 * epoch and ckpt["epoch"] == 2
    for opt in ckpt["optimizer_states"]:
        assert opt["param_groups"][0]["lr"] == pytest.approx(LR * DECAY**2, rel=1e-12)


def test_losses_and_validation_metrics_reach_tensorboard(runs):
    events = EventAccumulator(str(runs["reference"] / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_g", "train/loss_d", "train/adv", "train/fm", "train/mel_l1", "train/lr", "val/mel_l1",
            "val/stft_distance"} <= scalars
    assert len(events.Scalars("val/mel_l1")) == STEPS // 2  # every 2 steps
    assert all(e.value > 0 for e in events.Scalars("val/stft_distance"))
    assert "val/reconstruction" in events.Tags()["audio"]


def test_a_stopped_run_resumes_exactly(runs):
    stopped = runs["stopped"]
    assert stopped["global_step"] == 3 and not runs["exported_when_stopped"]
    assert stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 3
    resumed = load_checkpoint(runs["run"] / "checkpoints" / "last.ckpt")
    reference = load_checkpoint(runs["reference"] / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == STEPS
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for player, (got, expected) in enumerate(zip(resumed["optimizer_states"], reference["optimizer_states"],
                                                 strict=True)):
        assert got["state"].keys() == expected["state"].keys()
        for index, state in expected["state"].items():
            for name, value in state.items():
                assert torch.equal(got["state"][index][name], value), (player, index, name)
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    exported, expected = (load_file(r / "export" / "model.safetensors") for r in (runs["run"], runs["reference"]))
    assert exported.keys() == expected.keys() and all(torch.equal(exported[k], expected[k]) for k in expected)


@pytest.mark.parametrize("change, key, old, new", [
    ("stage.task.lambda_mel=30.0", "stage.task.lambda_mel", "45.0", "30.0"),
    ("vocoder.upsample_initial_channel=16", "vocoder.upsample_initial_channel", "32", "16"),
    ("stage.data.segment_seconds=0.25", "data.segment_seconds", "0.5", "0.25"),
    ("stage.discriminators=[mpd,msd,mrd]", "stage.discriminators", "['mpd', 'msd']", "['mpd', 'msd', 'mrd']"),
])
def test_a_changed_config_is_refused_with_the_key_named(runs, change, key, old, new):
    run_dir = runs["reference"].parent
    with pytest.raises(ResumeMismatchError, match=re.escape(f"{key}: was {old}, now {new}")):
        train_vocoder(compose_config("train", overrides(runs["root"], run_dir, change)))


def test_length_checkpointing_and_callbacks_may_change_on_resume(runs):
    ckpt = runs["reference"] / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(ckpt)["audiodiff"]["config"]
    cfg = compose_config("train", overrides(runs["root"], runs["reference"].parent, "stage.trainer.max_steps=9",
                                                    "stage.checkpoint_every=7", "data.batch_size=64"))
    check_vocoder_resume(saved, OmegaConf.to_container(cfg, resolve=True), ckpt)  # batch size: stage.data's wins


def test_export_loads_and_decodes_with_the_trained_weights(runs):
    export = runs["reference"] / "export"
    vocoder = HiFiGAN.from_export(export)
    assert isinstance(vocoder, HiFiGAN) and not vocoder.training
    assert not any(hasattr(m, "parametrizations") for m in vocoder.modules())  # weight norm folded in
    info = json.loads((export / "export.json").read_text())
    assert info["global_step"] == STEPS and info["training_data"] == "sfx"

    ckpt = load_checkpoint(runs["reference"] / "checkpoints" / "last.ckpt")
    trained = HiFiGAN(**{k: v for k, v in ckpt["audiodiff"]["generator"].items() if k != "_target_"})
    trained.load_state_dict({k[len("generator."):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith("generator.")})
    wav = 0.3 * torch.sin(torch.arange(2 * 6000).reshape(2, 6000) * (2 * torch.pi * 440 / 16000))
    mel = vocoder.mel(wav)
    assert mel.shape == (2, 64, 6000 // 256 + 1)
    with torch.no_grad():
        out, expected = vocoder(mel), trained.eval()(mel)
    assert out.shape == (2, mel.shape[-1] * 256) and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_stage_composes_onto_the_training_config_and_builds_its_discriminators():
    cfg = compose_config("train", ["stage=vocoder", "vocoder=hifigan_tiny", "stage.discriminators=[mpd,msd,mrd]",
                                   *TINY_DISCRIMINATORS])
    assert cfg.stage.run_dir == f"{cfg.run_dir}/vocoder"
    logits, features = build_discriminator(cfg.stage)(torch.zeros(1, 1, 4096))
    assert len(logits) == len(features) == 5 + 3 + 3  # periods, scales, resolutions
    cfg.stage.discriminators = ["mpd", "typo"]
    with pytest.raises(ValueError, match=r"stage.discriminators: .* got \['mpd', 'typo'\]"):
        build_discriminator(cfg.stage)


def test_a_vocoder_without_weights_or_a_config_without_the_stage_is_refused(root, tmp_path):
    with pytest.raises(TypeError, match="GriffinLimVocoder"):
        train_vocoder(compose_config("train", overrides(root, tmp_path, vocoder="griffinlim")))
    with pytest.raises(ValueError, match="compose conf/train.yaml with stage=vocoder"):
        train_vocoder(compose_config("train", ["vocoder=hifigan_tiny", f"run_dir={tmp_path}"]))
