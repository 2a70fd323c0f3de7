"""The encode stage: a run's training and validation clips encoded once into a latent cache
(:mod:`audiodiff.data.latent_cache`), which the diffusion stage then reads (`latents=cache`) without the encoder.

`encode_latents(cfg)` reads `cfg.stage` (conf/stage/encode.yaml) of train.yaml composed with `stage=encode`. It reuses
the cache when its signature matches the configuration and rebuilds it otherwise: another representation (other
settings, retrained autoencoder weights), other data, or another cache format. :func:`is_current` is the check the
stage runner (:mod:`audiodiff.training.stages`) makes before it skips a finished encode stage.

The statistics are fitted as the diffusion stage fits them on waveforms (the first `task.stats_batches` training
batches of the data group), then every whole clip (no crop, no padding) is encoded with them. Clips of equal length
are encoded together, so each clip's latents are exactly `representation.encode` of that clip alone; unreadable
clips are skipped, logged and counted.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from audiodiff import __version__
from audiodiff.audio.errors import AudioError
from audiodiff.audio.io import load_audio
from audiodiff.conditioning.cache import cached_states
from audiodiff.data.datamodule import SKIP_LOG_NAME, AudioDataModule
from audiodiff.data.dataset import append_skip
from audiodiff.data.latent_cache import (
    INDEX_NAME,
    TEXT_STATES_NAME,
    LatentShardWriter,
    cache_signature,
    new_index,
    read_index,
    save_representation_state,
    signature_differences,
)
from audiodiff.data.latent_datamodule import LatentDataModule
from audiodiff.data.manifest import ManifestRow, read_manifest
from audiodiff.representations.base import Representation
from audiodiff.training.data import build_datamodule
from audiodiff.training.diffusion.task import fit_representation
from audiodiff.utils.files import write_json

log = logging.getLogger(__name__)

CACHE_DIR = "cache"  # the cache's folder inside the stage's run directory (conf/latents/cache.yaml reads it there)
PENDING_BATCHES = 8  # decoded clips wait for this many batches' worth before they are grouped by length and encoded
SILENCE_SECONDS = 2.0  # the silence frame is the middle frame of this much encoded silence (no edge effects)


def cache_folder(cfg: DictConfig) -> Path:
    """Where the encode stage composed in `cfg` keeps its cache."""
    return Path(cfg.stage.run_dir) / CACHE_DIR


def build_representation(cfg: DictConfig) -> Representation:
    """`cfg.representation`, encode-only (without a vocoder, which only decodes), unfitted, in eval mode."""
    return instantiate(cfg.representation, vocoder=None).eval()


def audio_datamodule(cfg: DictConfig, folder: Path) -> AudioDataModule:
    """The data group's audio datamodule, logging skipped clips into the cache folder."""
    datamodule = build_datamodule(cfg.data, skip_log_dir=str(folder))
    if not isinstance(datamodule, AudioDataModule) or isinstance(datamodule, LatentDataModule):
        raise ValueError(f"stage=encode encodes the audio of a manifest or a built-in corpus (data=manifest, sfx, "
                         f"music), not {cfg.data.get('_target_')}")
    return datamodule


def _signature(cfg: DictConfig, representation: Representation, datamodule: AudioDataModule) -> dict[str, Any]:
    config = OmegaConf.to_container(cfg.representation, resolve=True)
    assert isinstance(config, dict)
    return cache_signature(representation, config, datamodule)


def is_current(cfg: DictConfig) -> bool:
    """Whether the encode stage composed in `cfg` has a finished cache whose signature matches the configuration
    (building the representation to fingerprint its weights)."""
    folder = cache_folder(cfg)
    index = read_index(folder)
    if index is None:
        return False
    signature = _signature(cfg, build_representation(cfg), audio_datamodule(cfg, folder))
    if index["signature"] != signature:
        log.info("latent cache %s is stale: %s", folder, "; ".join(signature_differences(signature,
                                                                                          index["signature"])))
        return False
    return True


def encode_latents(cfg: DictConfig) -> Path:
    """Run the encode stage: build the cache (or keep it, when its signature matches), then write
    `<stage.run_dir>/export/export.json`; returns the stage's run directory."""
    run_dir = Path(cfg.stage.run_dir)
    folder = run_dir / CACHE_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    representation = build_representation(cfg)
    datamodule = audio_datamodule(cfg, folder)
    signature = _signature(cfg, representation, datamodule)
    index = read_index(folder)
    if index is not None and index["signature"] == signature:
        log.info("latent cache %s matches the configuration; keeping it", folder)
    else:
        if index is not None:
            log.info("latent cache %s is stale, rebuilding it: %s", folder,
                     "; ".join(signature_differences(signature, index["signature"])))
        shutil.rmtree(run_dir / "export", ignore_errors=True)
        stage = cfg.stage
        text_encoder = instantiate(cfg.text_encoder) if stage.get("text_states", True) else None
        index = build_cache(folder, signature, representation, datamodule, text_encoder, batch_size=stage.batch_size,
                            shard_items=stage.shard_items, stats_batches=cfg.task.stats_batches,
                            device=_device(stage.device))
    splits = index["splits"]
    write_json(run_dir / "export" / "export.json", {
        "audiodiff_version": __version__, "cache": str(folder), "signature": signature,
        "clips": {split: info["clips"] for split, info in splits.items()},
        "skipped": sum(len(info["skipped"]) for info in splits.values())}, indent=1, sort_keys=True)
    return run_dir


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


