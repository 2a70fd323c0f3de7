"""The latent cache (`stage=encode`): cached latents equal the encoder's, the diffusion stage trains on them with the
waveform path's batches, a cache made for another representation is refused by the datamodule and rebuilt by the
stage, an unfinished cache is never read, unreadable clips are skipped and counted, and the loader resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.audio.io import load_audio
from audiodiff.conditioning.cache import encoder_signature, load_text_cache
from audiodiff.conditioning.timing import frame_mask
from audiodiff.config import compose_config
from audiodiff.data.datamodule import SKIP_LOG_NAME, AudioDataModule
from audiodiff.data.dataset import read_skips
from audiodiff.data.latent_cache import LatentCache, LatentCacheError, LatentCacheMismatchError, cache_digest
from audiodiff.data.latent_datamodule import LatentDataModule
from audiodiff.data.manifest import read_manifest, write_manifest
from audiodiff.representations.mel import MelRepresentation
from audiodiff.training.diffusion.task import fit_representation
from audiodiff.training.encode import build_representation
from audiodiff.training.stages import is_finished, run_stages

SR = 16000
TRAIN_SECONDS = [0.5, 0.75, 1.25, 0.75, 1.5, 0.5]  # equal lengths share an encoder batch
VAL_SECONDS = [0.6, 1.4]  # shorter than the 1 s debug segment (padded) and longer (cropped)


def _tone(path: Path, seconds: float, freq: float, seed: int) -> None:
    t = np.arange(round(seconds * SR)) / SR
    noise = np.random.default_rng(seed).standard_normal(t.size)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * noise).astype(np.float32), SR, subtype="FLOAT")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train: 6 tones and an unreadable file (third row); val: 2 tones."""
    src = tmp_path_factory.mktemp("clips")
    rows = []
    for i, seconds in enumerate(TRAIN_SECONDS + VAL_SECONDS):
        _tone(src / f"c{i}.wav", seconds, 200.0 + 150 * i, i)
        split = "train" if i < len(TRAIN_SECONDS) else "val"
        rows.append({"audio": f"c{i}.wav", "caption": [f"tone {i}", f"a {i} hum"], "split": split,
                     "attributes": {"i": i}})
    (src / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    rows.insert(2, {"audio": "bad.wav", "caption": "bad", "split": "train"})
    return write_manifest(src / "manifest.jsonl", rows)


def _command(manifest: Path, run: Path, *extra: str) -> list[str]:
    # debug_staged skips the text states to stay fast on the full corpus; here they are part of what is tested.
    return ["recipe=debug_staged", "data=manifest", f"data.manifest={manifest}", f"run_dir={run}",
            "data.batch_size=2", "stage_settings.encode.text_states=true", *extra]


def _stage_cfg(manifest: Path, run: Path, *extra: str):
    return compose_config("train", [*_command(manifest, run, *extra), "stage=encode"])


@pytest.fixture(scope="module")
def encoded(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose encode stage ran (through the stage runner)."""
    run = tmp_path_factory.mktemp("run")
    assert run_stages([*_command(manifest, run), "stage=encode"]) == [run / "encode"]
    return run


def _latent_datamodule(manifest: Path, cache: Path, *extra: str) -> tuple[LatentDataModule, MelRepresentation]:
    cfg = compose_config("train", ["recipe=debug", "data=manifest", f"data.manifest={manifest}", "latents=cache",
                                   f"data.cache={cache}", "data.batch_size=2", *extra])
    dm = instantiate(cfg.data)
    representation = instantiate(cfg.representation)
    dm.bind(representation, OmegaConf.to_container(cfg.representation, resolve=True))
    return dm, representation


def _copy_run(encoded: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(encoded / "encode", run / "encode")
    return run


# ---- what the cache holds -------------------------------------------------------------------------------------------
def test_cached_latents_equal_the_encoder_on_whole_clips(manifest: Path, encoded: Path) -> None:
    cache = LatentCache(encoded / "encode" / "cache")
    cfg = _stage_cfg(manifest, encoded)
    representation = build_representation(cfg)
    # The statistics are those the diffusion stage would fit on waveforms (its first stats_batches batches).
    audio = instantiate(cfg.data)
    audio.setup("fit")
    fit_representation(representation, audio.train_dataloader(), cfg.task.stats_batches, "cpu")
    for name, value in cache.representation_state().items():
        torch.testing.assert_close(value, representation.state_dict()[name])
    for split, seconds in (("train", TRAIN_SECONDS), ("val", VAL_SECONDS)):
        rows = read_manifest(manifest, split)
        clips = cache.clips(split)
        assert [c.row for c in clips] == [i for i, r in enumerate(rows) if r.audio.name != "bad.wav"]
        assert [c.samples for c in clips] == [round(s * SR) for s in seconds]
        for clip in clips:
            row = rows[clip.row]
            assert (clip.audio, clip.captions, clip.attributes) == (str(row.audio), row.captions, row.attributes)
            wav, _ = load_audio(row.audio, sample_rate=SR, channels=1)
            expected = representation.encode(wav[None])[0]
            torch.testing.assert_close(cache.latents(clip), expected, rtol=1e-5, atol=1e-5)
    states = load_text_cache(cache.text_states, encoder_signature(instantiate(cfg.text_encoder)))
    assert states is not None
    assert set(states) == {"", *(c for row in read_manifest(manifest) if row.split != "test" for c in row.captions)}


def test_unreadable_clips_are_skipped_and_counted(encoded: Path) -> None:
    folder = encoded / "encode" / "cache"
    skipped = LatentCache(folder).skipped()
    assert list(skipped) == [str(Path(LatentCache(folder).clips("train")[0].audio).parent / "bad.wav")]
    assert "not a readable audio file" in next(iter(skipped.values()))
    assert read_skips(folder / SKIP_LOG_NAME).keys() == skipped.keys()
    export = json.loads((encoded / "encode" / "export" / "export.json").read_text())
    assert export["clips"] == {"train": 6, "val": 2} and export["skipped"] == 1


# ---- the diffusion stage reads it ----------------------------------------------------------------------------------
def test_latent_batches_match_the_waveform_path(manifest: Path, encoded: Path) -> None:
    dm, representation = _latent_datamodule(manifest, encoded / "encode" / "cache")
    dm.setup("fit")
    representation.load_state_dict(dm.representation_state(), strict=False)
    audio = AudioDataModule(str(manifest), sample_rate=SR, segment_seconds=1.0, batch_size=2, num_workers=0)
    audio.setup("fit")
    latent_batch = next(iter(dm.val_dataloader()))
    wav_batch = next(iter(audio.val_dataloader()))
    assert set(latent_batch) - {"latents"} == set(wav_batch) - {"wav"}
    z = representation.encode(wav_batch["wav"])
    assert latent_batch["latents"].shape == z.shape == (2, 64, dm.segment_frames)
    assert latent_batch["mask"].shape == (2, dm.segment_frames)
    assert frame_mask(latent_batch["mask"], z.shape[-1]).shape == frame_mask(wav_batch["mask"], z.shape[-1]).shape
    for key in ("index", "seconds_start", "seconds_total"):
        torch.testing.assert_close(latent_batch[key], wav_batch[key])
    for key in ("caption", "attributes", "audio"):
        assert latent_batch[key] == wav_batch[key]
    # Frames whose windows lie inside the clip are the waveform path's; past the end both hold silence.
    hop, n_fft = representation.hop_length, representation.n_fft
    for b, seconds in enumerate(VAL_SECONDS):
        samples = min(round(seconds * SR), SR)
        inside = (samples - n_fft // 2) // hop
        torch.testing.assert_close(latent_batch["latents"][b, :, :inside], z[b, :, :inside], rtol=1e-4, atol=1e-4)
        assert latent_batch["mask"][b].sum() == min(samples // hop + 1, dm.segment_frames)
        past = (samples + n_fft) // hop + 1
        if past < z.shape[-1]:
            torch.testing.assert_close(latent_batch["latents"][b, :, past:], z[b, :, past:], rtol=1e-4, atol=1e-4)
    # Training crops: the clip's own frames, offsets in latent frames.
    batch = next(iter(dm.train_dataloader()))
    cache = dm.cache
    for b in range(2):
        clip = next(c for c in cache.clips("train") if c.row == int(batch["index"][b]))
        offset = round(float(batch["seconds_start"][b]) * cache.frame_rate)
        real = int(batch["mask"][b].sum())
        torch.testing.assert_close(batch["latents"][b, :, :real], cache.latents(clip)[:, offset:offset + real])


def test_diffusion_trains_on_the_cache_without_the_encoder(manifest: Path, encoded: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from audiodiff.training.diffusion.run import train

    calls = []
    encode = MelRepresentation.encode

    def counting(self, wav):
        calls.append(wav.detach().clone())
        return encode(self, wav)

    monkeypatch.setattr(MelRepresentation, "encode", counting)
    cache = encoded / "encode" / "cache"
    run = tmp_path / "diffusion"
    cfg = compose_config("train", ["recipe=debug", "data=manifest", f"data.manifest={manifest}", "latents=cache",
                                   f"data.cache={cache}", f"run_dir={run}", "trainer.max_steps=2",
                                   "preview.every_n_steps=0", "preview.prompts=[]"])
    assert train(cfg) == run
    assert len(calls) == 1 and calls[0].shape == (1, 1, SR) and not calls[0].any()  # bind's shape probe only
    exported = load_file(str(run / "export" / "model.safetensors"))
    for name, value in LatentCache(cache).representation_state().items():
        torch.testing.assert_close(exported[f"representation.{name}"], value)


def test_a_diffusion_stage_trained_on_a_rebuilt_cache_is_stale_and_stops(manifest: Path, encoded: Path,
                                                                        tmp_path: Path) -> None:
    from audiodiff.training.diffusion.run import ResumeMismatchError, is_current, train

    run = _copy_run(encoded, tmp_path)
    cfg = compose_config("train", ["recipe=debug", "data=manifest", f"data.manifest={manifest}", "latents=cache",
                                   f"data.cache={run / 'encode' / 'cache'}", f"run_dir={run}", "trainer.max_steps=1",
                                   "preview.every_n_steps=0", "preview.prompts=[]"])
    train(cfg)
    digest = cache_digest(run / "encode" / "cache")
    assert json.loads((run / "export" / "export.json").read_text())["latent_cache"] == digest
    assert is_current(cfg) and is_finished(cfg, "diffusion")
    index_path = run / "encode" / "cache" / "cache.json"   # as if the encode stage rebuilt it for other weights
    index = json.loads(index_path.read_text())
    index["signature"]["representation"]["state"] = "0" * 64
    index_path.write_text(json.dumps(index))
    assert cache_digest(run / "encode" / "cache") != digest
    assert not is_current(cfg) and not is_finished(cfg, "diffusion")
    with pytest.raises(ResumeMismatchError, match=rf"trained on another latent cache \(latent_cache: was "
                                                  rf"'{digest}', now '[0-9a-f]{{16}}'\).*delete .*checkpoints"):
        train(cfg)


def test_a_cache_without_text_states_leaves_captions_to_training(manifest: Path, tmp_path: Path) -> None:
    command = ["recipe=debug_staged", "data=manifest", f"data.manifest={manifest}", f"run_dir={tmp_path}"]
    assert run_stages([*command, "stage=encode"]) == [tmp_path / "encode"]   # the recipe's stage.text_states=false
    cache = LatentCache(tmp_path / "encode" / "cache")
    assert cache.text_states is None and cache.clips("train")
    assert not (tmp_path / "encode" / "cache" / "text_states.safetensors").exists()


# ---- invalidation ---------------------------------------------------------------------------------------------------
def test_a_changed_representation_is_refused_by_the_datamodule(manifest: Path, encoded: Path) -> None:
    cache = encoded / "encode" / "cache"
    dm, _ = _latent_datamodule(manifest, cache, "representation.n_mels=32")
    with pytest.raises(LatentCacheMismatchError, match=r"representation\.config\.n_mels: expected 32, found 64"):
        dm.setup("fit")
    dm, representation = _latent_datamodule(manifest, cache)
    dm.setup("fit")  # the same representation is accepted
    found = dm.cache.signature["representation"]["state"]
    representation.mean.add_(0.5)  # other weights, same configuration: e.g. a retrained autoencoder
    cfg = OmegaConf.to_container(compose_config("train", ["recipe=debug"]).representation, resolve=True)
    dm.bind(representation, cfg)
    with pytest.raises(LatentCacheMismatchError, match=rf"representation\.state: expected '\w+', found '{found}'"):
        dm.setup("fit")


def test_the_signature_fingerprints_weights_held_outside_the_module_tree(tmp_path: Path) -> None:
    """A codec's weights load from its folder, outside the representation's state_dict; they count all the same."""
    from transformers import EncodecConfig, EncodecModel

    from audiodiff.data.latent_cache import representation_signature
    from audiodiff.representations.codec import CodecRepresentation

    tiny = dict(num_filters=4, upsampling_ratios=[8, 4], hidden_size=8, num_lstm_layers=1, codebook_size=16,
                target_bandwidths=[1.0], kernel_size=3, last_kernel_size=3, sampling_rate=SR)
    digests = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        folder = tmp_path / f"codec{len(digests)}"
        EncodecModel(EncodecConfig(**tiny)).save_pretrained(folder)
        rep = CodecRepresentation("encodec", str(folder))
        digests.append(representation_signature(rep, {"_target_": "codec"})["state"])
    assert digests[0] == digests[1] != digests[2]


def test_a_changed_representation_makes_the_encode_stage_rebuild(manifest: Path, encoded: Path,
                                                                 tmp_path: Path) -> None:
    run = _copy_run(encoded, tmp_path)
    index = run / "encode" / "cache" / "cache.json"
    before = index.stat().st_mtime_ns
    assert is_finished(_stage_cfg(manifest, run), "encode")
    assert run_stages([*_command(manifest, run), "stage=encode"]) == [run / "encode"]
    assert index.stat().st_mtime_ns == before  # matching signature: kept
    changed = _stage_cfg(manifest, run, "representation.n_mels=32")
    assert (run / "encode" / "export" / "export.json").is_file() and not is_finished(changed, "encode")
    assert run_stages([*_command(manifest, run, "representation.n_mels=32"), "stage=encode"]) == [run / "encode"]
    cache = LatentCache(run / "encode" / "cache")
    assert cache.latent_channels == 32 and cache.latents(cache.clips("train")[0]).shape[0] == 32
    assert is_finished(changed, "encode") and not is_finished(_stage_cfg(manifest, run), "encode")


def test_an_unfinished_cache_is_never_read(manifest: Path, encoded: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run = _copy_run(encoded, tmp_path)
    folder = run / "encode" / "cache"
    (folder / "cache.json").unlink()  # shards on disk, final marker missing
    with pytest.raises(LatentCacheError, match="no cache.json"):
        LatentCache(folder)
    dm, _ = _latent_datamodule(manifest, folder)
    with pytest.raises(LatentCacheError, match="no finished cache"):
        dm.setup("fit")
    assert (run / "encode" / "export" / "export.json").is_file()
    assert not is_finished(_stage_cfg(manifest, run), "encode")
    # A build that stops half-way leaves neither the marker nor the export.
    import audiodiff.training.encode as encoding

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoding, "encode_split", fail)
    with pytest.raises(KeyboardInterrupt):
        run_stages([*_command(manifest, run), "stage=encode"])
    assert not (folder / "cache.json").exists() and not (run / "encode" / "export").exists()
    monkeypatch.undo()
    assert run_stages([*_command(manifest, run), "stage=encode"]) == [run / "encode"]
    assert LatentCache(folder).clips("train") and is_finished(_stage_cfg(manifest, run), "encode")


# ---- exact resume ---------------------------------------------------------------------------------------------------
def _draw(loader, epoch: int) -> list[dict]:
    """The rest of an epoch's batches, drawn as Lightning draws them (iterator first, then set_epoch)."""
    it = iter(loader)
    loader.sampler.set_epoch(epoch)
    return list(it)


def _same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a["latents"], b["latents"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["index"], b["index"]) and a["caption"] == b["caption"]


def test_the_loader_resumes_with_the_same_batches(manifest: Path, encoded: Path) -> None:
    cache = encoded / "encode" / "cache"
    dm, _ = _latent_datamodule(manifest, cache)
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    loader.sampler.set_epoch(0)
    next(it)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 1, "num_replicas": 1, "num_items": 6}
    rest, next_epoch = list(it), _draw(loader, 1)  # 6 clips, batch 2: two batches left, then epoch 1
    resumed_dm, _ = _latent_datamodule(manifest, cache)
    resumed_dm.setup("fit")
    resumed = resumed_dm.train_dataloader()
    resumed.load_state_dict(state)
    _same_batches(_draw(resumed, 0), rest)
    _same_batches(_draw(resumed, 1), next_epoch)
