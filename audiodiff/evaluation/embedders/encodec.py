"""EnCodec encoder embeddings (Défossez et al., "High fidelity neural audio compression", TMLR 2023) through
transformers' `EncodecModel`: the continuous encoder output, before residual vector quantisation.

As `EncodecModel.encode` does, a model with `chunk_length_s` (the 48 kHz checkpoint) sees the audio in chunks of
`chunk_length` samples every `chunk_stride` samples, and a model with `normalize` sees each chunk divided by its
RMS (+1e-8, over the channel mean); the encoder's frames of all chunks are concatenated. `embed_frames` returns
these frames [F, D] per clip (D = `config.hidden_size`, `config.frame_rate` frames per second of a whole chunk),
`embed` their mean over time [N, D]. The encoder is convolutional, so its frames depend on the clip length only at
the edges; still, only clips of equal length share a batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from transformers import EncodecModel

from audiodiff.evaluation.embedders.base import (
    WavBatch,
    batches_by_length,
    freeze,
    make_id,
    module_device,
    prepare_clips,
    weights_digest,
)

_VERSION = 1  # bump when chunking or pooling changes, so cached embeddings are recomputed


class EncodecEmbedder:
    """EnCodec's encoder as an `audiodiff.evaluation.embedders.FrameEmbedder`.

    Clips are converted to the model's channel count (mean downmix to mono, or mono duplicated to stereo) and
    resampled to its rate (soxr).

    Args:
        model: an `EncodecModel`; frozen (eval mode, no gradients) here. Only its encoder runs.
        batch_size: clips per forward pass.
    """

    def __init__(self, model: EncodecModel, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"EncodecEmbedder: batch_size must be >= 1, got {batch_size}")
        config = model.config
        self.model = freeze(model)
        self.batch_size = batch_size
        self.sample_rate = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.embedding_dim = int(config.hidden_size)
        self.chunk_length: int | None = config.chunk_length
        self.chunk_stride: int | None = config.chunk_stride
        self.normalize = bool(config.normalize)
        settings = {"version": _VERSION, "chunk": self.chunk_length, "stride": self.chunk_stride,
                    "normalize": self.normalize}
        digest = weights_digest(model)
        self.id = make_id("encodec", settings, digest)
        self.frames_id = make_id("encodec-frames", settings, digest)

    def encode(self, wav: Tensor) -> Tensor:
        """`wav` [B, C, T] at the model's rate → continuous encoder frames [B, D, F] (all chunks concatenated)."""
        length = wav.shape[-1]
        chunk = self.chunk_length or length
        stride = self.chunk_stride or length
        frames = []
        for offset in range(0, length, stride):
            piece = wav[..., offset: offset + chunk]
            if self.normalize:
                mono = piece.mean(dim=1, keepdim=True)
                piece = piece / (mono.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8)
            frames.append(self.model.encoder(piece))
        return torch.cat(frames, dim=-1)

    @torch.no_grad()
    def embed_frames(self, wavs: WavBatch, sample_rate: int) -> list[Tensor]:
        """Clips at `sample_rate` Hz → N tensors [F_i, D] float32 on the CPU, one row per encoder frame."""
        clips = prepare_clips(wavs, sample_rate, self.sample_rate, self.channels, "EncodecEmbedder")
        device = module_device(self.model)
        dtype = next(self.model.parameters()).dtype
        out: list[Tensor] = [torch.empty(0)] * len(clips)
        for indices in batches_by_length([clip.shape[-1] for clip in clips], self.batch_size):
            batch = torch.stack([clips[i] for i in indices]).to(device=device, dtype=dtype)
            for i, frames in zip(indices, self.encode(batch).float().cpu(), strict=True):
                out[i] = frames.T.contiguous()
        return out

    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips at `sample_rate` Hz → [N, D] float32 on the CPU: each clip's encoder frames averaged over time."""
        return torch.stack([frames.mean(dim=0) for frames in self.embed_frames(wavs, sample_rate)])


def load_encodec(name_or_path: str | Path, batch_size: int = 8,
                 device: str | torch.device = "cpu") -> EncodecEmbedder:
    """EnCodec embedder from a transformers checkpoint: a local folder or a hub name such as
    "facebook/encodec_24khz" (fetched by transformers into its cache; no weights ship with audiodiff)."""
    return EncodecEmbedder(EncodecModel.from_pretrained(str(name_or_path)).to(device), batch_size)
