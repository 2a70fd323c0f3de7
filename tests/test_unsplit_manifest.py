"""A manifest whose rows have no `split` trains: they are training rows and a seeded fraction validates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.config import compose_config
from audiodiff.data.datamodule import AudioDataModule
from audiodiff.data.manifest import Holdout, read_manifest, write_manifest
from audiodiff.training.diffusion.run import train

SR = 16000


def clips_manifest(folder: Path, count: int, splits: list[str | None] | None = None) -> Path:
    rows = []
    for i in range(count):
        t = np.arange(SR // 2) / SR
        sf.write(folder / f"clip{i}.wav", (0.4 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), SR)
        row = {"audio": f"clip{i}.wav", "caption": f"a tone number {i}"}
        if splits and splits[i] is not None:
            row["split"] = splits[i]
        rows.append(row)
    return write_manifest(folder / "manifest.jsonl", rows)


def test_holdout_assigns_a_seeded_fraction_of_unsplit_rows(tmp_path):
    manifest = clips_manifest(tmp_path, 10)
    assert {row.split for row in read_manifest(manifest)} == {None}
    rows = read_manifest(manifest, holdout=Holdout(0.2, seed=0))
    assert [r.split for r in rows].count("val") == 2 and [r.split for r in rows].count("train") == 8
    assert read_manifest(manifest, "val", Holdout(0.2, seed=0)) == [r for r in rows if r.split == "val"]
    other = {r.audio for r in read_manifest(manifest, "val", Holdout(0.2, seed=1))}
    assert len(other) == 2
    # With validation rows of its own, a manifest's unsplit rows all train.
    mixed = clips_manifest(tmp_path, 4, [None, None, "val", "train"])
    assert [r.split for r in read_manifest(mixed, holdout=Holdout(0.5))] == ["train", "train", "val", "train"]


def test_datamodule_says_what_it_held_out(tmp_path, caplog):
    manifest = clips_manifest(tmp_path, 10)
    dm = AudioDataModule(str(manifest), sample_rate=SR, segment_seconds=0.25, batch_size=2, num_workers=0)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 9 and len(dm.datasets["val"]) == 1
    assert "10 of 10 rows have no split: 9 train on, 1 held out for validation" in caplog.text


def test_an_empty_split_names_rows_without_a_split(tmp_path):
    manifest = clips_manifest(tmp_path, 2, ["test", None])
    dm = AudioDataModule(str(manifest), sample_rate=SR, segment_seconds=0.25, batch_size=2, num_workers=0,
                         val_fraction=0.0)
    dm.setup("fit")  # the unsplit row trains; no validation
    with pytest.raises(ValueError, match=r"no rows in split 'val'.*\['test', 'train'\]"):
        AudioDataModule(str(manifest), sample_rate=SR, segment_seconds=0.25, batch_size=2, num_workers=0,
                        val_fraction=0.0).setup("validate")


def test_training_on_a_manifest_without_splits(tmp_path):
    manifest = clips_manifest(tmp_path, 6)
    run_dir = tmp_path / "run"
    cfg = compose_config("train", ["recipe=debug", "data=manifest", f"data.manifest={manifest}",
                                   "data.segment_seconds=0.5", "trainer.max_steps=2", f"run_dir={run_dir}",
                                   "preview.every_n_steps=0"])
    train(cfg)
    assert (run_dir / "export" / "model.safetensors").is_file()
