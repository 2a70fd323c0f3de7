"""Typed errors for reading and writing audio files.

Every error carries the offending ``path`` (or ``None`` for in-memory audio) and a human ``reason``;
``str(error)`` reads ``"<path>: <reason>"`` so that a log line names the file to look at.
"""

from __future__ import annotations

from pathlib import Path


class AudioError(Exception):
    """Base class: something is wrong with one audio file or buffer.

    Attributes:
        path: the file concerned, as a string, or ``None`` for in-memory audio.
        reason: what went wrong, including expected vs got where that applies.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path: str | None = None if path is None else str(path)
        self.reason: str = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.reason if self.path is None else f"{self.path}: {self.reason}"

    def __reduce__(self) -> tuple[type[AudioError], tuple[str | None, str]]:
        # Keep the two-argument constructor when errors cross process boundaries (DataLoader workers).
        return (type(self), (self.path, self.reason))


class AudioFileNotFound(AudioError):
    """The path does not exist or is not a regular file."""


class AudioDecodeError(AudioError):
    """The file exists but cannot be decoded: empty, truncated, not audio, or an unsupported format."""


class AudioEncodeError(AudioError):
    """The samples could not be written in the requested format (e.g. more channels than FLAC allows)."""


class AudioContentError(AudioError):
    """The file decodes but its samples are unusable: NaN/Inf values or zero frames."""
