"""AudioCaptionDataset, EpochSampler, collate and AudioDataModule on tiny generated clips."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiodiff.audio.io import load_audio
from audiodiff.data.datamodule import SKIP_LOG_NAME, AudioDataModule, SkippedClipsReport
from audiodiff.data.dataset import (
    AudioCaptionDataset,
    EpochSampler,
    NoReadableAudioError,
    collate,
    read_skips,
)
from audiodiff.data.manifest import write_manifest

SR = 8000
SEGMENT = 0.5
SEG_SAMPLES = int(SR * SEGMENT)


def _ramp(path: Path, seconds: float, start: float, sample_rate: int = SR, channels: int = 1) -> Path:
    """A float WAV whose every sample is distinct (start + k * 1e-5), so a crop's offset can be read back."""
    frames = round(seconds * sample_rate)
    data = (start + 1e-5 * np.arange(frames, dtype=np.float64)).astype(np.float32)
    sf.write(path, np.stack([data] * channels, axis=1), sample_rate, subtype="FLOAT")
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Train: 4 long clips (1.5 s), 1 short (0.25 s), 1 corrupt; val: 2 clips; test: 1 clip."""
    rows = []
    for i in range(4):
        _ramp(tmp_path / f"long{i}.wav", 1.5, start=0.1 * i)
        rows.append({"audio": f"long{i}.wav", "caption": [f"long {i} a", f"long {i} b", f"long {i} c"],
                     "split": "train", "attributes": {"n": i}})
    _ramp(tmp_path / "short.wav", 0.25, start=0.5)
    rows.append({"audio": "short.wav", "caption": "short", "split": "train", "attributes": {"n": 4}})
    _corrupt(tmp_path / "bad.wav")
    rows.insert(2, {"audio": "bad.wav", "caption": "bad", "split": "train"})
    for i in range(2):
        _ramp(tmp_path / f"val{i}.wav", 1.0, start=0.6 + 0.1 * i)
        rows.append({"audio": f"val{i}.wav", "caption": ["val", f"val {i}"], "split": "val"})
    _ramp(tmp_path / "test0.wav", 0.75, start=0.9)
    rows.append({"audio": "test0.wav", "caption": "long 0 a", "split": "test"})
    return write_manifest(tmp_path / "manifest.jsonl", rows)


def _dataset(manifest: Path, split: str = "train", train: bool = True, **kwargs) -> AudioCaptionDataset:
    kwargs = {"sample_rate": SR, "segment_seconds": SEGMENT, "seed": 3} | kwargs
    return AudioCaptionDataset(manifest, split, train=train, **kwargs)


def _offset(item: dict, source: Path) -> int:
    data, _ = sf.read(source, dtype="float32", always_2d=True)
    first = item["wav"][0, 0].item()
    offset = int(np.argmin(np.abs(data[:, 0] - first)))
    return offset


def test_items_are_crops_of_the_file_with_masks(corpus: Path) -> None:
    ds = _dataset(corpus)
    assert len(ds) == 6 and ds.segment_samples == SEG_SAMPLES
    item = ds[(0, 0)]
    assert item["wav"].shape == (1, SEG_SAMPLES) and item["wav"].dtype == torch.float32
    assert item["mask"].shape == (SEG_SAMPLES,) and item["mask"].dtype == torch.bool and item["mask"].all()
    data, _ = sf.read(corpus.parent / "long0.wav", dtype="float32", always_2d=True)
    offset = _offset(item, corpus.parent / "long0.wav")
    assert 0 <= offset <= data.shape[0] - SEG_SAMPLES
    torch.testing.assert_close(item["wav"][0], torch.from_numpy(data[offset:offset + SEG_SAMPLES, 0]))
    assert item["caption"] in {"long 0 a", "long 0 b", "long 0 c"}
    assert (item["attributes"], item["index"]) == ({"n": 0}, 0)
    assert item["audio"] == str(corpus.parent / "long0.wav")

    short = ds[(5, 0)]  # 0.25 s clip: real audio then zeros
    valid = round(0.25 * SR)
    assert short["mask"][:valid].all() and not short["mask"][valid:].any()
    assert torch.all(short["wav"][:, valid:] == 0)
    assert short["wav"][0, 0].item() == pytest.approx(0.5) and short["caption"] == "short"


def test_eval_items_start_at_zero_and_use_the_first_caption(corpus: Path) -> None:
    ds = _dataset(corpus, train=False)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[1]
        assert _offset(item, corpus.parent / "long1.wav") == 0
        assert item["caption"] == "long 1 a"


def test_resampling_and_channel_conversion(tmp_path: Path) -> None:
    _ramp(tmp_path / "stereo.wav", 1.0, start=0.2, sample_rate=16000, channels=2)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"audio": "stereo.wav", "caption": "x"}])
    mono = _dataset(manifest, split=None, train=False)[0]
    reference, _ = load_audio(tmp_path / "stereo.wav", sample_rate=SR, channels=1)
    torch.testing.assert_close(mono["wav"], reference[:, :SEG_SAMPLES])
    _ramp(tmp_path / "mono.wav", 1.0, start=0.2)
    manifest = write_manifest(tmp_path / "n.jsonl", [{"audio": "mono.wav", "caption": "x"}])
    stereo = _dataset(manifest, split=None, train=False, channels=2)[0]
    assert stereo["wav"].shape == (2, SEG_SAMPLES)
    torch.testing.assert_close(stereo["wav"][0], stereo["wav"][1])


def test_train_draws_every_caption_and_new_crops_across_epochs(corpus: Path) -> None:
    ds = _dataset(corpus)
    captions, offsets = set(), set()
    for epoch in range(12):
        item = ds[(0, epoch)]
        captions.add(item["caption"])
        offsets.add(_offset(item, corpus.parent / "long0.wav"))
    assert captions == {"long 0 a", "long 0 b", "long 0 c"}
    assert len(offsets) >= 10  # 8001 possible offsets: repeats are rare
    # Same key, same item; set_epoch drives plain integer keys.
    torch.testing.assert_close(ds[(0, 4)]["wav"], ds[(0, 4)]["wav"])
    ds.set_epoch(4)
    torch.testing.assert_close(ds[0]["wav"], ds[(0, 4)]["wav"])
    # Another seed gives other crops.
    other = _dataset(corpus, seed=4)
    assert not torch.equal(other[(0, 4)]["wav"], ds[(0, 4)]["wav"])


def _epochs(ds: AudioCaptionDataset, num_workers: int, epochs: int = 2) -> list[list[dict]]:
    sampler = EpochSampler(len(ds), seed=7)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                        persistent_workers=num_workers > 0)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append(list(loader))
    return out


def test_batches_do_not_depend_on_worker_count(corpus: Path) -> None:
    serial = _epochs(_dataset(corpus), num_workers=0)
    parallel = _epochs(_dataset(corpus), num_workers=2)
    for a_epoch, b_epoch in zip(serial, parallel, strict=True):
        for a, b in zip(a_epoch, b_epoch, strict=True):
            torch.testing.assert_close(a["wav"], b["wav"], rtol=0, atol=0)
            assert torch.equal(a["mask"], b["mask"])
            assert a["caption"] == b["caption"] and torch.equal(a["index"], b["index"])
    order = [torch.cat([b["index"] for b in epoch]).tolist() for epoch in serial]
    assert order[0] != order[1]  # reshuffled
    first = {i: b["wav"][k] for b in serial[0] for k, i in enumerate(b["index"].tolist())}
    second = {i: b["wav"][k] for b in serial[1] for k, i in enumerate(b["index"].tolist())}
    assert not torch.equal(first[0], second[0])  # new crop of a long clip


def test_epoch_sampler_is_a_seeded_permutation() -> None:
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(3)
    keys = list(sampler)
    assert sorted(i for i, _ in keys) == list(range(10)) and {e for _, e in keys} == {3}
    assert list(sampler)[0][1] == 4  # without set_epoch, iterating again moves on
    again = EpochSampler(10, seed=1)
    again.set_epoch(3)
    assert list(again) == keys
    assert [i for i, _ in EpochSampler(5, shuffle=False)] == [0, 1, 2, 3, 4]


def test_unreadable_clip_is_skipped_recorded_and_logged_once(corpus: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    skip_log = tmp_path / "logs" / SKIP_LOG_NAME
    ds = _dataset(corpus, skip_log=skip_log)
    with caplog.at_level(logging.WARNING, logger="audiodiff.data.dataset"):
        item = ds[(2, 5)]  # row 2 is the corrupt file: row 3 stands in, with its own crop
        again = ds[(2, 6)]
    assert item["index"] == 3 and again["index"] == 3
    torch.testing.assert_close(item["wav"], ds[(3, 5)]["wav"], rtol=0, atol=0)
    bad = str(corpus.parent / "bad.wav")
    assert list(ds.failures()) == [bad] and "not a readable audio file" in ds.failures()[bad]
    warnings = [r for r in caplog.records if "skipping unreadable clip" in r.getMessage()]
    assert len(warnings) == 1 and bad in warnings[0].getMessage()
    assert read_skips(skip_log) == ds.failures()
    assert len(skip_log.read_text().splitlines()) == 1


def test_skips_from_worker_processes_reach_the_log(corpus: Path, tmp_path: Path) -> None:
    skip_log = tmp_path / SKIP_LOG_NAME
    ds = _dataset(corpus, skip_log=skip_log)
    batches = _epochs(ds, num_workers=2, epochs=1)[0]
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(indices) == [0, 1, 3, 3, 4, 5]  # the corrupt row 2 is replaced by row 3
    assert ds.failures() == {}  # the main process loaded nothing itself
    assert list(read_skips(skip_log)) == [str(corpus.parent / "bad.wav")]


def test_all_clips_unreadable_raises(tmp_path: Path) -> None:
    corrupt = str(_corrupt(tmp_path / "c.wav"))
    rows = [{"audio": "missing.wav", "caption": "x"}, {"audio": corrupt, "caption": "y"}]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    ds = _dataset(manifest, split=None)
    with pytest.raises(NoReadableAudioError, match=r"none of the 2 clips in split None could be loaded"):
        ds[0]
    with pytest.raises(NoReadableAudioError, match="missing.wav: no such file"):
        ds[1]  # already known bad: the message still names a reason


def test_bad_arguments(corpus: Path) -> None:
    splits = r"\['test', 'train', 'val'\]"
    with pytest.raises(ValueError, match=rf"no rows in split 'dev'; the manifest's splits are {splits}"):
        _dataset(corpus, split="dev")
    with pytest.raises(ValueError, match="gives 0 samples"):
        _dataset(corpus, segment_seconds=1e-6)
    with pytest.raises(IndexError):
        _dataset(corpus)[6]


def test_collate_batches_items(corpus: Path) -> None:
    ds = _dataset(corpus)
    batch = collate([ds[(0, 0)], ds[(5, 0)]])
    assert batch["wav"].shape == (2, 1, SEG_SAMPLES) and batch["mask"].shape == (2, SEG_SAMPLES)
    assert batch["mask"].dtype == torch.bool and batch["index"].tolist() == [0, 5]
    assert batch["caption"][1] == "short" and batch["attributes"] == [{"n": 0}, {"n": 4}]
    assert isinstance(batch["audio"][0], str)


# -- datamodule ---------------------------------------------------------------------------------------------


class _Recorder(lightning.LightningModule):
    """Records what every batch held; a single parameter keeps the optimiser happy."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[tuple[int, int, str, torch.Tensor]]] = {"train": [], "val": []}

    def _record(self, stage: str, batch: dict) -> None:
        epoch = self.current_epoch
        for k, index in enumerate(batch["index"].tolist()):
            self.seen[stage].append((epoch, index, batch["caption"][k], batch["wav"][k].clone()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert batch["wav"].shape[1:] == (1, SEG_SAMPLES)
        self._record("train", batch)
        return (self.weight * batch["wav"].mean()).sum() + self.weight.square().sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_datamodule_end_to_end_with_workers(corpus: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    dm = AudioDataModule(str(corpus), sample_rate=SR, segment_seconds=SEGMENT, batch_size=4, num_workers=2,
                         seed=5, skip_log_dir=str(tmp_path / "logs"))
    module = _Recorder()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with caplog.at_level(logging.INFO, logger="audiodiff.data.datamodule"):
        trainer.fit(module, datamodule=dm)
    assert sum(isinstance(cb, SkippedClipsReport) for cb in trainer.callbacks) == 1

    train = module.seen["train"]
    assert len(train) == 12
    for epoch in (0, 1):
        indices = sorted(i for e, i, _, _ in train if e == epoch)
        assert indices == [0, 1, 3, 3, 4, 5]
    # Each item equals what the dataset gives for (index, epoch): the epoch reached the persistent workers.
    reference = _dataset(corpus, seed=5)
    for epoch, index, caption, wav in train:
        expected = reference[(index, epoch)]  # row 3 also stands in for the corrupt row 2, with its own key
        torch.testing.assert_close(wav, expected["wav"], rtol=0, atol=0)
        assert caption == expected["caption"]
    crops = {(e, i): w for e, i, _, w in train if i != 3}
    assert not torch.equal(crops[(0, 0)], crops[(1, 0)])

    val = module.seen["val"]
    assert sorted(i for e, i, _, _ in val if e == 0) == [0, 1]
    assert {c for _, _, c, _ in val} == {"val"}  # eval uses the first caption

    bad = str(corpus.parent / "bad.wav")
    assert list(dm.skipped_clips()) == [bad]
    assert (tmp_path / "logs" / SKIP_LOG_NAME).exists()
    summaries = [r.getMessage() for r in caplog.records if r.name == "audiodiff.data.datamodule"]
    assert any("epoch 0: 1 unreadable clip(s) skipped (1 in total so far)" in m for m in summaries)
    assert any("epoch 1: no new unreadable clips (1 skipped in total)" in m for m in summaries)


def test_datamodule_test_split_captions_and_errors(corpus: Path) -> None:
    dm = AudioDataModule(str(corpus), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2, num_workers=0,
                         val_batch_size=3)
    assert dm.captions("val") == ["val", "val 0", "val 1"]
    assert dm.captions("train")[:4] == ["long 0 a", "long 0 b", "long 0 c", "long 1 a"]
    assert len(dm.captions("train")) == 14
    with pytest.raises(RuntimeError, match="the test dataset is not built"):
        dm.test_dataloader()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["wav"].shape == (1, 1, SEG_SAMPLES) and batch["caption"] == ["long 0 a"]
    assert dm.skip_log.name == SKIP_LOG_NAME and dm.skip_log.parent.is_dir()
    with pytest.raises(ValueError, match="needs a manifest path or a built-in corpus name"):
        AudioDataModule(None, sample_rate=SR, segment_seconds=SEGMENT, batch_size=2)


def test_datamodule_builds_the_named_corpus_on_first_use(corpus: Path, tmp_path: Path) -> None:
    calls = []

    def fake_ensure(name: str, root: str) -> Path:
        calls.append((name, root))
        return corpus

    without = AudioDataModule("", corpus="sfx", root=str(tmp_path), sample_rate=SR, segment_seconds=SEGMENT,
                              batch_size=2, num_workers=0)
    with pytest.raises(FileNotFoundError, match="python -m audiodiff.prepare corpus=sfx"):
        without.prepare_data()  # no builder given: a missing corpus says how to build it
    dm = AudioDataModule("", corpus="sfx", root="somewhere", sample_rate=SR, segment_seconds=SEGMENT,
                         batch_size=2, num_workers=0, corpus_builder=fake_ensure)
    dm.prepare_data()
    assert calls == [("sfx", "somewhere")]
    dm.setup("validate")
    assert len(dm.val_dataloader().dataset) == 2
    assert dm.manifest_path() == corpus


def test_datamodule_without_val_rows_trains_without_validation(corpus: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    dm = AudioDataModule(str(corpus), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2, num_workers=0,
                         val_split="dev")
    with caplog.at_level(logging.WARNING, logger="audiodiff.data.datamodule"):
        dm.setup("fit")
    assert dm.val_dataloader() == []
    assert any("no rows in split 'dev'" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="no rows in split 'dev'"):
        AudioDataModule(str(corpus), sample_rate=SR, segment_seconds=SEGMENT, batch_size=2,
                        test_split="dev").setup("test")
