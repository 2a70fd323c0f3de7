"""Exponential moving average of a network's weights (Polyak averaging) used for sampling and export."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds `average`, a frozen copy of a network updated as avg ← avg + (1 − d)(w − avg).

    decay d warms up as min(decay, (1 + step) / (10 + step)) so early averages are not dominated by the random
    initialisation. Buffers (e.g. norm statistics) are copied as they are. Parameters the network does not train
    (`requires_grad` false when the EMA is made, e.g. the frozen base of a LoRA fine-tune) would average to
    themselves: the copy shares them with the network instead of holding a second copy, and updates skip them.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        frozen = {id(p): p for p in net.parameters() if not p.requires_grad}
        # deepcopy takes what its memo holds as already copied: the frozen parameters are shared, not copied.
        self.average = copy.deepcopy(net, dict(frozen)).requires_grad_(False).eval()
        self._averaged = [id(p) not in frozen for p in self.average.parameters()]

    def current_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Move the average towards `net`'s current weights."""
        weight = 1.0 - self.current_decay(step)
        pairs = [(a, p) for a, p, averaged in zip(self.average.parameters(), net.parameters(), self._averaged,
                                                  strict=True) if averaged]
        if pairs:
            torch._foreach_lerp_([a for a, _ in pairs], [p.detach().to(a.dtype) for a, p in pairs], weight)
        for b_avg, b in zip(self.average.buffers(), net.buffers(), strict=True):
            b_avg.copy_(b)
