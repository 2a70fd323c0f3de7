"""Exact resume: a run stopped by SIGTERM (or SIGUSR1 under SLURM) and rerun equals a run that never stopped.

Training in a subprocess records every step through `training_probe.Probe` (losses, batch rows, weight digests). The
comparisons are exact (tolerance 0, CPU): same batches, same losses, same final weights, EMA and optimizer state.
Bitwise equality assumes the same machine, libraries and intra-op thread count on both sides.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, DistributedSampler

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.data.datamodule import ResumableDataLoader, ResumableSampler
from audiodiff.data.dataset import EpochSampler
from audiodiff.export import load_checkpoint
from audiodiff.training.diffusion.run import train

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# ---- the loader position ------------------------------------------------------------------------------------------
class Keys(Dataset):
    """Returns its key: batches are then the sampler's keys themselves."""

    def __len__(self) -> int:
        return 22

    def __getitem__(self, key):
        return torch.tensor(key)


def loader(num_workers: int, replicas: int = 1, rank: int = 0) -> ResumableDataLoader:
    sampler = ResumableSampler(len(Keys()), seed=3, num_replicas=replicas, rank=rank)
    return ResumableDataLoader(Keys(), sampler=sampler, batch_size=4, num_workers=num_workers,
                               persistent_workers=num_workers > 0)


def epoch_batches(dl: ResumableDataLoader, epoch: int, limit: int | None = None) -> list[list[list[int]]]:
    """Batches as Lightning draws them: iterator first, then set_epoch (as FitLoop.setup_data / on_advance_start)."""
    it = iter(dl)
    dl.sampler.set_epoch(epoch)
    out = []
    for batch in it:
        out.append(batch.tolist())
        if limit is not None and len(out) == limit:
            break
    return out


def test_single_rank_order_is_the_epoch_sampler_order_and_ranks_deal_like_distributed_sampler():
    for epoch in (0, 1):
        reference = EpochSampler(22, seed=3)
        reference.set_epoch(epoch)
        keys = list(reference)
        sampler = ResumableSampler(22, seed=3)
        sampler.set_epoch(epoch)
        assert list(sampler) == keys
        for rank in range(3):
            dealt = [keys[i] for i in DistributedSampler(range(22), num_replicas=3, rank=rank, shuffle=False)]
            sharded = ResumableSampler(22, seed=3, num_replicas=3, rank=rank)
            sharded.set_epoch(epoch)
            assert list(sharded) == dealt


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumes_mid_epoch_with_the_same_batches(num_workers):
    full = loader(num_workers)
    expected = epoch_batches(full, 0) + epoch_batches(full, 1)
    assert len(expected) == 12  # 22 keys in batches of 4: 6 per epoch, the last one of 2
    first = loader(num_workers)
    seen = epoch_batches(first, 0) + epoch_batches(first, 1, limit=2)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2, "num_replicas": 1, "num_items": 22}
    resumed = loader(num_workers)
    resumed.load_state_dict(state)
    rest = epoch_batches(resumed, 1)
    assert seen + rest == expected
    assert resumed.state_dict()["batches"] == 6


def test_resume_on_fewer_ranks_continues_from_the_same_global_position():
    ranks = [loader(0, replicas=2, rank=r) for r in range(2)]
    consumed = [key for dl in ranks for batch in epoch_batches(dl, 0, limit=1) for key in batch]
    single = loader(0)
    single.load_state_dict(ranks[0].state_dict())
    rest = [key for batch in epoch_batches(single, 0) for key in batch]
    reference = EpochSampler(22, seed=3)
    reference.set_epoch(0)
    assert sorted(map(tuple, consumed + rest)) == sorted(reference)  # each key once: nothing lost, nothing repeated


# ---- whole runs ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=16, workers=1)  # 14 training clips: epochs of 4 batches, the last of 2
    return root


def overrides(root: Path, run: Path, steps: int, workers: int = 0) -> list[str]:
    return ["recipe=debug", f"data.root={root}", f"run_dir={run}", f"trainer.max_steps={steps}",
            f"data.num_workers={workers}"]


def probe(out: Path, **kwargs) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in {"out": out, **kwargs}.items())
    return f"+callbacks.probe={{_target_: training_probe.Probe, {fields}}}"


def records(out: Path, event: str, rank: int = 0) -> dict[int, dict]:
    """The probe's records of one kind, by step (a rerun's records follow and replace the stopped run's)."""
    lines = (json.loads(line) for line in (out / f"rank{rank}.jsonl").read_text().splitlines())
    return {r["step"]: r for r in lines if r["event"] == event}


