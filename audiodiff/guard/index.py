"""The near-copy index: embeddings of a training set's clips, stored with a model's export.

Two files in the export folder, both data only (nothing in them can name code to run):
- `near_copy_index.safetensors`: `embeddings` [M, E] float32, one row per training clip;
- `near_copy_index.json`: the embedder (`logmel` with its settings, or `contrastive` with the folder of its
  export and its id), the threshold and the calibration quantile it came from (leave-one-out, `audiodiff.evaluation
  .memorization.calibrate_threshold`), the manifest and split, and each row's clip (audio path, manifest line, first
  caption).

Build one with `python -m audiodiff.guard index model=<export folder> manifest=<manifest.jsonl>`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from audiodiff.audio.io import load_audio
from audiodiff.data.manifest import ManifestRow, read_manifest
from audiodiff.evaluation.embedders import Embedder, load_embedder
from audiodiff.evaluation.embedders.logmel import LogMelEmbedder
from audiodiff.evaluation.memorization import calibrate_threshold
from audiodiff.utils.files import atomic_path, write_json

INDEX_WEIGHTS = "near_copy_index.safetensors"
INDEX_INFO = "near_copy_index.json"
FORMAT = 1
DEFAULT_QUANTILE = 0.999
_log = logging.getLogger(__name__)


class MissingIndexError(FileNotFoundError):
    """A model folder without a near-copy index; the message says how to build one."""


@dataclass(frozen=True)
class NearCopyIndex:
    """Training-clip embeddings [M, E] with what they came from; `threshold`: cosine similarity at or above which
    a generated clip is a near copy of its nearest training clip."""

    embeddings: Tensor  # [M, E] float32
    threshold: float
    quantile: float
    embedder: dict[str, Any]  # {"name": "logmel", "settings": {...}, "id"} or {"name": "contrastive", "path", "id"}
    clips: list[dict[str, Any]]  # per row: {"audio", "line", "caption"}
    manifest: str = ""
    split: str | None = "train"
    calibration: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # silent clips left out (no direction to compare)

    def save(self, folder: str | Path) -> Path:
        """Write the two index files into `folder` (each atomically); returns the JSON file's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / INDEX_WEIGHTS) as tmp:
            save_file({"embeddings": self.embeddings.float().contiguous()}, str(tmp))
        info = {"format": FORMAT, "embedder": self.embedder, "threshold": self.threshold, "quantile": self.quantile,
                "calibration": self.calibration, "manifest": self.manifest, "split": self.split,
                "count": len(self.clips), "clips": self.clips, "skipped": self.skipped}
        return write_json(folder / INDEX_INFO, info, indent=1)

    @classmethod
    def load(cls, folder: str | Path) -> NearCopyIndex:
        """Read the index in `folder` (safetensors + JSON only). MissingIndexError says how to build a missing one;
        ValueError names a file that does not fit."""
        folder = Path(folder)
        weights, info_file = folder / INDEX_WEIGHTS, folder / INDEX_INFO
        if not weights.is_file() or not info_file.is_file():
            raise MissingIndexError(
                f"{folder}: no near-copy index ({INDEX_WEIGHTS} and {INDEX_INFO}); build it from the model's training "
                f"manifest with: python -m audiodiff.guard index model={folder} manifest=<training manifest.jsonl>")
        try:
            info = json.loads(info_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{info_file}: not valid JSON ({err.msg})") from err
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ValueError(f"{info_file}: expected a near-copy index of format {FORMAT}")
        embeddings = load_file(str(weights)).get("embeddings")
        if embeddings is None or embeddings.ndim != 2 or embeddings.shape[0] != len(info.get("clips", [])):
            raise ValueError(f"{weights}: expected 'embeddings' [M, E] with one row per clip of {info_file} "
                             f"({len(info.get('clips', []))})")
        return cls(embeddings.float(), float(info["threshold"]), float(info["quantile"]), dict(info["embedder"]),
                   list(info["clips"]), str(info.get("manifest", "")), info.get("split"),
                   dict(info.get("calibration") or {}), list(info.get("skipped") or []))


def embedder_spec(name_or_path: str, seconds: float) -> dict[str, Any]:
    """The JSON record of an embedder choice: "logmel" (the parameter-free default, over `seconds`-long windows) or
    the folder of a contrastive embedder export (`python -m audiodiff.training.embedder.run`)."""
    if name_or_path == "logmel":
        embedder = LogMelEmbedder(seconds=seconds)
        return {"name": "logmel", "settings": {"seconds": embedder.seconds}, "id": embedder.id}
    path = Path(name_or_path)
    if not path.is_dir():
        raise ValueError(f"embedder: expected 'logmel' or the folder of a contrastive embedder export, got "
                         f"{name_or_path!r}")
    return {"name": "contrastive", "path": str(path.resolve()), "id": load_embedder("contrastive", path).id}


def build_embedder(spec: dict[str, Any], device: str | torch.device = "cpu") -> Embedder:
    """The embedder an index names (`embedder_spec`); ValueError when a contrastive export changed since."""
    if spec.get("name") == "logmel":
        return LogMelEmbedder(**spec.get("settings", {}))
    if spec.get("name") == "contrastive":
        embedder = load_embedder("contrastive", spec["path"], device=device)
        if embedder.id != spec.get("id"):
            raise ValueError(f"near-copy index: the embedder at {spec['path']} is {embedder.id}, but the index was "
                             f"built with {spec.get('id')}; rebuild the index")
        return embedder
    raise ValueError(f"near-copy index: unknown embedder {spec.get('name')!r}; expected logmel or contrastive")


def embed_clips(embedder: Embedder, wavs: Sequence[Tensor], sample_rate: int, batch_size: int = 64) -> Tensor:
    """Embeddings [N, E] float32 of clips [C, T_i] at `sample_rate` Hz, `batch_size` at a time."""
    parts = [embedder.embed(list(wavs[i: i + batch_size]), sample_rate) for i in range(0, len(wavs), batch_size)]
    return torch.cat(parts).float()


def build_index(rows: Sequence[ManifestRow], embedder: Embedder, spec: dict[str, Any],
                quantile: float = DEFAULT_QUANTILE, manifest: str = "", split: str | None = "train",
                read: Callable[[Path], tuple[Tensor, int]] | None = None, batch_size: int = 64) -> NearCopyIndex:
    """Embed every row's audio and calibrate the threshold at `quantile` of the training clips' leave-one-out
    nearest-neighbour similarities. Silent clips (all-zero embeddings) are left out and listed in `skipped`.
    read: path → (wav [C, T], Hz); `audiodiff.audio.io.load_audio` by default."""
    read = read or (lambda path: load_audio(path))
    if len(rows) < 2:
        raise ValueError(f"near-copy index: need at least 2 training clips, got {len(rows)}")
    embeddings, kept, skipped = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start: start + batch_size]
        clips = [read(row.audio) for row in chunk]
        by_rate: dict[int, list[int]] = {}
        for i, (_, rate) in enumerate(clips):
            by_rate.setdefault(rate, []).append(i)
        out = [torch.empty(0)] * len(chunk)
        for rate, items in by_rate.items():
            for i, e in zip(items, embedder.embed([clips[i][0] for i in items], rate), strict=True):
                out[i] = e
        for row, e in zip(chunk, out, strict=True):
            record = {"audio": str(row.audio), "line": row.line, "caption": row.caption}
            if not torch.isfinite(e).all() or float(e.norm()) == 0.0:
                skipped.append(record)
                continue
            embeddings.append(e)
            kept.append(record)
    if len(kept) < 2:
        raise ValueError(f"near-copy index: fewer than 2 non-silent training clips ({len(skipped)} silent)")
    bank = torch.stack(embeddings).float()
    calibration = calibrate_threshold(bank.numpy(), quantile=quantile)
    if skipped:
        _log.warning("near-copy index: %d silent clip(s) left out, e.g. %s", len(skipped), skipped[0]["audio"])
    return NearCopyIndex(bank, calibration.threshold, quantile, spec, kept, manifest, split, calibration.as_dict(),
                         skipped)


