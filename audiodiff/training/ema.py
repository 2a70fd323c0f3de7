"""Exponential moving average of a network's weights (Polyak averaging) used for sampling and export."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds `average`, a frozen copy of a network updated as avg ← avg + (1 − d)(w − avg).

    decay d warms up as min(decay, (1 + step) / (10 + step)) so early averages are not dominated by the random
    initialisation. Buffers (e.g. norm statistics) are copied as they are.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        self.average = copy.deepcopy(net).requires_grad_(False).eval()

    def current_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Move the average towards `net`'s current weights."""
        weight = 1.0 - self.current_decay(step)
        avg = [p for p in self.average.parameters()]
        cur = [p.detach().to(a.dtype) for p, a in zip(net.parameters(), avg, strict=True)]
        torch._foreach_lerp_(avg, cur, weight)
        for b_avg, b in zip(self.average.buffers(), net.buffers(), strict=True):
            b_avg.copy_(b)
