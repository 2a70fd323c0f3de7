"""What every watermark method shares: the detection result, the error type and the message check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WatermarkError(ValueError):
    """A watermark that cannot be embedded or checked as asked (bad key, message, rate or missing method)."""


@dataclass(frozen=True)
class Detection:
    """One clip's verdict. score: the detector's statistic (the spectral method's z-score; AudioSeal's
    probability); p_value: the chance of a score at least this high in an unmarked clip; bits: the message read
    from a marked clip (None when not marked)."""

    method: str
    marked: bool
    score: float
    p_value: float
    bits: tuple[int, ...] | None
    note: str = ""

    @property
    def message_hex(self) -> str | None:
        """The message bits as hex digits (first bit most significant), or None."""
        if self.bits is None:
            return None
        value = int("".join(str(b) for b in self.bits), 2)
        return f"{value:0{(len(self.bits) + 3) // 4}x}"


def check_bits(bits: Sequence[int], count: int) -> tuple[int, ...]:
    """`bits` as a tuple of `count` 0/1 ints; WatermarkError otherwise."""
    out = tuple(bits)
    if len(out) != count or any(b not in (0, 1) for b in out):
        raise WatermarkError(f"message: expected {count} bits of 0 or 1, got {list(out)!r}")
    return tuple(int(b) for b in out)


def hex_bits(text: str, count: int) -> tuple[int, ...]:
    """`count` bits from the leading hex digits of `text` (e.g. a content hash), first bit most significant."""
    digits = (count + 3) // 4
    try:
        value = int(text[:digits], 16)
    except ValueError:
        raise WatermarkError(f"message: expected at least {digits} hex digits, got {text!r}") from None
    if len(text) < digits:
        raise WatermarkError(f"message: expected at least {digits} hex digits, got {text!r}")
    return tuple((value >> (digits * 4 - 1 - i)) & 1 for i in range(count))
