"""The latent cache on disk: whole clips encoded once by a representation, with their captions and attributes.

Folder layout (the encode stage writes it to `<run_dir>/encode/cache/`, see :mod:`audiodiff.training.encode`):

- `<split>-00000.safetensors`, ...: shards of whole clips (no crop, no padding): `latents` float32 [frames, D]
  (time-major, so that a clip is one contiguous block), `offsets` int64 [clips + 1] (clip i is
  `latents[offsets[i]:offsets[i + 1]]`), and the metadata `clips`, a JSON list of `{row, audio, captions,
  attributes, samples}` (`row`: the clip's position in its manifest split; `samples`: its length at the cache's
  sample rate).
- `representation.safetensors`: `state.<name>`, the representation state that fitting its statistics set (the
  latents are normalised with it; the diffusion stage loads it into its own representation), and `silence` [D], the
  latent frame of digital silence, which pads clips shorter than a crop as silent audio would.
- `text_states.safetensors`: text-encoder states of every caption and of "" (:mod:`audiodiff.conditioning.cache`,
  keyed by its own encoder signature).
- `skipped_clips.tsv`: clips that could not be read, `path<TAB>reason`.
- `cache.json`, written last (temporary name, then rename): the format, the signature, sizes, every split's shards
  with their clip counts and its skipped clips. A folder without it is an unfinished build and is never read; a
  build removes it before it writes anything.

The signature says which latents are interchangeable: the cache format, the representation (its resolved config,
`_target_` and arguments, and a sha256 of the tensors its encoder depends on, taken before statistics are fitted: a
representation arrives unfitted both at the encode stage and at the start of diffusion training) and the data
source (the manifest's path and content hash, the corpus name, the split names, sample rate and channels).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from audiodiff import __version__
from audiodiff.data.datamodule import AudioDataModule
from audiodiff.representations.base import Representation
from audiodiff.utils.files import atomic_path
from audiodiff.utils.hashing import STATE_HEADER, file_sha256, json_sha256, tensors_sha256

CACHE_FORMAT = 1  # bump when the layout or the meaning of the stored latents changes
INDEX_NAME = "cache.json"
STATE_NAME = "representation.safetensors"
TEXT_STATES_NAME = "text_states.safetensors"
_STATE_PREFIX = "state."


class LatentCacheError(ValueError):
    """A latent cache that cannot be used: missing, unfinished or of another format."""


class LatentCacheMismatchError(LatentCacheError):
    """A latent cache made from another representation or other data than the run asks for."""


# ---- signature ----------------------------------------------------------------------------------------------------
def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `state`'s tensors, in name order
    (:func:`audiodiff.utils.hashing.tensors_sha256` with its STATE_HEADER)."""
    return tensors_sha256(state, STATE_HEADER)


def representation_signature(representation: Representation, config: Mapping[str, Any]) -> dict[str, Any]:
    """The representation part of a signature: its resolved config node (`_target_` and arguments) and the digest
    of :meth:`~audiodiff.representations.base.Representation.encoder_state`."""
    return {"config": dict(config), "state": state_digest(representation.encoder_state())}


def data_signature(manifest: str | Path, *, splits: Mapping[str, str], sample_rate: int, channels: int,
                   corpus: str | None) -> dict[str, Any]:
    """The data part of a signature: the manifest (absolute path and content hash: rows, captions, audio paths),
    the corpus it was built as, the manifest split of each stage and the audio format clips are decoded to."""
    manifest = Path(manifest).resolve()
    return {"manifest": str(manifest), "sha256": file_sha256(manifest), "corpus": corpus,
            "splits": {"train": splits["train"], "val": splits["val"]}, "sample_rate": int(sample_rate),
            "channels": int(channels)}


