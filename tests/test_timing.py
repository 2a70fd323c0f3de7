"""Timing conditioning: features, frame masks, masked training, and generation of a requested length."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.conditioning.timing import TimingConditioning, frame_mask
from audiodiff.config import compose_config
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.diffusion.run import train


def test_features_hold_the_normalised_values_and_their_harmonics():
    timing = TimingConditioning(max_seconds=4.0, harmonics=2)
    feats = timing.features(torch.tensor([0.0, 1.0]), torch.tensor([4.0, 2.0]))
    assert feats.shape == (2, timing.dim) == (2, 10)
    torch.testing.assert_close(feats[:, :2], torch.tensor([[0.0, 1.0], [0.25, 0.5]]))
    torch.testing.assert_close(feats[1, 2:4], torch.sin(2 * math.pi * torch.tensor([0.25, 0.5])))
    torch.testing.assert_close(feats[1, 8:10], torch.cos(4 * math.pi * torch.tensor([0.25, 0.5])))
    with pytest.raises(ValueError, match="must both be"):
        timing.features(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="max_seconds"):
        TimingConditioning(0.0)


def test_frame_mask_marks_frames_that_hold_real_audio():
    mask = torch.zeros(2, 1000, dtype=torch.bool)
    mask[0, :500] = True
    mask[1] = True
    frames = frame_mask(mask, 10)
    assert frames.shape == (2, 1, 10)
    assert frames[0, 0].tolist() == [1.0] * 5 + [0.0] * 5 and frames[1].min() == 1.0


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    run_dir = tmp_path_factory.mktemp("runs") / "timed"
    train(compose_config("train", ["recipe=debug", "timing=seconds", "data.segment_seconds=2.0",
                                   f"data.root={root}", f"run_dir={run_dir}"]))
    return run_dir


def test_training_batches_carry_timing_and_the_export_keeps_it(timed_run):
    pipe = AudioDiffusionPipeline.from_pretrained(timed_run / "export")
    assert pipe.model.timing is not None and pipe.model.timing.max_seconds == 2.0
    assert pipe.model.net.global_dim == pipe.model.timing.dim


def test_a_timed_model_generates_the_length_asked_within_its_window(timed_run):
    pipe = AudioDiffusionPipeline.from_pretrained(timed_run / "export")
    out = pipe(["two beeps"], duration=0.75, steps=2, seed=0)
    assert out.audio.shape == (1, 1, 12000)
    with pytest.raises(ValueError, match="longer than this model's maximum of 2.0 s"):
        pipe(["two beeps"], duration=3.0, steps=2)


def test_the_requested_length_reaches_the_network(timed_run):
    """Two lengths give the same noise but different conditioning, hence different audio in the shared part."""
    pipe = AudioDiffusionPipeline.from_pretrained(timed_run / "export")
    with torch.no_grad():
        for p in pipe.model.net.global_proj.parameters():
            p.add_(0.5)  # a freshly trained tiny model barely uses timing yet; make the path visible
    short = pipe(["two beeps"], duration=0.5, steps=2, seed=0).audio
    longer = pipe(["two beeps"], duration=1.0, steps=2, seed=0).audio[..., :8000]
    assert not torch.allclose(short, longer)
