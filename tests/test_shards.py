"""Tar shards: conversion, streaming items equal to the manifest dataset's, rank/worker splits, shuffling, skips,
atomic writes, errors, the datamodule and a few training steps of the debug recipe."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import lightning
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiodiff import cli
from audiodiff.config import compose_config
from audiodiff.data import shards as shards_module
from audiodiff.data.dataset import AudioCaptionDataset, EmptySplitError, NoReadableAudioError, read_skips
from audiodiff.data.manifest import read_manifest, write_manifest
from audiodiff.data.shard_datamodule import ShardDataModule, ShardEpochs
from audiodiff.data.shards import (
    ShardCountError,
    ShardDataset,
    ShardIndexError,
    ShardWriter,
    convert_manifest,
    iter_shard,
    read_captions,
    read_index,
    shuffle_buffer,
)

SR = 8000
SEGMENT = 0.5
SEG_SAMPLES = round(SR * SEGMENT)


def _ramp(path: Path, seconds: float, start: float, sample_rate: int = SR, channels: int = 1) -> Path:
    """A float WAV whose every sample is distinct (start + k * 1e-5), so crops can be told apart."""
    data = (start + 1e-5 * np.arange(round(seconds * sample_rate), dtype=np.float64)).astype(np.float32)
    sf.write(path, np.stack([data] * channels, axis=1), sample_rate, subtype="FLOAT")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Train: 6 long clips (one stereo at 16 kHz), 1 short, 1 corrupt (third row); val: 2 clips; test: 1 clip."""
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(6):
        stereo = i == 4
        _ramp(src / f"long{i}.wav", 1.0 + 0.1 * i, 0.1 * i, sample_rate=16000 if stereo else SR,
              channels=2 if stereo else 1)
        rows.append({"audio": f"long{i}.wav", "caption": [f"long {i} a", f"long {i} b"], "split": "train",
                     "attributes": {"n": i}, "source": "ramps"})
    _ramp(src / "short.wav", 0.25, 0.5)
    rows.append({"audio": "short.wav", "caption": "short", "split": "train", "attributes": {"n": 6}})
    (src / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    rows.insert(2, {"audio": "bad.wav", "caption": "bad", "split": "train"})
    for i in range(2):
        _ramp(src / f"val{i}.wav", 0.75, 0.6 + 0.1 * i)
        rows.append({"audio": f"val{i}.wav", "caption": ["val", f"val {i}"], "split": "val"})
    _ramp(src / "test0.wav", 0.75, 0.9)
    rows.append({"audio": "test0.wav", "caption": "test", "split": "test"})
    return write_manifest(src / "manifest.jsonl", rows)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A manifest of 16 train clips of 0.1 s, for the rank/worker and shuffle tests."""
    src = tmp_path / "tiny"
    src.mkdir()
    for i in range(16):
        _ramp(src / f"c{i}.wav", 0.1, 0.05 * i)
    return write_manifest(src / "m.jsonl", [{"audio": f"c{i}.wav", "caption": f"c {i}", "split": "train"}
                                            for i in range(16)])


def _shard_set(manifest: Path, out: Path, **kwargs) -> Path:
    convert_manifest(manifest, out, **kwargs)
    return out


def _stream(out: Path, split: str = "train", **kwargs) -> ShardDataset:
    kwargs = {"sample_rate": SR, "segment_seconds": SEGMENT, "seed": 3, "train": True} | kwargs
    return ShardDataset(out, split, **kwargs)


def _reference(manifest: Path, split: str = "train", **kwargs) -> AudioCaptionDataset:
    kwargs = {"sample_rate": SR, "segment_seconds": SEGMENT, "seed": 3, "train": True} | kwargs
    return AudioCaptionDataset(manifest, split, **kwargs)


def _assert_same_item(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    torch.testing.assert_close(got["wav"], expected["wav"], rtol=0, atol=0)
    assert torch.equal(got["mask"], expected["mask"])
    for key in ("seconds_start", "seconds_total", "caption", "attributes", "index", "audio"):
        assert got[key] == expected[key], key


# -- conversion ----------------------------------------------------------------------------------------------


def test_conversion_writes_shards_captions_and_index(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    indexes = convert_manifest(corpus, out, shard_size=3)
    assert list(indexes) == ["train", "val", "test"]
    train = indexes["train"]
    assert [s.name for s in train.shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s.samples for s in train.shards] == [3, 3, 1]
    assert train.skipped.keys() == {str(corpus.parent / "bad.wav")}
    assert "not a readable audio file" in train.skipped[str(corpus.parent / "bad.wav")]
    assert read_index(out, "train") == train
    rows = read_manifest(corpus, "train")
    # Read back with tarfile's random-access reader: members <key>.<ext>, key = the row's place in its split.
    names, expected_names = [], []
    for shard in train.shards:
        assert (out / shard.name).stat().st_size == shard.nbytes
        with tarfile.open(out / shard.name) as tar:
            for member in tar.getmembers():
                names.append(member.name)
                key, ext = member.name.split(".")
                data = tar.extractfile(member).read()
                row = rows[int(key)]
                if ext == "json":
                    assert json.loads(data) == row.to_dict()
                else:
                    assert ext == "wav" and data == row.audio.read_bytes()
    for position in (0, 1, 3, 4, 5, 6, 7):  # row 2 is the corrupt clip
        expected_names += [f"{position:09d}.wav", f"{position:09d}.json"]
    assert names == expected_names
    assert read_captions(out, "train") == [c for i, r in enumerate(rows) if i != 2 for c in r.captions]
    assert read_captions(out, "val") == ["val", "val 0", "val 1"]
    assert indexes["val"].samples == 2 and indexes["test"].samples == 1
    assert not list(out.glob(".*"))  # no temporary files left


def test_one_split_and_shard_byte_limit(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    limit_mb = 0.045  # 47,185 bytes: one 1 s float clip (32 kB) per shard, with the json
    index = convert_manifest(corpus, out, split="train", max_shard_mb=limit_mb)["train"]
    assert not (out / "val.json").exists()
    sizes = [(out / s.name).stat().st_size for s in index.shards]
    assert len(index.shards) >= 4 and index.samples == 7
    largest = max(len(r.audio.read_bytes()) for r in read_manifest(corpus, "train") if r.audio.name != "bad.wav")
    for size, shard in zip(sizes, index.shards, strict=True):
        assert size == shard.nbytes and size % tarfile.RECORDSIZE == 0
        assert size <= limit_mb * 2**20 or (shard.samples == 1 and size < largest + 3 * tarfile.RECORDSIZE)


def test_reconversion_replaces_the_shard_set(corpus: Path, tmp_path: Path) -> None:
    out = _shard_set(corpus, tmp_path / "shards", split="train", shard_size=2)
    assert len(read_index(out, "train").shards) == 4
    convert_manifest(corpus, out, split="train", shard_size=5)
    assert sorted(p.name for p in out.glob("train-*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert [s.samples for s in read_index(out, "train").shards] == [5, 2]


def test_flac_shards_keep_the_samples_to_24_bits(corpus: Path, tmp_path: Path) -> None:
    out = _shard_set(corpus, tmp_path / "shards", split="train", shard_size=4, audio_format="flac")
    rows = read_manifest(corpus, "train")
    keys = []
    for shard in read_index(out, "train").shards:
        for key, members in iter_shard(out / shard.name):
            keys.append(key)
            assert sorted(members) == ["flac", "json"]
            got, rate = sf.read(io.BytesIO(members["flac"]), dtype="float64", always_2d=True)
            original, original_rate = sf.read(rows[int(key)].audio, dtype="float64", always_2d=True)
            assert rate == original_rate and got.shape == original.shape
            np.testing.assert_allclose(got, original, rtol=0, atol=2.0**-23)
    assert keys == [f"{i:09d}" for i in (0, 1, 3, 4, 5, 6, 7)]
    reference = _reference(corpus, train=False)
    for item in _stream(out, train=False):
        expected = reference[item["index"]]
        torch.testing.assert_close(item["wav"], expected["wav"], rtol=0, atol=1e-6)
        assert item["caption"] == expected["caption"]


def test_interrupted_conversion_leaves_no_partial_shard_and_no_index(corpus: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = _shard_set(corpus, tmp_path / "shards", split="train", shard_size=2)
    calls = []
    real_load = shards_module.load_audio

    def failing_load(*args, **kwargs):
        calls.append(args)
        if len(calls) == 5:  # rows 0, 1 fill the first shard, row 2 is corrupt, row 3 opens the second
            raise RuntimeError("power cut")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(shards_module, "load_audio", failing_load)
    with pytest.raises(RuntimeError, match="power cut"):
        convert_manifest(corpus, out, split="train", shard_size=2)
    assert not list(out.glob(".*"))  # the unfinished shard's temporary file is gone
    assert not (out / "train.json").exists()  # readers refuse the split rather than read a mix
    for shard in out.glob("train-*.tar"):  # every shard under its final name is complete
        with tarfile.open(shard) as tar:
            assert len(tar.getmembers()) in (2, 4)
    with pytest.raises(ShardIndexError, match="interrupted conversion"):
        _stream(out)


def test_writer_abort_removes_the_open_shard(tmp_path: Path) -> None:
    with pytest.raises(KeyError), ShardWriter(tmp_path, "train", shard_size=2) as writer:
        for key in ("000000000", "000000001", "000000002"):  # the first shard is full after two
            writer.write(key, {"json": b"{}"})
        assert len(list(tmp_path.glob(".train-000001.tar.*.tmp"))) == 1
        raise KeyError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]


# -- streaming -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_items_equal_the_manifest_dataset_items(corpus: Path, tmp_path: Path, train: bool) -> None:
    out = _shard_set(corpus, tmp_path / "shards", shard_size=3)
    stream = _stream(out, train=train)
    reference = _reference(corpus, train=train)
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        items = list(stream)
        assert [item["index"] for item in items] == [0, 1, 3, 4, 5, 6, 7]
        for item in items:
            _assert_same_item(item, reference[(item["index"], epoch)])
    assert stream.failures() == {}
    val = _stream(out, "val", train=False)
    val_reference = _reference(corpus, "val", train=False)
    for item in val:
        _assert_same_item(item, val_reference[item["index"]])


def _index_list(items: list[dict]) -> list[int]:
    return [item["index"] for item in items]


def _indices(out: Path, rank: int, epoch: int, num_workers: int, world_size: int = 2, **kwargs) -> list[int]:
    ds = _stream(out, rank=rank, world_size=world_size, **kwargs)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=3, num_workers=num_workers, collate_fn=_index_list)
    return [i for batch in loader for i in batch]


def test_ranks_and_workers_read_disjoint_shards_and_every_sample_once(tiny: Path, tmp_path: Path) -> None:
    out = _shard_set(tiny, tmp_path / "shards", shard_size=2)  # 8 shards for 2 ranks x 2 workers
    shard_of = {i: i // 2 for i in range(16)}
    for epoch in (0, 1):
        per_rank = [_indices(out, rank, epoch, num_workers=2, shuffle_buffer=3) for rank in (0, 1)]
        assert sorted(per_rank[0] + per_rank[1]) == list(range(16))
        shards = [{shard_of[i] for i in indices} for indices in per_rank]
        assert not shards[0] & shards[1]
        assert all(len(indices) == 8 for indices in per_rank)
        plan = _stream(out, rank=0, world_size=2, shuffle_buffer=3).assignment(epoch, 2)
        names = [shard.name for slots in plan for slot in slots for shard in slot]
        assert sorted(names) == sorted(f"train-{i:06d}.tar" for i in range(8))
        assert {int(name[6:12]) for slot in plan[0] for name in (s.name for s in slot)} == shards[0]
    # The shard permutation changes with the epoch, so ranks see other shards.
    plans = [_stream(out, rank=0, world_size=2, shuffle_buffer=3).assignment(e, 2) for e in range(4)]
    assert len({tuple(s.name for slot in p[0] for s in slot) for p in plans}) > 1


def test_uneven_shards_give_every_rank_the_same_count(tiny: Path, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "nine.jsonl", read_manifest(tiny)[:9])
    out = _shard_set(manifest, tmp_path / "shards", shard_size=2)  # 2 + 2 + 2 + 2 + 1 samples
    for epoch in (0, 1, 2):
        per_rank = [_indices(out, rank, epoch, num_workers=0, shuffle_buffer=4) for rank in (0, 1)]
        plan = _stream(out, rank=0, world_size=2, shuffle_buffer=4).assignment(epoch, 1)
        quota = max(sum(s.samples for s in plan[r][0]) for r in (0, 1))
        assert [len(indices) for indices in per_rank] == [quota, quota]
        assert set(per_rank[0]) | set(per_rank[1]) == set(range(9))
        assert not set(per_rank[0]) & set(per_rank[1])
        for rank in (0, 1):  # each rank yields all its own samples, then repeats some to reach the quota
            assert len(set(per_rank[rank])) == sum(s.samples for s in plan[rank][0])
        assert sum(s.samples for s in plan[0][0]) != sum(s.samples for s in plan[1][0])


def test_shuffle_changes_with_the_epoch_and_repeats_with_the_seed(tiny: Path, tmp_path: Path) -> None:
    out = _shard_set(tiny, tmp_path / "shards", shard_size=4)

    def order(epoch: int, seed: int = 3, buffer: int = 5) -> list[int]:
        ds = _stream(out, seed=seed, shuffle_buffer=buffer)
        ds.set_epoch(epoch)
        return [item["index"] for item in ds]

    first = order(0)
    assert sorted(first) == list(range(16)) and first != list(range(16))
    assert order(1) != first
    assert order(0) == first and order(1) == order(1)
    assert order(0, seed=4) != first
    assert order(0, buffer=0) == list(range(16))
    # With workers, each worker's order is seeded too: two runs of a 2-worker loader agree.
    runs = [_indices(out, 0, 1, num_workers=2, world_size=1, shuffle_buffer=5) for _ in range(2)]
    assert runs[0] == runs[1] and sorted(runs[0]) == list(range(16))


def test_shuffle_buffer_yields_each_item_once_within_reach() -> None:
    items = list(range(200))
    assert list(shuffle_buffer(items, 1, np.random.default_rng(0))) == items
    for size in (2, 7, 50, 500):
        out = list(shuffle_buffer(items, size, np.random.default_rng(size)))
        assert sorted(out) == items and out != items
        position = {item: k for k, item in enumerate(out)}
        assert all(position[i] >= i - size + 1 for i in items)  # an item cannot leave before it was read
    # A buffer as large as the stream is a uniform permutation: each first place is equally likely.
    firsts = Counter(next(iter(shuffle_buffer(range(4), 4, np.random.default_rng(s)))) for s in range(4000))
    assert all(abs(count / 4000 - 0.25) < 0.03 for count in firsts.values())


def test_corrupt_members_are_skipped_counted_and_logged(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rows = [{"audio": str(_ramp(src / f"c{i}.wav", 0.2, 0.1 * i)), "caption": f"c {i}", "split": "train"}
            for i in range(6)]
    out = tmp_path / "shards"
    with ShardWriter(out, "train", shard_size=3) as writer:
        for i, row in enumerate(rows):
            members = {"wav": Path(row["audio"]).read_bytes(), "json": json.dumps(row).encode()}
            if i == 1:
                members["wav"] = b"RIFF\x10\x00\x00\x00WAVEfmt garbage"
            if i == 3:
                members["json"] = b'{"audio": "x.wav"}'
            if i == 4:
                del members["json"]
            writer.write(f"{i:09d}", members)
    index = shards_module.ShardIndex(out, "train", tuple(writer.shards), "original", "hand-made")
    (out / "train.json").write_text(json.dumps(index.to_json()))
    log = tmp_path / "skips.tsv"
    ds = _stream(out, train=False, skip_log=log, segment_seconds=0.1)
    assert [item["index"] for item in ds] == [0, 2, 5]
    failures = ds.failures()
    assert set(failures) == {f"{out / 'train-000000.tar'}:000000001", f"{out / 'train-000001.tar'}:000000003",
                             f"{out / 'train-000001.tar'}:000000004"}
    assert "not a readable audio file" in failures[f"{out / 'train-000000.tar'}:000000001"]
    assert str(src / "c1.wav") in failures[f"{out / 'train-000000.tar'}:000000001"]
    assert "field 'caption'" in failures[f"{out / 'train-000001.tar'}:000000003"]
    assert "expected one .json and one audio member, got ['wav']" in failures[f"{out / 'train-000001.tar'}:000000004"]
    assert read_skips(log).keys() == failures.keys()
    # With two ranks the failed samples are replaced by the reader's own good ones, keeping counts equal.
    counts = [len(list(_stream(out, train=False, segment_seconds=0.1, rank=r, world_size=2))) for r in (0, 1)]
    assert counts == [3, 3]


# -- errors --------------------------------------------------------------------------------------------------


def test_errors_name_the_problem(corpus: Path, tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardIndexError, match=r"missing: shard folder not found; convert a manifest"):
        _stream(tmp_path / "missing")
    out = _shard_set(tiny, tmp_path / "shards", shard_size=4)  # 4 shards
    with pytest.raises(ShardIndexError, match=r"no index val\.json for split 'val'; the folder has indexes for "
                                              r"\['train'\]"):
        _stream(out, "val")
    with pytest.raises(ShardCountError, match=r"4 shard\(s\) cannot feed 2 rank\(s\) x 3 DataLoader worker\(s\) = "
                                              r"6 readers; rank 1 worker 2 would get no data"):
        _stream(out, rank=1, world_size=2).assignment(0, 3)
    with pytest.raises(ShardCountError, match=r"4 shard\(s\) cannot feed 5 rank\(s\) x 1 DataLoader worker\(s\)"):
        list(_stream(out, rank=0, world_size=5))
    with pytest.raises(ValueError, match="give both rank and world_size"):
        _stream(out, rank=1)
    with pytest.raises(ValueError, match="0 <= rank < world_size, got rank=2, world_size=2"):
        _stream(out, rank=2, world_size=2)
    (out / "train-000003.tar").write_bytes(b"x" * 10)
    with pytest.raises(ShardIndexError, match=r"train-000003\.tar has 10 bytes, expected \d+"):
        _stream(out)
    (out / "train-000003.tar").unlink()
    with pytest.raises(ShardIndexError, match=r"train-000003\.tar is missing"):
        _stream(out)
    (out / "train.json").write_text('{"format": "other"}')
    with pytest.raises(ShardIndexError, match="expected an object with format 'audiodiff-shards' and version 1"):
        _stream(out)
    with pytest.raises(EmptySplitError, match=r"no rows in split 'dev'; the manifest's splits are \['train', 'val', "
                                              r"'test'\]"):
        convert_manifest(corpus, tmp_path / "x", split="dev")
    bad_only = write_manifest(tmp_path / "bad.jsonl", [{"audio": str(corpus.parent / "bad.wav"), "caption": "b",
                                                        "split": "train"}])
    with pytest.raises(NoReadableAudioError, match=r"none of the 1 clips of split 'train' could be read; for example"):
        convert_manifest(bad_only, tmp_path / "y")
    assert not (tmp_path / "y" / "train.json").exists()
    with pytest.raises(ValueError, match=r"split name must match .* got '\.\./up'"):
        shards_module.convert_split(read_manifest(corpus, "train"), tmp_path / "z", "../up")
    assert not (tmp_path / "z").exists()


def _shards_cli(argv: list[str]) -> int:
    """`python -m audiodiff.data.shards ARGV...`, run in this process; returns the exit status."""
    return cli.run("audiodiff.data.shards", "shards", shards_module.main, shards_module.__doc__, argv)


def test_command_line(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def one_error_line(start: str) -> None:
        captured = capsys.readouterr()
        assert len(captured.err.splitlines()) == 1 and captured.err.startswith(start), captured.err
        assert "Traceback" not in captured.err + captured.out

    assert _shards_cli([f"manifest={corpus}", "shard_size=three", f"out={tmp_path}"]) == 1
    one_error_line("error: shard_size: expected a whole number, got 'three'")
    assert _shards_cli([f"manifest={corpus}"]) == 1
    one_error_line("error: required setting(s) not given: out=...")
    assert _shards_cli([f"manifest={corpus}", f"out={tmp_path}", "size=3"]) == 1
    one_error_line("error: Could not override 'size'")
    assert _shards_cli([f"manifest={tmp_path / 'none.jsonl'}", f"out={tmp_path}"]) == 1
    one_error_line(f"error: {tmp_path / 'none.jsonl'}: expected an existing manifest file")
    bad_only = write_manifest(tmp_path / "bad.jsonl", [{"audio": str(corpus.parent / "bad.wav"), "caption": "b",
                                                        "split": "train"}])
    assert _shards_cli([f"manifest={bad_only}", f"out={tmp_path / 'y'}"]) == 1
    one_error_line(f"error: {bad_only}: none of the 1 clips of split 'train' could be read")
    assert _shards_cli(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.data.shards [key=value ...]" in out
    for setting in ("manifest: ???", "out: ???", "split: null", "shard_size: null", "max_shard_mb: null",
                    "audio_format: original"):
        assert setting in out
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "audiodiff.data.shards", f"manifest={corpus}", f"out={out}",
                           "shard_size=4", "split=train"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train: 7 clip(s) in 2 shard(s) (train-000000.tar .. train-000001.tar" in done.stdout
    assert "1 unreadable clip(s) skipped" in done.stdout and f"skipped {corpus.parent / 'bad.wav'}:" in done.stdout
    assert read_index(out, "train").samples == 7


# -- datamodule and training ---------------------------------------------------------------------------------


class _Recorder(lightning.LightningModule):
    """Records (epoch, index, caption, wav) of every batch; one parameter keeps the optimiser happy."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[tuple[int, int, str, torch.Tensor]]] = {"train": [], "val": []}

    def _record(self, stage: str, batch: dict) -> None:
        for k, index in enumerate(batch["index"].tolist()):
            self.seen[stage].append((self.current_epoch, index, batch["caption"][k], batch["wav"][k].clone()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._record("train", batch)
        return (self.weight * batch["wav"].mean()).sum() + self.weight.square().sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_datamodule_feeds_lightning_with_epochs_reaching_the_workers(corpus: Path, tmp_path: Path) -> None:
    out = _shard_set(corpus, tmp_path / "shards", shard_size=3)
    dm = ShardDataModule(str(out), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2, num_workers=2, seed=5,
                         shuffle_buffer=3, skip_log_dir=str(tmp_path / "logs"))
    module = _Recorder()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert sum(isinstance(cb, ShardEpochs) for cb in trainer.callbacks) == 1
    assert dm.train_dataloader().num_workers == 2 and dm.val_dataloader().num_workers == 1  # 1 val shard
    reference = _reference(corpus, seed=5)
    train = module.seen["train"]
    for epoch in (0, 1):
        assert sorted(i for e, i, _, _ in train if e == epoch) == [0, 1, 3, 4, 5, 6, 7]
    for epoch, index, caption, wav in train:  # the epoch of every item is the trainer's
        expected = reference[(index, epoch)]
        torch.testing.assert_close(wav, expected["wav"], rtol=0, atol=0)
        assert caption == expected["caption"]
    orders = [[i for e, i, _, _ in train if e == epoch] for epoch in (0, 1)]
    assert orders[0] != orders[1]
    assert sorted(i for e, i, _, _ in module.seen["val"] if e == 0) == [0, 1]
    assert {c for _, _, c, _ in module.seen["val"]} == {"val"}
    assert dm.captions("train")[:2] == ["long 0 a", "long 0 b"] and "bad" not in dm.captions("train")
    assert dm.captions("val") == ["val", "val 0", "val 1"]
    assert dm.skipped_clips() == {} and dm.report_skipped(1) == 0


def test_datamodule_setup_checks(corpus: Path, tmp_path: Path) -> None:
    out = _shard_set(corpus, tmp_path / "shards", split="train", shard_size=3)
    dm = ShardDataModule(str(out), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2, num_workers=4)
    with pytest.raises(ShardCountError, match=r"3 shard\(s\) cannot feed 1 rank\(s\) x 4 DataLoader worker\(s\)"):
        dm.setup("fit")
    dm = ShardDataModule(str(out), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2, num_workers=0)
    dm.setup("fit")  # no val shards: training goes on without validation
    assert dm.val_dataloader() == [] and dm.captions("val") == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["wav"].shape == (2, 1, SEG_SAMPLES) and batch["mask"].shape == (2, SEG_SAMPLES)
    with pytest.raises(ShardIndexError, match="no index test.json"):
        dm.setup("test")


def test_debug_recipe_trains_on_shards(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(6):
        _ramp(src / f"t{i}.wav", 1.2, 0.05 * i, sample_rate=16000)
        rows.append({"audio": f"t{i}.wav", "caption": f"beep {i}", "split": "train" if i < 4 else "val"})
    out = _shard_set(write_manifest(src / "m.jsonl", rows), tmp_path / "shards", shard_size=2)
    run_dir = tmp_path / "run"
    cfg = compose_config("train", ["recipe=debug", "data=shards", f"data.shards={out}", f"run_dir={run_dir}",
                                   "trainer.max_steps=3", "preview.every_n_steps=0"])
    assert cfg.data._target_ == "audiodiff.data.shard_datamodule.ShardDataModule"
    assert cfg.data.segment_seconds == 1.0 and cfg.data.num_workers == 0
    from audiodiff.export import load_checkpoint
    from audiodiff.training.diffusion.run import train

    train(cfg)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert ckpt["audiodiff"]["config"]["data"]["shards"] == str(out)
    assert (run_dir / "export" / "model.safetensors").is_file()
    # A recipe that picks its own data group still takes the shards from the command line.
    assert compose_config("train", ["recipe=sfx", "data=shards", f"data.shards={out}"]).data.shards == str(out)


# -- stereo ----------------------------------------------------------------------------------------------------


def test_stereo_items_at_another_rate_equal_the_manifest_dataset_items(corpus: Path, tmp_path: Path) -> None:
    """channels=2 at 44.1 kHz from clips at 8 and 16 kHz, mono and stereo: every clip is resampled to the asked rate,
    a mono clip fills both channels, a stereo one keeps its own; shards and the manifest dataset agree."""
    out = _shard_set(corpus, tmp_path / "shards", shard_size=3)
    settings = {"sample_rate": 44100, "channels": 2, "train": False}
    stream, reference = _stream(out, **settings), _reference(corpus, **settings)
    items = list(stream)
    assert [item["index"] for item in items] == [0, 1, 3, 4, 5, 6, 7]
    for item in items:
        assert item["wav"].shape == (2, round(44100 * SEGMENT))
        _assert_same_item(item, reference[item["index"]])
    assert all(torch.equal(item["wav"][0], item["wav"][1]) for item in items)  # every clip here is centred


def test_a_six_channel_clip_is_skipped_naming_file_field_and_counts(tmp_path: Path) -> None:
    src = tmp_path / "six"
    src.mkdir()
    _ramp(src / "ok.wav", 0.6, 0.1, channels=2)
    _ramp(src / "surround.wav", 0.6, 0.2, channels=6)
    manifest = write_manifest(src / "m.jsonl", [{"audio": "ok.wav", "caption": "ok", "split": "train"},
                                                {"audio": "surround.wav", "caption": "5.1", "split": "train"}])
    out = _shard_set(manifest, tmp_path / "shards")
    stream = _stream(out, channels=2, train=False)
    assert [item["index"] for item in stream] == [0]
    (reason,) = stream.failures().values()
    assert "channels: expected 2, got 6" in reason and "surround.wav" in reason
    reference = _reference(manifest, channels=2, train=False)
    assert reference[1]["index"] == 0  # the manifest dataset skips it too, to a readable clip