def cache_signature(representation: Representation, config: Mapping[str, Any],
                    datamodule: AudioDataModule) -> dict[str, Any]:
    """What makes two caches' latents interchangeable, as JSON values: the cache format, the unfitted
    `representation` built from `config` (its resolved node) and the audio data `datamodule` reads."""
    data = data_signature(datamodule.manifest_path(), splits=datamodule.splits, sample_rate=datamodule.sample_rate,
                          channels=datamodule.channels, corpus=datamodule.corpus)
    if datamodule.holdout_note() is not None:  # rows without a split: which of them validate is part of the data
        data["holdout"] = {"fraction": datamodule.holdout.fraction, "seed": datamodule.holdout.seed}
    signature = {"format": CACHE_FORMAT, "representation": representation_signature(representation, config),
                 "data": data}
    return json.loads(json.dumps(signature, sort_keys=True))


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def signature_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """`key: expected X, found Y` for every leaf where two signatures differ (dotted keys, sorted)."""
    ours, theirs = _leaves(expected), _leaves(found)
    absent = "<absent>"
    return [f"{key}: expected {ours.get(key, absent)!r}, found {theirs.get(key, absent)!r}"
            for key in sorted(ours.keys() | theirs.keys()) if ours.get(key, absent) != theirs.get(key, absent)]


