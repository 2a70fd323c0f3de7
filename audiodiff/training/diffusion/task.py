"""LightningModule that trains a DiffusionModel's denoiser on (waveform, caption) batches."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor

from audiodiff import __version__
from audiodiff.conditioning.cache import cached_states
from audiodiff.conditioning.text import collate_states
from audiodiff.conditioning.timing import frame_mask
from audiodiff.conditioning.types import Conditioning
from audiodiff.data.latent_datamodule import LatentDataModule
from audiodiff.models.model import DiffusionModel
from audiodiff.representations.base import Representation
from audiodiff.training.ema import EMA

log = logging.getLogger(__name__)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of all `tensors` together (a 0-d float32 tensor), from one loop over them (`torch._foreach_norm`,
    a C++ loop on CPU, batched kernels on GPU) instead of one Python call each."""
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(tensors)]))


def fit_representation(representation: Representation, loader: Iterable[dict[str, Any]], batches: int,
                       device: torch.device | str) -> None:
    """Fit `representation`'s latent statistics on the waveforms (`wav` [B, C, T]) of `loader`'s first `batches`
    batches."""
    representation.fit_statistics([batch["wav"].to(device) for batch in itertools.islice(loader, batches)])


def load_cached_statistics(representation: Representation, state: dict[str, Tensor], cache: str) -> None:
    """Give an unfitted `representation` the statistics a latent cache was normalised with (`state`); a fitted one
    (from a checkpoint) must already hold them, or the cached latents would be read on another scale."""
    own = representation.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"latent cache {cache}: its statistics {unknown} are not in the representation's state")
    if not representation.is_fitted:
        representation.load_state_dict(state, strict=False)
        return
    differ = [k for k, v in state.items()
              if not torch.allclose(own[k].detach().cpu().double(), v.double(), rtol=1e-5, atol=1e-6)]
    if differ:
        raise ValueError(f"latent cache {cache} was normalised with other statistics ({differ}) than the checkpoint's "
                         f"representation holds: the cache was rebuilt since this run started; start a new run")