def stop_at(step: int, overrides_: list[str], out: Path, sig: signal.Signals, env: dict[str, str]) -> None:
    """Run the training CLI until the probe pauses after `step`, send `sig`, and wait for a clean exit."""
    cmd = [sys.executable, "-m", "audiodiff.train", *overrides_, probe(out, pause_at_step=step)]
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the reduction order, hence the bits, follows threads
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + 240
        while not (out / "paused").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "training never reached the pause step"
            time.sleep(0.05)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert f"{sig.name}: stopped after step {step}" in output, output


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():  # denoiser, EMA copy, representation statistics
        assert torch.equal(value, b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(),
                      strict=True):
        for name in sa:
            assert torch.equal(sa[name], sb[name]), name
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_then_rerun_equals_an_uninterrupted_run(root, tmp_path, workers):
    steps = 8  # two epochs; the stop at step 5 falls after the first batch of the second
    ref_run, ref_out = tmp_path / "reference", tmp_path / "reference_probe"
    train(compose_config("train", [*overrides(root, ref_run, steps, workers), probe(ref_out)]))

    run, out = tmp_path / "run", tmp_path / "probe"
    stop_at(5, overrides(root, run, steps, workers), out, signal.SIGTERM, {})
    stopped = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert stopped["global_step"] == 5
    loader_state = stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"epoch": 1, "batches": 1, "num_replicas": 1, "num_items": 14}]
    assert not (run / "export").exists()  # a stopped run is not exported
    assert not (run / "checkpoints" / ".last.ckpt.partial").exists()

    train(compose_config("train", [*overrides(root, run, steps, workers), probe(out)]))  # the same command again

    for event, fields in (("batch", ("indices", "noise")), ("step", ("loss", "net", "ema"))):
        expected, got = records(ref_out, event), records(out, event)
        assert sorted(got) == list(range(1, steps + 1))
        assert {s: [got[s][f] for f in fields] for s in got} == {s: [expected[s][f] for f in fields] for s in got}
    assert_same_training_state(load_checkpoint(run / "checkpoints" / "last.ckpt"),
                               load_checkpoint(ref_run / "checkpoints" / "last.ckpt"))
    exported, reference = (load_file(r / "export" / "model.safetensors") for r in (run, ref_run))
    assert exported.keys() == reference.keys() and all(torch.equal(exported[k], reference[k]) for k in exported)


def test_sigusr1_under_slurm_checkpoints_requeues_and_resumes(root, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(name, value)

    run, out = tmp_path / "run", tmp_path / "probe"

    def signal_when_paused() -> None:
        deadline = time.monotonic() + 120
        while not (out / "paused").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)

    sender = threading.Thread(target=signal_when_paused, daemon=True)
    sender.start()
    train(compose_config("train", [*overrides(root, run, 4), probe(out, pause_at_step=3)]))
    sender.join()
    assert calls.read_text().split() == ["requeue", "4242"]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # Lightning's own mid-step requeue checkpoint is not written
    assert not (run / "export").exists()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # Lightning's teardown put the handlers back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    train(compose_config("train", [*overrides(root, run, 4), probe(out)]))  # the requeued job
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert sorted(records(out, "step")) == [1, 2, 3, 4]
    assert calls.read_text().split() == ["requeue", "4242"]  # once


def test_a_component_key_added_since_with_its_default_does_not_block_a_resume(tmp_path: Path) -> None:
    """A run trained before a component gained a keyword resumes when today's config sets it to its default (tuple
    defaults read as the lists a saved config holds); any other value is still refused, naming the key; a target
    that is not a registered component is compared as written, never imported."""
    from audiodiff.training.diffusion.run import ResumeMismatchError, check_resume

    ckpt = tmp_path / "last.ckpt"
    saved = {"diffusion": {"_target_": "audiodiff.diffusion.objectives.FlowMatching", "prediction": "x0"}}
    check_resume(saved, {"diffusion": {**saved["diffusion"], "skip": False}}, ckpt)
    check_resume(saved, {"diffusion": {**saved["diffusion"], "logsnr_range": [-6.2, 2.0]}}, ckpt)
    with pytest.raises(ResumeMismatchError, match="skip"):
        check_resume(saved, {"diffusion": {**saved["diffusion"], "skip": True}}, ckpt)
    outside = {"diffusion": {"_target_": "os.system", "command": "true"}}
    with pytest.raises(ResumeMismatchError, match="diffusion"):
        check_resume(outside, {"diffusion": {**outside["diffusion"], "shell": True}}, ckpt)


def test_the_optimizer_loop_may_change_on_resume_but_not_its_settings(tmp_path: Path) -> None:
    """`optim.foreach` and `optim.fused` say how AdamW loops over the parameters (a run trained before the CPU presets
    set `fused` resumes); its learning rate and other settings are still compared."""
    from audiodiff.training.diffusion.run import ResumeMismatchError, check_resume

    ckpt = tmp_path / "last.ckpt"
    saved = {"optim": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}}
    check_resume(saved, {"optim": {**saved["optim"], "foreach": True}}, ckpt)
    check_resume(saved, {"optim": {**saved["optim"], "fused": True}}, ckpt)
    with pytest.raises(ResumeMismatchError, match="optim: was"):
        check_resume(saved, {"optim": {**saved["optim"], "foreach": True, "lr": 2e-3}}, ckpt)
