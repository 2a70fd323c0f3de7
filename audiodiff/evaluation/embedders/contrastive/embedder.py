"""Inference API of a trained contrastive audio–text model: export, load, embed audio and text, score prompts.

An export folder holds `model.safetensors` (audio tower, text projection, temperature; the frozen text encoder
loads from its own source), `config.yaml` (`name`, `model`: the :class:`ContrastiveConfig`, `text_encoder`: its
Hydra node) and `export.json` (package version, training step, training data). It is written atomically: a
temporary sibling folder is filled, then renamed over any previous export.

    embedder = load_embedder("runs/embedder_sfx/export")
    audio = embedder.embed_audio(wavs)                 # [N, C, T] at embedder.sample_rate -> [N, E], unit rows
    text = embedder.embed_text(["two loud beeps"])     # [1, E]
    adherence = embedder.score(wavs, prompts)          # [N] cosine of each clip with its prompt

`ContrastiveEmbedder` follows `audiodiff.evaluation.embedders.Embedder` (`id`, `sample_rate`, `embedding_dim`,
`embed(wavs, sample_rate)`), so FAD, near-copy search and the evaluation report take it like any other embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import Tensor

from audiodiff.conditioning.text import TextEncoder
from audiodiff.evaluation.embedders.base import WavBatch, freeze, make_id, prepare_clips, settings_digest
from audiodiff.evaluation.embedders.contrastive.model import ContrastiveConfig, ContrastiveModel
from audiodiff.models.export_format import CONFIG, WEIGHTS
from audiodiff.models.registry import build_component
from audiodiff.utils.hashing import file_sha256

_VERSION = 1  # bump when windowing or pooling at inference changes, so cached embeddings are recomputed


class ContrastiveEmbedder:
    """A trained :class:`ContrastiveModel` with its frozen text encoder, in eval mode, on one device.

    Audio of any length is embedded the way training saw it: a clip no longer than the training segment
    (`config.segment_seconds`) is zero-padded to it; a longer one is cut into consecutive segments (the last
    zero-padded), each is embedded, and the clip's embedding is their mean weighted by real samples, renormalised.
    Audio embeddings do not depend on the rest of their batch (batch norm uses its running statistics).

    name: the model's name (from its training run), part of `id`.
    weights_sha256: SHA-256 of the weights file; with `name` and the settings it makes `id`, the cache key.
    batch_size: segments or captions per forward pass.
    """

    def __init__(self, model: ContrastiveModel, text_encoder: TextEncoder, name: str, weights_sha256: str,
                 batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"ContrastiveEmbedder: batch_size must be >= 1, got {batch_size}")
        self.model = freeze(model)
        self.text_encoder = freeze(text_encoder)
        self.config = model.config
        self.name = name
        self.batch_size = batch_size
        self.sample_rate = int(self.config.sample_rate)
        self.embedding_dim = int(self.config.embed_dim)
        settings = {"version": _VERSION, "config": settings_digest(self.config.as_dict()),
                    "text_encoder": text_encoder.name_or_path}
        self.id = make_id(f"contrastive-{name}", settings, weights_sha256)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def _segments(self, clips: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(segments [S, segment_samples], owning clip [S], real samples [S]) of mono clips [1, T_i]."""
        size = self.config.segment_samples
        pieces, owners, lengths = [], [], []
        for index, clip in enumerate(clips):
            samples = clip[0]
            for start in range(0, samples.shape[0], size):
                piece = samples[start: start + size]
                lengths.append(piece.shape[0])
                pieces.append(F.pad(piece, (0, size - piece.shape[0])))
                owners.append(index)
        return torch.stack(pieces), torch.tensor(owners), torch.tensor(lengths, dtype=torch.float64)

    @torch.no_grad()
    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips ([B, C, T], or B tensors [C, T_i]) at `sample_rate` Hz → unit embeddings [N, E] float32 on the
        CPU. Channels are averaged; other rates are resampled to `self.sample_rate` with soxr."""
        clips = prepare_clips(wavs, sample_rate, self.sample_rate, 1, "ContrastiveEmbedder")
        segments, owners, lengths = self._segments(clips)
        parts = [self.model.audio(segments[i: i + self.batch_size].to(self.device)).double().cpu()
                 for i in range(0, segments.shape[0], self.batch_size)]
        weighted = torch.cat(parts) * lengths[:, None]
        sums = torch.zeros(len(clips), self.embedding_dim, dtype=torch.float64).index_add_(0, owners, weighted)
        return F.normalize(sums, dim=-1).float()

    def embed_audio(self, wavs: WavBatch, sample_rate: int | None = None) -> Tensor:
        """:meth:`embed` with `sample_rate` defaulting to the model's: wavs [N, C, T] → [N, E] unit rows."""
        return self.embed(wavs, self.sample_rate if sample_rate is None else sample_rate)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Captions or prompts → unit text embeddings [N, E] float32 on the CPU."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"ContrastiveEmbedder.embed_text: expected a non-empty sequence of strings, got "
                             f"{texts!r}")
        if not all(t.strip() for t in texts):
            raise ValueError("ContrastiveEmbedder.embed_text: empty prompts have no embedding (the text encoder "
                             "maps them to the null condition); got an empty or blank string")
        out = []
        for start in range(0, len(texts), self.batch_size):
            pooled = self.text_encoder(list(texts[start: start + self.batch_size])).pooled
            assert pooled is not None
            out.append(self.model.text(pooled.to(self.device, torch.float32)).float().cpu())
        return torch.cat(out)

    def score(self, wavs: WavBatch, prompts: Sequence[str], sample_rate: int | None = None) -> Tensor:
        """Prompt adherence: cosine similarity [N] float64 between clip i and prompt i (our offline CLAP score;
        compare scores of one embedder only, and against the same score of real clips with their captions)."""
        audio = self.embed_audio(wavs, sample_rate).double()
        text = self.embed_text(prompts).double()
        if audio.shape[0] != text.shape[0]:
            raise ValueError(f"ContrastiveEmbedder.score: {audio.shape[0]} clips but {text.shape[0]} prompts; "
                             "expected one prompt per clip")
        return (F.normalize(audio, dim=-1) * F.normalize(text, dim=-1)).sum(dim=-1)


# ---- loading --------------------------------------------------------------------------------------------------
def load_embedder(folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> ContrastiveEmbedder:
    """The embedder exported to `folder` (`model.safetensors` + `config.yaml`), on `device`, in eval mode."""
    folder = Path(folder)
    weights, config_file = folder / WEIGHTS, folder / CONFIG
    if not weights.is_file() or not config_file.is_file():
        raise FileNotFoundError(f"{folder}: expected an embedder export folder holding {WEIGHTS} and {CONFIG}")
    config = yaml.safe_load(config_file.read_text())
    if not isinstance(config, dict) or not {"name", "model", "text_encoder"} <= set(config):
        raise ValueError(f"{config_file}: expected the keys name, model and text_encoder, got "
                         f"{sorted(config) if isinstance(config, dict) else type(config).__name__}")
    text_encoder = build_component(config["text_encoder"], f"{config_file}: text_encoder", "text_encoder")
    if not isinstance(text_encoder, TextEncoder):
        raise ValueError(f"{config_file}: text_encoder must build an audiodiff TextEncoder, got "
                         f"{type(text_encoder).__name__}")
    model = ContrastiveModel(ContrastiveConfig.from_dict(config["model"], str(config_file)), text_encoder.dim)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit the model described by {config_file}: {err}") from err
    return ContrastiveEmbedder(model.to(device), text_encoder.to(device), str(config["name"]), file_sha256(weights),
                               batch_size)
