"""Imperceptible watermarks on generated audio, and their detection.

    mark = watermarker("spectral")            # built in, no weights; "audioseal" when its package is installed
    marked = mark.embed(wav, 16000, bits)     # wav [C, T] at 16 kHz; bits: 16 message bits (e.g. a model id)
    mark.detect(marked, 16000)                # Detection(marked=True, score=…, p_value=…, bits=…)

`python -m audiodiff.watermark detect FILES...` prints one line per file.
"""

from __future__ import annotations

from typing import Literal, Protocol

from torch import Tensor

from audiodiff.watermark.types import Detection, WatermarkError, hex_bits

Method = Literal["spectral", "audioseal"]
METHODS: tuple[str, ...] = ("spectral", "audioseal")


class Watermarker(Protocol):
    name: str
    bits: int
    key_id: str

    def embed(self, wav: Tensor, sample_rate: int, bits: tuple[int, ...] = ...) -> Tensor: ...

    def detect(self, wav: Tensor, sample_rate: int) -> Detection: ...


def watermarker(method: str = "spectral", key: str | None = None) -> Watermarker:
    """The watermark `method` ("spectral": built in; "audioseal": needs its package and weights) with `key`
    (spectral only; None = the public default key). Raises WatermarkError naming an unknown method or what is
    missing."""
    if method == "spectral":
        from audiodiff.watermark.spectral import DEFAULT_KEY, SpectralWatermark

        return SpectralWatermark(DEFAULT_KEY if key is None else key)
    if method == "audioseal":
        if key is not None:
            raise WatermarkError("watermark key: AudioSeal's key is its weights; give no key with method audioseal")
        from audiodiff.watermark.audioseal import AudioSealWatermark

        return AudioSealWatermark()
    raise WatermarkError(f"watermark method: expected one of {list(METHODS)}, got {method!r}")


def describe_mark(mark: Watermarker, bits: tuple[int, ...]) -> dict[str, object]:
    """What a sidecar records about an applied mark: method, key fingerprint and message (hex)."""
    value = int("".join(str(b) for b in bits), 2)
    return {"method": mark.name, "key": mark.key_id, "message": f"{value:0{(len(bits) + 3) // 4}x}"}


__all__ = ["METHODS", "Detection", "Method", "WatermarkError", "Watermarker", "describe_mark", "hex_bits",
           "watermarker"]