def check_signature(folder: str | Path, found: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise :class:`LatentCacheMismatchError` naming every difference when the cache at `folder` (signature
    `found`) was not made for this run (signature `expected`)."""
    differences = signature_differences(expected, found)
    if differences:
        raise LatentCacheMismatchError(
            f"latent cache {folder} was encoded for another representation or other data (expected = this run, "
            f"found = the cache): {'; '.join(differences)}. Rebuild it with `python -m audiodiff.train "
            f"recipe=<name> stage=encode` (a recipe's stages rebuild it by themselves), or point data.cache at a "
            f"cache made for this representation.")


# ---- writing ------------------------------------------------------------------------------------------------------
def _save_atomically(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_representation_state(folder: str | Path, state: Mapping[str, Tensor], silence: Tensor) -> Path:
    """Write `representation.safetensors`: the fitted `state` and the silence frame [D]."""
    path = Path(folder) / STATE_NAME
    _save_atomically({**{_STATE_PREFIX + k: v for k, v in state.items()}, "silence": silence.float()}, path)
    return path


class LatentShardWriter:
    """Writes one split's clips into shards of `shard_items` clips, each to a temporary name and then renamed."""

    def __init__(self, folder: str | Path, split: str, shard_items: int) -> None:
        if shard_items < 1:
            raise ValueError(f"shard_items must be >= 1, got {shard_items}")
        self.folder, self.split, self.shard_items = Path(folder), split, shard_items
        self.shards: list[dict[str, Any]] = []
        self._latents: list[Tensor] = []
        self._clips: list[dict[str, Any]] = []

    def add(self, clip: Mapping[str, Any], latents: Tensor) -> None:
        """One clip: its metadata (`row`, `audio`, `captions`, `attributes`, `samples`) and latents [D, L]."""
        self._latents.append(latents.detach().float().cpu().T.contiguous())
        self._clips.append(dict(clip))
        if len(self._clips) >= self.shard_items:
            self._flush()

    def close(self) -> list[dict[str, Any]]:
        """Write the last shard; returns every shard as `{"name", "clips"}`."""
        if self._clips:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        lengths = torch.tensor([0] + [z.shape[0] for z in self._latents], dtype=torch.int64)
        name = f"{self.split}-{len(self.shards):05d}.safetensors"
        _save_atomically({"latents": torch.cat(self._latents), "offsets": lengths.cumsum(0)}, self.folder / name,
                         metadata={"clips": json.dumps(self._clips, ensure_ascii=False)})
        self.shards.append({"name": name, "clips": len(self._clips)})
        self._latents, self._clips = [], []


# ---- reading ------------------------------------------------------------------------------------------------------
def read_index(folder: str | Path) -> dict[str, Any] | None:
    """The index of a finished cache, or None when `folder` holds no finished cache (no `cache.json`)."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def cache_digest(folder: str | Path) -> str | None:
    """Short sha256 of the signature of the finished cache in `folder` (None: no finished cache there). A model
    trained on the cache records it, so that a rebuilt cache (another representation, other data) is noticed."""
    index = read_index(folder)
    if index is None:
        return None
    return json_sha256(index["signature"])[:16]


def new_index(signature: dict[str, Any], representation: Representation, splits: dict[str, dict[str, Any]],
              **extra: Any) -> dict[str, Any]:
    """The `cache.json` content of a cache just written."""
    return {"format": CACHE_FORMAT, "audiodiff_version": __version__, "signature": signature,
            "sample_rate": representation.sample_rate, "channels": representation.channels,
            "latent_channels": representation.latent_channels, "frame_rate": float(representation.frame_rate),
            "splits": splits, **extra}


@dataclass(frozen=True)
class CachedClip:
    """Where one clip's latents lie (`shard`, frames `start` to `stop`) and its manifest facts."""

    shard: str
    start: int
    stop: int
    row: int
    audio: str
    captions: tuple[str, ...]
    attributes: dict[str, Any]
    samples: int

    @property
    def frames(self) -> int:
        return self.stop - self.start


class LatentCache:
    """A finished cache folder, read: its index, every split's clips, latents on demand (memory-mapped).

    Raises :class:`LatentCacheError` when the folder holds no finished cache or one of another format. Picklable
    (for DataLoader workers): shard handles are opened lazily in each process.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = read_index(self.folder)
        if index is None:
            raise LatentCacheError(
                f"latent cache {self.folder}: no {INDEX_NAME}, so no finished cache is there (an encode stage that "
                f"stopped before the end leaves none); run `python -m audiodiff.train recipe=<name> stage=encode`")
        if index.get("format") != CACHE_FORMAT:
            raise LatentCacheError(f"latent cache {self.folder} has format {index.get('format')}, this version reads "
                                   f"format {CACHE_FORMAT}; rebuild it with stage=encode")
        self.index = index
        self._clips: dict[str, list[CachedClip]] = {}
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}

    @property
    def signature(self) -> dict[str, Any]:
        return self.index["signature"]

    @property
    def sample_rate(self) -> int:
        return int(self.index["sample_rate"])

    @property
    def frame_rate(self) -> float:
        """Latent frames per second of audio."""
        return float(self.index["frame_rate"])

    @property
    def latent_channels(self) -> int:
        return int(self.index["latent_channels"])

    @property
    def text_states(self) -> Path | None:
        """The text-state file of every caption (:mod:`audiodiff.conditioning.cache`), None if the cache was built
        without one (`stage.text_states=false`)."""
        path = self.folder / TEXT_STATES_NAME
        return path if path.is_file() else None

    @property
    def splits(self) -> list[str]:
        """The manifest splits the cache holds."""
        return list(self.index["splits"])

    def skipped(self) -> dict[str, str]:
        """Clips that could not be read when the cache was built: audio path → reason."""
        return {path: reason for split in self.index["splits"].values()
                for path, reason in split.get("skipped", {}).items()}

    def clips(self, split: str) -> list[CachedClip]:
        """The clips of a manifest split, in manifest order ([] for a split the cache does not hold)."""
        if split not in self._clips:
            clips = []
            for shard in self.index["splits"].get(split, {}).get("shards", []):
                with safe_open(str(self.folder / shard["name"]), framework="pt") as handle:
                    offsets = handle.get_tensor("offsets").tolist()
                    meta = json.loads((handle.metadata() or {})["clips"])
                for i, clip in enumerate(meta):
                    clips.append(CachedClip(shard["name"], offsets[i], offsets[i + 1], int(clip["row"]), clip["audio"],
                                            tuple(clip["captions"]), dict(clip["attributes"]), int(clip["samples"])))
            self._clips[split] = sorted(clips, key=lambda c: c.row)
        return self._clips[split]

    def latents(self, clip: CachedClip) -> Tensor:
        """A whole clip's latents [D, frames], float32."""
        handle = self._handles.get(clip.shard)
        if handle is None:
            handle = self._handles[clip.shard] = safe_open(str(self.folder / clip.shard), framework="pt")
        return handle.get_slice("latents")[clip.start:clip.stop].T.contiguous()

    def representation_state(self) -> dict[str, Tensor]:
        """The state fitting set in the representation the latents were normalised with (`load_state_dict`,
        strict=False)."""
        stored = load_file(str(self.folder / STATE_NAME))
        return {k[len(_STATE_PREFIX):]: v for k, v in stored.items() if k.startswith(_STATE_PREFIX)}

    def silence(self) -> Tensor:
        """The latent frame [D] of digital silence."""
        return load_file(str(self.folder / STATE_NAME))["silence"]
