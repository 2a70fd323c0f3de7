"""LightningModule that trains a :class:`ContrastiveModel` on (waveform, caption) batches with symmetric InfoNCE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from audiodiff import __version__
from audiodiff.conditioning.text import TextEncoder
from audiodiff.evaluation.embedders.contrastive.model import ContrastiveModel, info_nce
from audiodiff.training.diffusion.task import warmup_cosine
from audiodiff.training.embedder.captions import PooledCaptions

CHECKPOINT_KIND = "contrastive_embedder"  # the `audiodiff.kind` entry of this task's checkpoints


def random_gain(wav: Tensor, max_db: float) -> Tensor:
    """wav [B, T] times a gain drawn uniformly in [-max_db, +max_db] dB per clip (global torch generator)."""
    if max_db <= 0:
        return wav
    gain_db = (torch.rand(wav.shape[0], 1, device=wav.device) * 2 - 1) * max_db
    return wav * 10.0 ** (gain_db / 20.0)


def _batch_accuracy(audio: Tensor, text: Tensor) -> Tensor:
    """Share of clips whose own caption is the most similar of the batch's captions (chance 1 / B)."""
    target = torch.arange(audio.shape[0], device=audio.device)
    return ((audio @ text.T).argmax(dim=1) == target).float().mean()


class ContrastiveTask(L.LightningModule):
    """Trains the audio tower, the text projection and the temperature of `model`; `text_encoder` stays frozen.

    optimizer: a partial optimizer constructor (Hydra `_partial_: true`); weights of rank >= 2 get its weight
      decay, biases, norm parameters and the temperature none (as CLIP).
    warmup_steps / min_lr_ratio: linear warm-up, then cosine decay to `min_lr_ratio` at the trainer's max_steps.
    gain_db: random gain augmentation in ±dB per training clip; 0 turns it off (keep it off when captions name
      the loudness, as the sfx corpus's do).
    text_cache_file: safetensors file of pooled caption states (`PooledCaptions`); when set, every train and val
      caption of the datamodule is encoded into it at the start of training (reused by later runs), else captions
      are encoded as they come and kept in memory.
    run_config: the resolved run configuration, embedded in every checkpoint with the package version.
    """

    def __init__(self, model: ContrastiveModel, text_encoder: TextEncoder,
                 optimizer: Callable[..., torch.optim.Optimizer], warmup_steps: int = 100,
                 min_lr_ratio: float = 0.05, gain_db: float = 0.0, text_cache_file: str | None = None,
                 run_config: dict | None = None) -> None:
        super().__init__()
        if text_encoder.dim != model.text_dim:
            raise ValueError(f"ContrastiveTask: the text encoder's width is {text_encoder.dim}, the model's text "
                             f"projection expects {model.text_dim}")
        if gain_db < 0:
            raise ValueError(f"ContrastiveTask: gain_db must be >= 0, got {gain_db}")
        self.model = model
        self.text_encoder = text_encoder.requires_grad_(False)
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.gain_db = gain_db
        self.text_cache_file = text_cache_file
        self.run_config = run_config or {}
        self.captions = PooledCaptions(text_encoder, text_cache_file)

    # ---- set-up -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.text_cache_file and hasattr(datamodule, "captions"):
            self.captions.add([*datamodule.captions("train"), *datamodule.captions("val")])

    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(self.warmup_steps, int(total), self.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- steps --------------------------------------------------------------------------------------------
    def embed_batch(self, batch: dict[str, Any], augment: bool) -> tuple[Tensor, Tensor]:
        """(audio [B, E], text [B, E]) unit embeddings of a datamodule batch (`wav` [B, C, T] → mono mean)."""
        wav = batch["wav"].mean(dim=1)
        if augment:
            wav = random_gain(wav, self.gain_db)
        pooled = self.captions(list(batch["caption"])).to(wav.device)
        return self.model(wav, pooled)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        audio, text = self.embed_batch(batch, augment=True)
        scale = self.model.scale()
        loss = info_nce(audio, text, scale)
        size = audio.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/temperature", 1.0 / scale.detach(), batch_size=size)
        self.log("train/batch_accuracy", _batch_accuracy(audio.detach(), text.detach()), batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        audio, text = self.embed_batch(batch, augment=False)
        loss = info_nce(audio, text, self.model.scale())
        size = audio.shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("val/batch_accuracy", _batch_accuracy(audio, text), batch_size=size, sync_dist=True)
        return loss

    # ---- checkpoints --------------------------------------------------------------------------------------
    # The frozen text encoder is loaded from its source, not stored in every checkpoint.
    _FROZEN_PREFIX = "text_encoder."

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith(self._FROZEN_PREFIX)}
        checkpoint["audiodiff"] = {"version": __version__, "kind": CHECKPOINT_KIND, "config": self.run_config}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        kind = checkpoint.get("audiodiff", {}).get("kind")
        if kind != CHECKPOINT_KIND:
            raise ValueError(f"ContrastiveTask: the checkpoint is a {kind or 'diffusion'} checkpoint, expected "
                             f"'{CHECKPOINT_KIND}'")
        own = self.state_dict()
        checkpoint["state_dict"].update({k: v for k, v in own.items() if k.startswith(self._FROZEN_PREFIX)})


def model_state(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The `model.*` entries of a ContrastiveTask state dict, prefix removed (what an export holds)."""
    out = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    if not out:
        raise ValueError("state dict has no 'model.*' entries: is it a ContrastiveTask checkpoint?")
    return out


def checkpoint_path(run_dir: str | Path) -> Path:
    """`<run_dir>/checkpoints/last.ckpt`, the checkpoint a rerun resumes from."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"
