"""Training batches read from a latent cache (:mod:`audiodiff.data.latent_cache`) instead of decoded and encoded
audio: the diffusion stage of a recipe with an encode stage (`latents=cache`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from audiodiff.audio.transforms import crop_or_pad, random_offset
from audiodiff.data.datamodule import SKIP_LOG_NAME, AudioDataModule
from audiodiff.data.dataset import EmptySplitError, Item, Key, choose_caption, collate, item_generator
from audiodiff.data.latent_cache import LatentCache, cache_signature, check_signature
from audiodiff.representations.base import Representation


class LatentDataset(Dataset[Item]):
    """The clips of one split of a latent cache, as fixed-length crops of latent frames.

    Items are :class:`~audiodiff.data.dataset.AudioCaptionDataset`'s with `latents` in place of `wav`:

    - ``latents``: float32 ``[D, segment_frames]``; a clip shorter than the crop is padded with the latent frame of
      silence (``silence`` [D]), as the waveform path pads with silent samples before encoding;
    - ``mask``: bool ``[segment_frames]``, ``True`` on the clip's frames;
    - ``seconds_start`` (crop start in the clip, s), ``seconds_total`` (the clip's length, s), ``caption``,
      ``attributes``, ``index`` (the clip's row within its manifest split), ``audio``.

    The crop offset and the caption come from the generator of ``(seed, epoch, row)``, drawn in the waveform path's
    order (offset, then caption), so items do not depend on the number of workers and keys from
    :class:`~audiodiff.data.dataset.EpochSampler` carry the epoch.
    """

    def __init__(self, cache: LatentCache, split: str, *, segment_frames: int, train: bool, seed: int = 0) -> None:
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.cache = cache
        self.split = split
        self.clips = cache.clips(split)
        if not self.clips:
            raise EmptySplitError(f"latent cache {cache.folder}: no clips in split {split!r}; it holds "
                                  f"{ {s: len(cache.clips(s)) for s in cache.splits} }")
        self.segment_frames = segment_frames
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.silence = cache.silence()

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer keys (keys from ``EpochSampler`` carry their own)."""
        self.epoch = epoch

    def __getitem__(self, key: Key) -> Item:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), self.epoch)
        clip = self.clips[index]
        latents = self.cache.latents(clip)
        generator = item_generator(self.seed, epoch, clip.row)
        offset = random_offset(clip.frames, self.segment_frames, generator) if self.train else 0
        latents, mask = crop_or_pad(latents, self.segment_frames, offset)
        latents[:, ~mask] = self.silence[:, None]
        return {
            "latents": latents.contiguous(),
            "mask": mask,
            "seconds_start": offset / self.cache.frame_rate,
            "seconds_total": clip.samples / self.cache.sample_rate,
            "caption": choose_caption(clip.captions, generator, self.train),
            "attributes": dict(clip.attributes),
            "index": clip.row,
            "audio": clip.audio,
        }


def collate_latents(items: Sequence[Item]) -> dict[str, Any]:
    """Batch :class:`LatentDataset` items: :func:`~audiodiff.data.dataset.collate` with ``latents`` float32
    ``[B, D, F]`` in place of ``wav`` and ``mask`` bool ``[B, F]``."""
    return collate(items, signal="latents")


class LatentDataModule(AudioDataModule):
    """:class:`~audiodiff.data.datamodule.AudioDataModule` over a latent cache: the same loaders (shuffled order,
    ranks, exact mid-epoch resume), batches with ``latents`` [B, D, segment_frames] in place of ``wav``.

    It takes the data group's arguments (the audio the cache was encoded from: manifest or corpus, splits, sample
    rate, segment, batch sizes, workers, seed) plus ``cache``, the cache folder. :meth:`bind` names the
    representation the run trains on; :meth:`setup` then refuses a cache whose signature differs (another
    representation, other weights or other data), naming every difference. A crop is as many latent frames as the
    representation gives for ``segment_seconds`` of audio, so batches have the waveform path's shapes.
    """

    def __init__(self, cache: str, manifest: str | None = None, **audio: Any) -> None:
        """
        Args:
            cache: folder of the latent cache (`<run_dir>/encode/cache` in the stage flow).
            manifest, audio: :class:`~audiodiff.data.datamodule.AudioDataModule`'s arguments; ``skip_log_dir`` is
                ignored (clips were skipped when the cache was built: see ``<cache>/skipped_clips.tsv``).
        """
        super().__init__(manifest, **audio)
        self.cache_dir = Path(cache)
        self._cache: LatentCache | None = None
        self._expected: dict[str, Any] | None = None
        self.segment_frames: int | None = None

    @property
    def cache(self) -> LatentCache:
        """The cache, opened on first use (raises when there is no finished cache)."""
        if self._cache is None:
            self._cache = LatentCache(self.cache_dir)
        return self._cache

    def bind(self, representation: Representation, config: Mapping[str, Any]) -> None:
        """Name the representation the batches are for (unfitted, as built from `config`, its resolved node)."""
        self._expected = cache_signature(representation, config, self)
        samples = round(self.segment_seconds * representation.sample_rate)
        device = next(iter(representation.buffers()), torch.empty(0)).device
        with torch.inference_mode():
            silent = torch.zeros(1, representation.channels, samples, device=device)
            self.segment_frames = int(representation.encode(silent).shape[-1])

    def setup(self, stage: str | None = None) -> None:
        if self._expected is None or self.segment_frames is None:
            raise RuntimeError("LatentDataModule.setup: call bind(representation, config) first, so that the cache "
                               "is checked against the run's representation (the diffusion stage's train does)")
        check_signature(self.cache_dir, self.cache.signature, self._expected)
        super().setup(stage)

    def _dataset(self, stage: str) -> LatentDataset:  # type: ignore[override]
        assert self.segment_frames is not None
        return LatentDataset(self.cache, self.splits[stage], segment_frames=self.segment_frames,
                             train=stage == "train", seed=self.seed)

    def _loader_kwargs(self) -> dict[str, Any]:
        return {**super()._loader_kwargs(), "collate_fn": collate_latents}

    # -- what the training task reads beside the batches ------------------------------------------------------
    @property
    def text_cache_file(self) -> Path | None:
        """Text-encoder states of every caption, computed by the encode stage (None if it stored none)."""
        return self.cache.text_states

    def representation_state(self) -> dict[str, Tensor]:
        """The fitted statistics the cached latents were normalised with (load into the run's representation)."""
        return self.cache.representation_state()

    def captions(self, split: str) -> list[str]:
        """Every distinct caption of a manifest split's cached clips, in order of first appearance."""
        return list(dict.fromkeys(c for clip in self.cache.clips(split) for c in clip.captions))

    @property
    def skip_log(self) -> Path:
        return self.cache_dir / SKIP_LOG_NAME

    def skipped_clips(self) -> dict[str, str]:
        """Clips the encode stage could not read: audio path → reason."""
        return self.cache.skipped()