class DiffusionTask(L.LightningModule):
    """Trains `model.net` with `model.objective`; keeps an EMA copy that sampling, previews and export use.

    The text encoder trains too when some of its weights require gradients (a fine-tune that unfreezes it,
    `audiodiff.training.finetune`): those weights get an EMA copy of their own (`text_ema`, exported as the model's
    text encoder), every caption is encoded at every step (no text cache: the states change as the encoder learns),
    and checkpoints keep the encoder's weights.

    optimizer: a partial optimizer constructor (Hydra `_partial_: true`), called with the trainable parameters.
    warmup_steps / min_lr_ratio: the LR schedule; its length is the trainer's max_steps.
    caption_dropout: probability of replacing a caption by "" (the null condition) for classifier-free guidance.
    stats_batches: batches of training audio used once to fit the representation's normalisation statistics (with
      latent data, the statistics come from the cache instead).
    text_cache_size: distinct captions whose encoder states are kept (float16, on the CPU) so that a caption seen
      again costs no text-encoder pass; 0 disables the cache.
    text_cache_file: a dataset-wide text cache (`audiodiff.conditioning.cache`), loaded at the start of training
      and built there on first use; None: the latent cache's own with latent data, else captions are encoded as
      they come.
    max_nonfinite: a step whose loss or gradient is NaN/Inf is skipped on every rank and counted; this many in a
      row stop the run with FloatingPointError.
    compile: compile the denoiser's forward with torch.compile (GPU runs; the first steps pay the compilation).
    run_config: the resolved run configuration, embedded in every checkpoint with the package version.
    """

    def __init__(self, model: DiffusionModel, optimizer: Callable[..., torch.optim.Optimizer],
                 warmup_steps: int = 500, min_lr_ratio: float = 0.1, ema_decay: float = 0.999,
                 caption_dropout: float = 0.1, stats_batches: int = 8, text_cache_size: int = 100_000,
                 text_cache_file: str | None = None, max_nonfinite: int = 10, compile: bool = False,
                 run_config: dict | None = None, licenses: dict[str, int] | None = None) -> None:
        super().__init__()
        self.licenses = licenses  # {licence: training clips}, recorded in every checkpoint for the model card
        self.model = model
        self.text_encoder_trains = any(p.requires_grad for p in model.text_encoder.parameters())
        self.ema = EMA(model.net, ema_decay)
        self.text_ema = EMA(model.text_encoder.model, ema_decay) if self.text_encoder_trains else None
        if compile:  # in place: the forward is compiled on first use, parameter names (and checkpoints) unchanged
            self.model.net.compile()
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.caption_dropout = caption_dropout
        self.stats_batches = stats_batches
        self.run_config = run_config or {}
        self.text_cache_size = text_cache_size
        self.text_cache_file = text_cache_file
        self.max_nonfinite = max_nonfinite
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        self._grad_norm: Tensor | None = None  # this step's global gradient norm, for clipping
        self._skip_step = False  # the current optimizer step is skipped (a non-finite loss or gradient on a rank)
        self._text_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self._val_generator_seed = 1234

    # ---- set-up -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Load the text cache, and fit the representation's statistics unless a checkpoint brought them: on the
        first `stats_batches` training batches, or, with latent data, from the cache (its latents are normalised
        with them)."""
        dm = self.trainer.datamodule
        latent = isinstance(dm, LatentDataModule)
        text_cache_file = self.text_cache_file or (dm.text_cache_file if latent else None)
        if text_cache_file and self.text_encoder_trains:
            if self.text_cache_file:
                raise ValueError(f"task.text_cache_file={self.text_cache_file}: cached text states cannot be used "
                                 f"while the text encoder trains (finetune.train_text_encoder=true): its states "
                                 f"change at every step; remove task.text_cache_file")
            log.info("the latent cache's text states (%s) are not used: the text encoder trains, so captions are "
                     "encoded at every step", text_cache_file)
        elif text_cache_file:
            self.load_text_cache(str(text_cache_file))
        rep = self.model.representation
        if latent:
            load_cached_statistics(rep, dm.representation_state(), str(dm.cache_dir))
        elif not rep.is_fitted:
            fit_representation(rep, dm.train_dataloader(), self.stats_batches, self.device)

    def load_text_cache(self, path: str) -> None:
        """Fill the in-memory text cache from the dataset-wide file at `path` (every train and val caption and the
        empty caption), encoding into the file whatever it lacks."""
        dm = self.trainer.datamodule
        captions = ["", *dm.captions("train"), *dm.captions("val")]
        states = cached_states(path, self.model.text_encoder, captions)
        self.text_cache_size = max(self.text_cache_size, len(states) + 1)
        self._text_cache.update(states)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer steps: the denoiser's that train, then the text encoder's (if any)."""
        return [p for p in itertools.chain(self.model.net.parameters(), self.model.text_encoder.parameters())
                if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        params = self.trainable_parameters()
        optimizer = self.optimizer_factory(params)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(self.warmup_steps, int(total), self.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- steps --------------------------------------------------------------------------------------------
    def _drop_captions(self, captions: list[str]) -> list[str]:
        keep = torch.rand(len(captions)) >= self.caption_dropout
        return [c if k else "" for c, k in zip(captions, keep.tolist(), strict=True)]

    def encode_captions(self, captions: list[str]) -> Conditioning:
        """Text states for a batch of captions, encoding only those not met before (all of them, with gradients,
        while the text encoder trains)."""
        if self.text_cache_size <= 0 or self.text_encoder_trains:
            return self.model.encode_text(captions)
        new = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if new:
            if len(self._text_cache) + len(new) > self.text_cache_size:
                self._text_cache.clear()
            self._text_cache.update(self.model.text_encoder.encode_unique(new, dtype=torch.float16))
        cond = collate_states([self._text_cache[c] for c in captions])
        return cond.to(self.device, dtype=self.dtype if self.dtype.is_floating_point else torch.float32)

    def batch_conditioning(self, batch: dict[str, Any], captions: list[str],
                           frames: int) -> tuple[Conditioning, Tensor | None]:
        """Conditioning for a batch and, for a timing-conditioned model, the loss weights [B, 1, frames] that
        leave the padding past each clip's end out (masked training)."""
        cond = self.encode_captions(captions)
        if self.model.timing is None:
            return cond, None
        # the model's own timing conditioner, as at inference (global features, or Stable Audio's seconds tokens)
        timed = self.model.timing.condition(cond, batch["seconds_start"], batch["seconds_total"])
        return timed.to(cond.tokens.device, cond.tokens.dtype), frame_mask(batch["mask"], frames).to(cond.tokens)

    def batch_latents(self, batch: dict[str, Any]) -> Tensor:
        """z [B, D, L]: the batch's precomputed `latents` (a latent cache), else its `wav` [B, C, T] encoded."""
        if "latents" in batch:
            return batch["latents"]
        with torch.no_grad():
            return self.model.representation.encode(batch["wav"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        z = self.batch_latents(batch)
        cond, weight = self.batch_conditioning(batch, self._drop_captions(batch["caption"]), z.shape[-1])
        loss = self.model.objective.loss(self.model.net, z, cond, weight=weight)
        if self._skip_nonfinite(loss.detach(), "loss"):
            self._skip_step = True  # the whole optimizer step, also with gradient accumulation
            # Backward still runs (under DDP every rank must take part in the gradient all-reduce, and Lightning
            # refuses a None loss there): a zero that reaches every trainable parameter gives zero gradients, which
            # on_before_optimizer_step then drops.
            params = self.trainable_parameters()
            return torch.stack([p.sum() for p in params]).sum() * 0.0
        self.log("train/loss", loss, prog_bar=True, batch_size=z.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the step when a gradient holds a NaN or Inf: their global norm is then not finite (so is a norm
        that overflows float32, whose clipped step would be zero anyway). The norm is kept for clipping."""
        params = self.trainable_parameters()
        grads = [p.grad for p in params if p.grad is not None]
        self._grad_norm = None
        if not self._skip_step:  # a non-finite loss was counted already
            norm = global_norm(grads) if grads else torch.zeros((), device=self.device)
            self._skip_step = self._skip_nonfinite(~torch.isfinite(norm), "gradient", is_flag=True)
            if not self._skip_step and grads:
                self._consecutive_nonfinite = 0
                self._grad_norm = norm
        if self._skip_step:
            for p in params:
                p.grad = None  # the optimizer leaves parameters without gradients untouched

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clipping by global norm (`trainer.gradient_clip_val`), as `torch.nn.utils.clip_grad_norm_` does it, with
        the norm the non-finite check computed: one pass over the gradients instead of two. Multi-process runs (whose
        local gradients may be shards of the whole), runs with loss scaling (whose gradients a fused optimizer unscales
        only in its step) and other algorithms clip as Lightning does."""
        scaled = getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None) is not None
        if (gradient_clip_val and (gradient_clip_algorithm or "norm") == "norm" and self._grad_norm is not None
                and self.trainer.world_size == 1 and not scaled):
            grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
            torch._foreach_mul_(grads, torch.clamp(gradient_clip_val / (self._grad_norm + 1e-6), max=1.0))
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _skip_nonfinite(self, value: Tensor, what: str, is_flag: bool = False) -> bool:
        """Whether this step must be skipped because `value` is (or flags) a NaN/Inf on any rank. Every rank gets
        the same answer (a max-reduction), so all skip together. Counts skips and stops the run after
        `max_nonfinite` consecutive ones."""
        flag = value.float() if is_flag else (~torch.isfinite(value)).float()
        if self.trainer is not None and self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag, reduce_op="max")
        if not bool(flag > 0):
            return False
        self.nonfinite_steps += 1
        self._consecutive_nonfinite += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), batch_size=1)
        log.warning("step %d: non-finite %s, step skipped (%d so far)", self.global_step, what, self.nonfinite_steps)
        if self._consecutive_nonfinite >= self.max_nonfinite:
            raise FloatingPointError(
                f"{self._consecutive_nonfinite} consecutive steps had a non-finite {what} (limit "
                f"task.max_nonfinite={self.max_nonfinite}); the last checkpoint holds the last good weights. Lower "
                f"optim.lr, check the data, or resume from the checkpoint.")
        return True

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Callable[[], Any] | None = None) -> None:
        """The optimizer step, then the EMA update, so that both are done before any callback's
        `on_train_batch_end`, where checkpoints are written: a checkpoint holds the EMA of its own step. A step
        skipped for a non-finite loss or gradient changes neither."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self._skip_step:
            self.ema.update(self.model.net, self.global_step + 1)  # global_step counts this step only after the hook
            if self.text_ema is not None:
                self.text_ema.update(self.model.text_encoder.model, self.global_step + 1)
        self._skip_step = False

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """EMA loss with a fixed generator, so values are comparable across evaluations."""
        z = self.batch_latents(batch)
        with self.averaged_text_encoder():
            cond, weight = self.batch_conditioning(batch, list(batch["caption"]), z.shape[-1])
        gen = torch.Generator(device=z.device).manual_seed(self._val_generator_seed + batch_idx)
        loss = self.model.objective.loss(self.ema.average, z, cond, generator=gen, weight=weight)
        self.log("val/loss", loss, prog_bar=True, batch_size=z.shape[0], sync_dist=True)
        return loss

    @contextmanager
    def averaged_text_encoder(self) -> Iterator[None]:
        """Within the block, the text encoder computes with its EMA weights (as the exported model will), when it
        trains; otherwise nothing changes."""
        if self.text_ema is None:
            yield
            return
        encoder = self.model.text_encoder
        live = encoder.model
        encoder.model = self.text_ema.average
        try:
            yield
        finally:
            encoder.model = live

    # ---- checkpoints --------------------------------------------------------------------------------------
    # A frozen text encoder is loaded from its source, not stored in every checkpoint (one that trains is kept).
    _FROZEN_PREFIX = "model.text_encoder."

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if self.text_encoder_trains or not k.startswith(self._FROZEN_PREFIX)}
        checkpoint["audiodiff"] = {"version": __version__, "config": self.run_config,
                                   "representation": self.model.representation.signature(),
                                   "nonfinite_steps": self.nonfinite_steps,
                                   "consecutive_nonfinite": self._consecutive_nonfinite}
        if self.licenses is not None:
            checkpoint["audiodiff"]["licenses"] = self.licenses

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = self.state_dict()
        if not self.text_encoder_trains:
            checkpoint["state_dict"].update({k: v for k, v in own.items() if k.startswith(self._FROZEN_PREFIX)})
        saved = checkpoint.get("audiodiff", {})
        self.nonfinite_steps = int(saved.get("nonfinite_steps", 0))
        self._consecutive_nonfinite = int(saved.get("consecutive_nonfinite", 0))
