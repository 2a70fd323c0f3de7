"""audiodiff.conditioning: what a denoiser conditions on, and the frozen text encoders that produce it.

`TextEncoder`, `collate_states` and `masked_mean` load lazily, so importing `Conditioning` does not import
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audiodiff.conditioning.types import Conditioning

if TYPE_CHECKING:
    from audiodiff.conditioning.text import TextEncoder, collate_states, masked_mean

__all__ = ["Conditioning", "TextEncoder", "collate_states", "masked_mean"]
_LAZY = {"TextEncoder", "collate_states", "masked_mean"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from audiodiff.conditioning import text

        return getattr(text, name)
    raise AttributeError(f"module 'audiodiff.conditioning' has no attribute {name!r}")
