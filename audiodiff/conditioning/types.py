"""The conditioning a denoiser receives, in one small container."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Conditioning:
    """Everything a denoiser may condition on.

    tokens: [B, N, E] text token states from a frozen encoder.
    mask:   [B, N] bool, True where a token is real (False = padding or dropped caption).
    pooled: [B, E] mean of the real token states (zeros for a dropped caption), or None.
    globals_: [B, G] global features such as timing (seconds start, seconds total), or None.
    local: [B, C, L] per-frame features aligned with the latents, or None (Stable Audio 3's inpainting input: the
           keep mask and the masked known latents, C = 1 + D).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor | None = None
    globals_: Tensor | None = None
    local: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        def move(t: Tensor | None, cast: bool) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if cast and dtype is not None else t.dtype)

        return Conditioning(move(self.tokens, True), move(self.mask, False), move(self.pooled, True),
                            move(self.globals_, True), move(self.local, True))

    def select(self, index: Tensor | slice) -> Conditioning:
        """Rows `index` of every field."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return Conditioning(pick(self.tokens), pick(self.mask), pick(self.pooled), pick(self.globals_),
                            pick(self.local))

    def with_mask(self, mask: Tensor) -> Conditioning:
        return replace(self, mask=mask)

    def pad_tokens(self, length: int) -> Conditioning:
        """Pad tokens and mask with zeros / False up to `length` tokens (never truncates)."""
        extra = length - self.tokens.shape[1]
        if extra <= 0:
            return self
        tokens = torch.nn.functional.pad(self.tokens, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(self.mask, (0, extra), value=False)
        return replace(self, tokens=tokens, mask=mask)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch, padding token sequences to the longest."""
        length = max(c.tokens.shape[1] for c in items)
        items = [c.pad_tokens(length) for c in items]

        def join(ts: list[Tensor | None]) -> Tensor | None:
            return None if ts[0] is None else torch.cat(ts, dim=0)  # type: ignore[arg-type]

        return Conditioning(torch.cat([c.tokens for c in items]), torch.cat([c.mask for c in items]),
                            join([c.pooled for c in items]), join([c.globals_ for c in items]),
                            join([c.local for c in items]))
