"""A fixed, parameter-free clip embedding: a coarse time–frequency map of log-mel energy above a floor.

Needs no download and no training, so an index of a training set can be built and checked anywhere (the near-copy
guard's default, `audiodiff.guard`). Each clip is downmixed to mono, resampled to `sample_rate`, cut or zero-padded to
`seconds`, turned into a power mel spectrogram (`n_mels` Slaney bands, `n_fft` window, `hop` samples), expressed in dB
above `floor_db` (silence → 0, so silent padding adds nothing), and averaged over `block_seconds` time blocks. The
embedding is the flattened [n_mels, seconds / block_seconds] map: two clips have cosine similarity near 1 only when
the same bands carry the same energy pattern in the same blocks, which is what a near copy of a recording does.
Blocks of a quarter second keep the order of events (a time-pooled profile would match any clip of the same
timbre) while tolerating small shifts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audiodiff.audio.mel import MelSpectrogram
from audiodiff.evaluation.embedders.base import WavBatch, make_id, pad_to, prepare_clips

_VERSION = 1  # bump when the embedding changes, so cached embeddings and indexes are rebuilt


class LogMelEmbedder:
    """Coarse log-mel map (module docstring): clips → [N, n_mels · blocks] float32, blocks = seconds / block_seconds.

    seconds: the window embedded (clips are cut or zero-padded to it); block_seconds: time pooling;
    floor_db: energy below this many dB (power re 1.0 full-scale) counts as silence.
    """

    def __init__(self, seconds: float = 4.0, sample_rate: int = 16_000, n_mels: int = 32, n_fft: int = 512,
                 hop: int = 160, block_seconds: float = 0.25, floor_db: float = -80.0) -> None:
        if not seconds > 0 or not block_seconds > 0 or block_seconds > seconds:
            raise ValueError(f"LogMelEmbedder: expected 0 < block_seconds <= seconds, got {block_seconds}, {seconds}")
        self.seconds, self.block_seconds, self.floor_db = float(seconds), float(block_seconds), float(floor_db)
        self.sample_rate = int(sample_rate)
        self.hop = int(hop)
        self.blocks = math.ceil(self.seconds / self.block_seconds - 1e-9)
        self.mel = MelSpectrogram(self.sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, pad_mode="constant")
        self.n_mels = int(n_mels)
        self.embedding_dim = self.n_mels * self.blocks
        self.settings = {"version": _VERSION, "seconds": self.seconds, "sample_rate": self.sample_rate,
                         "n_mels": self.n_mels, "n_fft": int(n_fft), "hop": self.hop,
                         "block_seconds": self.block_seconds, "floor_db": self.floor_db}
        self.id = make_id("logmel", self.settings, "0" * 16)  # no weights

    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips ([B, C, T] or B tensors [C, T_i]) at `sample_rate` Hz → [B, E] float32 on the CPU."""
        clips = prepare_clips(wavs, sample_rate, self.sample_rate, 1, "LogMelEmbedder")
        samples = int(round(self.seconds * self.sample_rate))
        batch = torch.stack([pad_to(clip[0, :samples], samples) for clip in clips])  # [B, samples]
        with torch.no_grad():
            power = self.mel(batch)  # [B, n_mels, F]
            above = (10.0 * torch.log10(power.clamp_min(1e-20)) - self.floor_db).clamp_min(0.0)
            frames_per_block = self.block_seconds * self.sample_rate / self.hop
            starts = [round(i * frames_per_block) for i in range(self.blocks + 1)]
            pooled = [above[..., a: max(b, a + 1)].mean(-1) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        return torch.stack(pooled, dim=-1).flatten(1).float()


def load_logmel(seconds: float = 4.0, **settings: float) -> LogMelEmbedder:
    """The parameter-free embedder over a `seconds`-long window; `settings` as `LogMelEmbedder`'s."""
    return LogMelEmbedder(seconds=seconds, **settings)  # type: ignore[arg-type]
