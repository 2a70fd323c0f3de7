"""What the GAN-trained stages (vocoder, waveform VAE) share: the discriminator's step, the generator's adversarial
and feature-matching terms, gradient clipping and the exponential learning-rate decay.

Both train with manual optimization and two optimizers (generator first, discriminator second). Lightning counts
every manual ``optimizer.step()`` in ``trainer.global_step``; the discriminator's step is left out of that count
(:func:`uncounted_step`), so ``global_step``, ``trainer.max_steps``, checkpoint intervals, ``adversarial_start`` and
``lr_decay_every`` all count batches (generator steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from audiodiff.adversarial.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss


def _no_count() -> None:
    """Stands in for Lightning's step-counting hooks around an optimizer step."""


@contextmanager
def uncounted_step(optimizer: LightningOptimizer) -> Iterator[None]:
    """Within the block, ``optimizer.step()`` does not advance ``trainer.global_step``.

    Lightning's manual-optimization loop wraps every ``LightningOptimizer.step`` in hooks that count it (and time it
    in the profiler); with two optimizers a GAN batch would count twice. The strategy's own ``optimizer_step``
    (precision plugins, gradient scaling) still runs.
    """
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = _no_count
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


class GanTask(L.LightningModule):
    """Base of the GAN-trained tasks; a subclass names its generator's parameters (:meth:`generator_parameters`).

    Args:
        discriminator: maps ``wav [B, 1, T]`` to ``(logits, feature maps)`` lists (e.g. a
            :class:`~audiodiff.adversarial.discriminators.CombinedDiscriminator`); None trains the generator alone.
        optimizer: partial optimizer constructor (Hydra ``_partial_: true``), called once per player.
        lr_decay: factor of the exponential learning-rate decay of both players.
        lr_decay_every: steps between decays; None decays at the end of every training epoch.
        adversarial_start: steps before the discriminator comes in (0: from the first step; None: never).
        grad_clip: maximum global 2-norm of each player's gradient, None for no clipping.
        run_config: the resolved run configuration, embedded in every checkpoint with the package version.
    """

    def __init__(self, discriminator: nn.Module | None, optimizer: Callable[..., torch.optim.Optimizer],
                 lr_decay: float, lr_decay_every: int | None, adversarial_start: int | None, grad_clip: float | None,
                 run_config: dict[str, Any] | None) -> None:
        super().__init__()
        name = type(self).__name__
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"{name}: lr_decay must lie in (0, 1], got {lr_decay}")
        if lr_decay_every is not None and lr_decay_every < 1:
            raise ValueError(f"{name}: lr_decay_every must be >= 1 step or None (per epoch), got {lr_decay_every}")
        if adversarial_start is not None and adversarial_start < 0:
            raise ValueError(f"{name}: adversarial_start must be >= 0 or None (never), got {adversarial_start}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"{name}: grad_clip must be > 0 or None, got {grad_clip}")
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.optimizer_factory = optimizer
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.adversarial_start = adversarial_start
        self.grad_clip = grad_clip
        self.run_config = run_config or {}

    @property
    def adversarial(self) -> bool:
        """Whether the discriminator takes part in the current step."""
        return self.adversarial_start is not None and self.global_step >= self.adversarial_start

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of the generating player (vocoder generator, autoencoder)."""
        raise NotImplementedError

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LRScheduler]]:
        """The generator's optimizer first, the discriminator's (when there is one) second, each with an
        exponential learning-rate decay."""
        optimizers = [self.optimizer_factory(self.generator_parameters())]
        if self.discriminator is not None:
            optimizers.append(self.optimizer_factory(self.discriminator.parameters()))
        return optimizers, [torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay) for opt in optimizers]

    def clip(self, optimizer: LightningOptimizer) -> None:
        """Clip the gradients of `optimizer`'s parameters to ``grad_clip`` (global 2-norm), if set."""
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def discriminator_step(self, opt_d: LightningOptimizer, real: Tensor, fake: Tensor) -> Tensor:
        """One least-squares step of the discriminator on real and generated waveforms ``[B, 1, T]`` (the fakes
        detached), not counted in ``global_step``. Returns its loss, detached."""
        assert self.discriminator is not None
        with self.toggled_optimizer(opt_d):
            real_logits, _ = self.discriminator(real)
            fake_logits, _ = self.discriminator(fake.detach())
            loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            self.clip(opt_d)
            with uncounted_step(opt_d):
                opt_d.step()
        return loss_d.detach()

    def adversarial_terms(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The generator's least-squares adversarial loss and feature-matching loss for waveforms ``[B, 1, T]``
        (gradients flow into `fake`); call within the generator's ``toggled_optimizer``."""
        assert self.discriminator is not None
        _, real_maps = self.discriminator(real)
        fake_logits, fake_maps = self.discriminator(fake)
        return generator_adversarial_loss(fake_logits), feature_matching_loss(real_maps, fake_maps)

    def decay_lr_on_schedule(self) -> None:
        """After a generator step: decay the learning rates when ``lr_decay_every`` steps have passed."""
        if self.lr_decay_every is not None and self.global_step % self.lr_decay_every == 0:
            self._decay_lr()

    def on_train_epoch_end(self) -> None:
        if self.lr_decay_every is None:
            self._decay_lr()

    def _decay_lr(self) -> None:
        schedules = self.lr_schedulers()
        for schedule in schedules if isinstance(schedules, list) else [schedules]:
            schedule.step()
