"""Checkpoints are never half-written: a process killed while saving leaves the previous file, loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.export import load_checkpoint
from audiodiff.training.diffusion.run import train
from audiodiff.training.resume import AtomicCheckpointIO, partial_path

REPO = Path(__file__).resolve().parent.parent

# Run in a subprocess: torch.save writes half of the serialised checkpoint, signals it, and hangs there.
HANG_ON_SAVE = textwrap.dedent("""
    import io, sys, time
    from pathlib import Path
    import torch

    marker, hang_on_call = Path(sys.argv[1]), int(sys.argv[2])
    real_save, calls = torch.save, []

    def hanging_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < hang_on_call:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        marker.write_text(str(len(data)))
        time.sleep(600)

    torch.save = hanging_save
""")


def kill_while_saving(tmp_path: Path, main: str, args: list[str], hang_on_call: int) -> None:
    """Run `main` after HANG_ON_SAVE; SIGKILL the process once its `hang_on_call`-th torch.save is half done."""
    marker = tmp_path / "hanging"
    script = tmp_path / "script.py"
    script.write_text(HANG_ON_SAVE + textwrap.dedent(main))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([sys.executable, str(script), str(marker), str(hang_on_call), *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the save never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "ckpt" / "last.ckpt"
    main = """
        from audiodiff.training.resume import AtomicCheckpointIO
        writer = AtomicCheckpointIO()
        writer.save_checkpoint({"step": 1, "w": torch.arange(1000.0)}, sys.argv[3])
        writer.save_checkpoint({"step": 2, "w": torch.zeros(200_000)}, sys.argv[3])
    """
    kill_while_saving(tmp_path, main, [str(target)], hang_on_call=2)
    assert sorted(p.name for p in target.parent.iterdir()) == [".last.ckpt.partial", "last.ckpt"]
    previous = torch.load(target, weights_only=True)
    assert previous["step"] == 1 and torch.equal(previous["w"], torch.arange(1000.0))
    with pytest.raises(RuntimeError):  # the half-written data sits under its own name only
        torch.load(partial_path(target), weights_only=True)
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)  # the next save replaces the stale partial file
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(target, weights_only=True) == {"step": 3}


def test_data_reaches_the_disk_before_the_rename_and_the_rename_is_synced(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def recording_replace(src, dst) -> None:
        events.append(("replace", f"{Path(src).name}->{Path(dst).name}"))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "a.ckpt")
    assert events == [("fsync", ".a.ckpt.partial"), ("replace", ".a.ckpt.partial->a.ckpt"),
                      ("fsync", tmp_path.name)]


def test_a_failed_save_removes_its_partial_file(tmp_path):
    target = tmp_path / "last.ckpt"
    with pytest.raises(Exception, match="pickle"):
        AtomicCheckpointIO().save_checkpoint({"f": lambda: 0}, target)
    assert list(tmp_path.iterdir()) == []


def test_training_killed_while_saving_resumes_from_the_previous_checkpoint(tmp_path):
    root = tmp_path / "data"
    ensure_corpus("sfx", root, num_clips=16, workers=1)
    run = tmp_path / "run"
    overrides = ["recipe=debug", f"data.root={root}", f"run_dir={run}", "trainer.max_steps=6"]
    main = """
        from audiodiff.config import compose_config
        from audiodiff.training.diffusion.run import train
        train(compose_config("train", sys.argv[3:]))
    """
    kill_while_saving(tmp_path, main, overrides, hang_on_call=2)  # checkpoints every 2 steps: the one of step 4
    ckpt = run / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == [".last.ckpt.partial", "last.ckpt"]
    assert load_checkpoint(ckpt)["global_step"] == 2
    train(compose_config("train", overrides))  # the same command resumes from step 2
    assert load_checkpoint(ckpt)["global_step"] == 6
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
