"""Input checks shared by the denoisers, so every family names bad inputs the same way."""

from __future__ import annotations

from torch import Tensor

from audiodiff.conditioning.types import Conditioning


def check_latents(owner: str, x: Tensor, in_channels: int) -> None:
    """x must be [B, in_channels, L]."""
    if x.ndim != 3 or x.shape[1] != in_channels:
        raise ValueError(f"{owner}: x must be [B, in_channels={in_channels}, L], got {tuple(x.shape)}")


def check_noise_level(owner: str, noise_level: Tensor, batch: int) -> None:
    """noise_level must be [B]."""
    if noise_level.shape != (batch,):
        raise ValueError(f"{owner}: noise_level must have shape [B] = ({batch},), got {tuple(noise_level.shape)}")


def global_inputs(owner: str, cond: Conditioning | None, batch: int, pooled_dim: int | None,
                  global_dim: int | None) -> tuple[Tensor | None, Tensor | None]:
    """The pooled text embedding [B, pooled_dim] and global features [B, global_dim] a network was built for
    (None where it was not built for them)."""
    found = []
    for name, dim in (("pooled", pooled_dim), ("globals_", global_dim)):
        if not dim:
            found.append(None)
            continue
        value = None if cond is None else getattr(cond, name)
        label = "pooled_dim" if name == "pooled" else "global_dim"
        if value is None:
            raise ValueError(f"{owner}: {label}={dim} needs cond.{name} [B, {dim}], got None")
        if value.shape != (batch, dim):
            raise ValueError(f"{owner}: cond.{name} must be [B, {label}] = ({batch}, {dim}), "
                             f"got {tuple(value.shape)}")
        found.append(value)
    return found[0], found[1]


def text_context(owner: str, cond: Conditioning | None, batch: int, context_dim: int) -> tuple[Tensor, Tensor]:
    """Text tokens [B, N, context_dim] and their mask [B, N] for cross-attention."""
    if cond is None:
        raise ValueError(f"{owner}: cross_attention=True needs cond with tokens [B, N, E] and mask [B, N], got None")
    tokens, mask = cond.tokens, cond.mask
    if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != context_dim:
        raise ValueError(f"{owner}: cond.tokens must be [B={batch}, N, E={context_dim}], got {tuple(tokens.shape)}")
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"{owner}: cond.mask must be [B, N] = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")
    return tokens, mask