def index_manifest(model: str | Path, manifest: str | Path, split: str | None = "train",
                   embedder: str = "logmel", quantile: float = DEFAULT_QUANTILE, out: str | Path | None = None,
                   seconds: float | None = None) -> Path:
    """Build the near-copy index of `manifest`'s `split` rows for the model exported to `model` and write it into
    `out` (default: the model folder). The logmel embedder's window is the model's clip length (`config.yaml`
    `duration`) unless `seconds` is given. Returns the index JSON's path."""
    import yaml

    model = Path(model)
    config_file = model / "config.yaml"
    if seconds is None:
        if not config_file.is_file():
            raise FileNotFoundError(f"{model}: not a model export folder (no config.yaml)")
        seconds = float((yaml.safe_load(config_file.read_text()) or {}).get("duration", 4.0))
    rows = read_manifest(manifest, split=split)
    if not rows:
        raise ValueError(f"{manifest}: no rows with split={split!r}")
    spec = embedder_spec(embedder, seconds)
    index = build_index(rows, build_embedder(spec), spec, quantile, str(Path(manifest).resolve()), split)
    return index.save(model if out is None else out)


__all__ = ["DEFAULT_QUANTILE", "INDEX_INFO", "INDEX_WEIGHTS", "MissingIndexError", "NearCopyIndex", "build_embedder",
           "build_index", "embed_clips", "embedder_spec", "index_manifest"]
