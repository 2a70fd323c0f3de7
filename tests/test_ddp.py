"""Data parallelism for real: the training CLI with `trainer=ddp` on 2 CPU processes (gloo), probed at every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.export import load_checkpoint

TESTS = Path(__file__).resolve().parent
RANKS = (0, 1)
NAN_STEP, NAN_RANK = 3, 1


def ddp_command(root: Path, run_dir: Path, steps: int, **probe: object) -> list[str]:
    fields = ", ".join(f"{k}: {v}" for k, v in {"out": run_dir / "probe", **probe}.items())
    return [sys.executable, "-m", "audiodiff.train", "recipe=debug", f"data.root={root}", f"run_dir={run_dir}",
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2",
            f"trainer.max_steps={steps}", f"+callbacks.probe={{_target_: training_probe.Probe, {fields}}}"]


ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=24, workers=1)  # 20 training clips (10 per rank), 2 validation clips
    return root


@pytest.fixture(scope="module")
def run(root, tmp_path_factory) -> tuple[Path, str]:
    """4 steps on 2 ranks; the loss of step 3 is NaN on rank 1 only. Returns (run dir, console output)."""
    run_dir = tmp_path_factory.mktemp("runs") / "ddp"
    cmd = ddp_command(root, run_dir, 4, nan_at_step=NAN_STEP, nan_rank=NAN_RANK)
    proc = subprocess.run(cmd, cwd=TESTS.parent, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir, proc.stdout + proc.stderr


def records(run_dir: Path, rank: int, event: str) -> list[dict]:
    lines = (run_dir / "probe" / f"rank{rank}.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def by_step(run_dir: Path, rank: int, event: str) -> dict[int, dict]:
    return {r["step"]: r for r in records(run_dir, rank, event)}


def test_weights_and_ema_are_identical_on_every_rank_after_every_step(run):
    run_dir, _ = run
    steps = [by_step(run_dir, rank, "step") for rank in RANKS]
    assert sorted(steps[0]) == sorted(steps[1]) == [1, 2, 3, 4]
    for step in steps[0]:
        assert steps[0][step]["net"] == steps[1][step]["net"], step
        assert steps[0][step]["ema"] == steps[1][step]["ema"], step
    assert len({s["net"] for s in steps[0].values()}) == 3  # every step but the skipped one moved the weights


def test_each_rank_draws_its_own_data_and_noise(run):
    run_dir, _ = run
    batches = [by_step(run_dir, rank, "batch") for rank in RANKS]
    for step in (1, 2, 3, 4):
        assert not set(batches[0][step]["indices"]) & set(batches[1][step]["indices"]), step
        assert batches[0][step]["noise"] != batches[1][step]["noise"], step
    # Epoch 0 is steps 1-3 (10 clips per rank in batches of 4, 4, 2): together the ranks cover the split once.
    epoch0 = [i for rank in RANKS for step in (1, 2, 3) for i in batches[rank][step]["indices"]]
    assert sorted(epoch0) == list(range(20))


def test_validation_loss_is_the_mean_over_ranks(run):
    run_dir, _ = run
    raw = [by_step(run_dir, rank, "val") for rank in RANKS]
    logged = [by_step(run_dir, rank, "val_logged") for rank in RANKS]
    assert sorted(raw[0]) == [2, 4]
    for step in raw[0]:
        assert raw[0][step]["indices"] != raw[1][step]["indices"]  # each rank evaluates its own share
        assert raw[0][step]["loss"] != raw[1][step]["loss"]
        mean = (raw[0][step]["loss"] + raw[1][step]["loss"]) / 2
        assert logged[0][step]["loss"] == logged[1][step]["loss"] == pytest.approx(mean, rel=1e-6)


def test_only_rank_zero_writes_checkpoints_and_previews(run):
    run_dir, _ = run
    saves = [records(run_dir, rank, "save") for rank in RANKS]
    assert [s["path"] for s in saves[0]] == [str(run_dir / "checkpoints" / "last.ckpt")] * 3  # steps 2, 4, final
    assert saves[1] == []
    assert len(records(run_dir, 0, "preview")) == 1 and records(run_dir, 1, "preview") == []
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    rng = next(v for k, v in ckpt["callbacks"].items() if k.startswith("RandomState"))
    assert rng["world_size"] == 2  # every rank's generators, for an exact resume on 2 ranks
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(run):
    run_dir, output = run
    steps = [by_step(run_dir, rank, "step") for rank in RANKS]
    for rank in RANKS:
        assert [steps[rank][s]["nonfinite"] for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
        assert steps[rank][NAN_STEP]["net"] == steps[rank][NAN_STEP - 1]["net"]  # weights untouched
        assert steps[rank][NAN_STEP]["ema"] == steps[rank][NAN_STEP - 1]["ema"]
    assert f"step {NAN_STEP - 1}: non-finite loss, step skipped (1 so far)" in output
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["audiodiff"]["nonfinite_steps"] == 1


def test_sigterm_to_rank_zero_stops_every_rank_and_the_rerun_is_exact(root, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    subprocess.run(ddp_command(root, reference, 6), cwd=TESTS.parent, env=ENV, check=True, capture_output=True,
                   timeout=300)
    with subprocess.Popen(ddp_command(root, run, 6, pause_at_step=4), cwd=TESTS.parent, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + 240
        while not (run / "probe" / "paused").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # rank 0 only: the other rank learns it at the step boundary
        output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "SIGTERM: stopped after step 4" in output, output
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    subprocess.run(ddp_command(root, run, 6), cwd=TESTS.parent, env=ENV, check=True, capture_output=True, timeout=300)
    for rank in RANKS:
        expected, got = by_step(reference, rank, "step"), by_step(run, rank, "step")
        assert sorted(got) == [1, 2, 3, 4, 5, 6]
        for step in got:
            assert [got[step][k] for k in ("loss", "net", "ema")] == [expected[step][k] for k in ("loss", "net", "ema")]
