"""The published model families audiodiff converts, one entry each, and the folder detection over them: the
command `python -m audiodiff.convert FORMAT SRC OUT` and `AudioDiffusionPipeline.from_pretrained` on a published
folder both go through here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audiodiff.models import stable_audio3_convert, stable_audio_convert
from audiodiff.models.conversion import ConversionError, Converted


@dataclass(frozen=True)
class Family:
    """A published family: its command word, how to recognise its folder, and its conversion (returns what
    `audiodiff.models.conversion.write_converted` writes)."""

    format: str
    is_folder: Callable[[str | Path], bool]
    converted: Callable[[str | Path, str | Path | None], Converted]
    convert: Callable[[str | Path, str | Path, str | Path | None], Path]


FAMILIES: dict[str, Family] = {
    "stable-audio-open": Family("stable-audio-open", stable_audio_convert.is_stable_audio_folder,
                                stable_audio_convert.converted, stable_audio_convert.convert),
    stable_audio3_convert.FORMAT: Family(stable_audio3_convert.FORMAT, stable_audio3_convert.is_stable_audio3_folder,
                                         stable_audio3_convert.converted, stable_audio3_convert.convert),
}


def family_of(path: str | Path) -> Family | None:
    """The family whose published folder `path` is, or None (an audiodiff export, or anything else)."""
    for family in FAMILIES.values():
        if family.is_folder(path):
            return family
    return None


def convert(format: str, src: str | Path, out: str | Path, text_encoder: str | Path | None = None) -> Path:
    """Convert the `format` folder `src` into the export folder `out` (written atomically); returns `out`."""
    if format not in FAMILIES:
        raise ConversionError(f"format: expected one of {list(FAMILIES)}, got {format!r}")
    found = family_of(src)
    if found is not None and found.format != format:
        raise ConversionError(f"{src}: a published {found.format} folder, not {format}; convert it with "
                              f"format {found.format}")
    return FAMILIES[format].convert(src, out, text_encoder)