# ---- building -----------------------------------------------------------------------------------------------------
def build_cache(folder: Path, signature: dict[str, Any], representation: Representation,
                datamodule: AudioDataModule, text_encoder: torch.nn.Module | None, *, batch_size: int,
                shard_items: int, stats_batches: int, device: torch.device) -> dict[str, Any]:
    """Write a cache of `datamodule`'s train and val splits into `folder` (see :mod:`audiodiff.data.latent_cache`);
    returns its index. The old index goes first, so until the new one is written the folder reads as unfinished.
    Without a `text_encoder` no text states are stored, and training encodes captions as they come."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_NAME).unlink(missing_ok=True)
    for name in ("*-[0-9][0-9][0-9][0-9][0-9].safetensors", ".*.tmp", SKIP_LOG_NAME):
        for old in folder.glob(name):
            old.unlink()
    representation.to(device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    before = {k: v.clone() for k, v in representation.state_dict().items()}
    if not representation.is_fitted:
        fit_representation(representation, datamodule.train_dataloader(), stats_batches, device)
    fitted = {k: v for k, v in representation.state_dict().items() if not torch.equal(v, before[k])}
    with torch.inference_mode():
        silence = representation.encode(torch.zeros(1, representation.channels,
                                                    round(SILENCE_SECONDS * representation.sample_rate),
                                                    device=device))
    save_representation_state(folder, fitted, silence[0, :, silence.shape[-1] // 2])
    splits: dict[str, dict[str, Any]] = {}
    captions = [""]
    for stage in ("train", "val"):
        split = datamodule.splits[stage]
        rows = read_manifest(datamodule.manifest_path(), split, datamodule.holdout)
        splits[split] = encode_split(folder, split, rows, representation, sample_rate=datamodule.sample_rate,
                                     channels=datamodule.channels, batch_size=batch_size, shard_items=shard_items,
                                     num_workers=datamodule.num_workers, device=device)
        captions += [c for row in rows for c in row.captions]
        log.info("latent cache %s: %s: %d clips encoded, %d skipped", folder, split, splits[split]["clips"],
                 len(splits[split]["skipped"]))
    (folder / TEXT_STATES_NAME).unlink(missing_ok=True)
    if text_encoder is not None:
        cached_states(folder / TEXT_STATES_NAME, text_encoder, captions)
    index = new_index(signature, representation, splits)
    write_json(folder / INDEX_NAME, index, indent=1, sort_keys=True)
    return index


class _WholeClips(Dataset):
    """Rows decoded whole: `{"row": i, "wav": [C, T]}`, or `{"row": i, "error": reason}` for an unreadable clip."""

    def __init__(self, rows: Sequence[ManifestRow], sample_rate: int, channels: int) -> None:
        self.rows, self.sample_rate, self.channels = rows, sample_rate, channels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            wav, _ = load_audio(self.rows[i].audio, sample_rate=self.sample_rate, channels=self.channels)
        except AudioError as error:
            return {"row": i, "error": error.reason}
        return {"row": i, "wav": wav}


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def encode_whole_clips(representation: Representation, clips: Sequence[tuple[int, Tensor]], batch_size: int,
                       device: torch.device) -> Iterator[tuple[int, Tensor]]:
    """(key, latents [D, L]) for (key, wav [C, T]) pairs, encoding up to `batch_size` clips of equal length at
    once (nothing is padded, so a clip's latents do not depend on the others)."""
    by_length: dict[int, list[tuple[int, Tensor]]] = defaultdict(list)
    for key, wav in clips:
        by_length[wav.shape[-1]].append((key, wav))
    with torch.inference_mode():
        for length in sorted(by_length):
            group = by_length[length]
            for lo in range(0, len(group), batch_size):
                chunk = group[lo:lo + batch_size]
                z = representation.encode(torch.stack([wav for _, wav in chunk]).to(device)).float().cpu()
                yield from zip([key for key, _ in chunk], z, strict=True)


def encode_split(folder: Path, split: str, rows: Sequence[ManifestRow], representation: Representation, *,
                 sample_rate: int, channels: int, batch_size: int, shard_items: int, num_workers: int,
                 device: torch.device) -> dict[str, Any]:
    """Encode every readable clip of `rows` (a manifest split) into shards; returns the split's index entry:
    `{"clips", "shards", "skipped": {path: reason}}`."""
    writer = LatentShardWriter(folder, split, shard_items)
    skipped: dict[str, str] = {}
    samples: dict[int, int] = {}
    pending: list[tuple[int, Tensor]] = []

    def flush() -> None:
        for i, latents in encode_whole_clips(representation, pending, batch_size, device):
            row = rows[i]
            writer.add({"row": i, "audio": str(row.audio), "captions": list(row.captions),
                        "attributes": dict(row.attributes), "samples": samples[i]}, latents)
        pending.clear()

    loader = DataLoader(_WholeClips(rows, sample_rate, channels), batch_size=None, num_workers=num_workers,
                        worker_init_fn=_one_thread if num_workers > 0 else None)
    for item in loader:
        i = int(item["row"])
        if "error" in item:
            path = str(rows[i].audio)
            skipped[path] = item["error"]
            log.warning("skipping unreadable clip %s: %s", path, item["error"])
            append_skip(folder / SKIP_LOG_NAME, path, item["error"])
            continue
        samples[i] = int(item["wav"].shape[-1])
        pending.append((i, item["wav"]))
        if len(pending) >= PENDING_BATCHES * batch_size:
            flush()
    flush()
    shards = writer.close()
    return {"clips": sum(s["clips"] for s in shards), "shards": shards, "skipped": skipped}
