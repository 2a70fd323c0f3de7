"""Manifests: one JSON object per line describing one audio clip and its captions.

Schema (JSONL; blank lines are allowed and ignored):

=============== ========================================= ===================================================
key             type                                      meaning
=============== ========================================= ===================================================
``audio``       str, required                             path relative to the manifest's folder, or absolute
``caption``     non-empty str or non-empty list of them   one or more descriptions of the clip
``duration``    number > 0, optional                      length of the file in seconds
``sample_rate`` int > 0, optional                         the file's sample rate in Hz
``split``       str, optional                             e.g. ``train`` / ``val`` / ``test``
``license``     str, optional                             licence of the audio and/or captions
``source``      str, optional                             where the clip comes from (corpus name, URL)
``attributes``  object, optional                          free-form labels (class, pitch, event count, ...)
=============== ========================================= ===================================================

Any other top-level key is kept verbatim in :attr:`ManifestRow.extra`.

A row without ``split`` is a training row. Readers that train (:class:`Holdout`) hold a seeded fraction of those rows
out for validation when the manifest has no validation rows of its own, so a manifest of unsplit rows trains as it is.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from audiodiff.utils.files import write_text

KNOWN_KEYS = ("audio", "caption", "duration", "sample_rate", "split", "license", "source", "attributes")
_OPTIONAL_STR_KEYS = ("split", "license", "source")
_CAPTION_EXPECTED = "a non-empty string or a non-empty list of them"


class ManifestError(ValueError):
    """A manifest (or one of its rows) does not follow the schema.

    Attributes:
        path: the manifest file.
        line: 1-based line number of the offending row (0 when the problem concerns the whole file).
        field: the offending key (``""`` for the row as a whole).
        expected: what the schema wants.
        got: what the row holds (a short repr).
    """

    def __init__(self, path: str | Path, line: int, field: str, expected: str, got: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        what = f"field {self.field!r}: " if self.field else ""
        return f"{where}: {what}expected {self.expected}, got {self.got}"

    def __reduce__(self) -> tuple[type[ManifestError], tuple[str, int, str, str, str]]:
        return (type(self), (self.path, self.line, self.field, self.expected, self.got))


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row.

    Attributes:
        audio: absolute path of the audio file.
        captions: one or more non-empty captions, in manifest order.
        line: 1-based line number in the manifest.
        duration: declared length in seconds, if any.
        sample_rate: declared sample rate in Hz, if any.
        split: declared split, if any.
        license: declared licence, if any.
        source: declared source, if any.
        attributes: free-form labels (empty when absent).
        extra: unknown top-level keys, kept verbatim.
    """

    audio: Path
    captions: tuple[str, ...]
    line: int
    duration: float | None = None
    sample_rate: int | None = None
    split: str | None = None
    license: str | None = None
    source: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """The first caption."""
        return self.captions[0]

    def to_dict(self) -> dict[str, Any]:
        """The row as a manifest object (absolute ``audio``; :func:`write_manifest` relativises it)."""
        out: dict[str, Any] = {
            "audio": str(self.audio),
            "caption": self.captions[0] if len(self.captions) == 1 else list(self.captions),
        }
        for key in ("duration", "sample_rate", "split", "license", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        out.update(self.extra)
        return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _got(value: Any) -> str:
    return f"{_type_name(value)} {_short(value)}"


def _row_problems(obj: Any) -> list[tuple[str, str, str]]:
    """Every schema violation of one decoded row as ``(field, expected, got)``."""
    if not isinstance(obj, dict):
        return [("", "a JSON object", _got(obj))]
    problems: list[tuple[str, str, str]] = []
    audio = obj.get("audio")
    if "audio" not in obj:
        problems.append(("audio", "a path string", "nothing (key missing)"))
    elif not isinstance(audio, str) or not audio.strip():
        problems.append(("audio", "a non-empty path string", _got(audio)))

    caption = obj.get("caption")
    if "caption" not in obj:
        problems.append(("caption", _CAPTION_EXPECTED, "nothing (key missing)"))
    elif isinstance(caption, str):
        if not caption.strip():
            problems.append(("caption", "a non-empty string", _got(caption)))
    elif isinstance(caption, list):
        if not caption:
            problems.append(("caption", "a non-empty list of non-empty strings", "an empty list"))
        for i, item in enumerate(caption):
            if not isinstance(item, str) or not item.strip():
                problems.append((f"caption[{i}]", "a non-empty string", _got(item)))
    else:
        problems.append(("caption", _CAPTION_EXPECTED, _got(caption)))

    if "duration" in obj:
        duration = obj["duration"]
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not math.isfinite(duration)
            or duration <= 0
        ):
            problems.append(("duration", "a finite number of seconds > 0", _got(duration)))
    if "sample_rate" in obj:
        rate = obj["sample_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            problems.append(("sample_rate", "an integer number of Hz > 0", _got(rate)))
    for key in _OPTIONAL_STR_KEYS:
        if key in obj and not isinstance(obj[key], str):
            problems.append((key, "a string", _got(obj[key])))
    if "attributes" in obj and not isinstance(obj["attributes"], dict):
        problems.append(("attributes", "a JSON object", _got(obj["attributes"])))
    return problems


def _resolve_audio(audio: str, base: Path) -> Path:
    path = Path(audio).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _make_row(obj: dict[str, Any], base: Path, line: int) -> ManifestRow:
    caption = obj["caption"]
    captions = (caption,) if isinstance(caption, str) else tuple(caption)
    duration = obj.get("duration")
    return ManifestRow(
        audio=_resolve_audio(obj["audio"], base),
        captions=captions,
        line=line,
        duration=None if duration is None else float(duration),
        sample_rate=obj.get("sample_rate"),
        split=obj.get("split"),
        license=obj.get("license"),
        source=obj.get("source"),
        attributes=dict(obj.get("attributes") or {}),
        extra={k: v for k, v in obj.items() if k not in KNOWN_KEYS},
    )


def _open_manifest(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.is_file():
        got = "not a regular file" if path.exists() else "no such file"
        raise ManifestError(path, 0, "", "an existing manifest file", got)
    with path.open("rb") as handle:  # decoded line by line, so a non-UTF-8 line is one bad row
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def _decode_line(raw: bytes) -> tuple[Any, tuple[str, str] | None]:
    """(the line's JSON value, None), or (None, (expected, got)) for a line that is not UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, ("UTF-8 text", f"byte 0x{raw[error.start]:02x} at column {error.start + 1}")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, ("valid JSON", f"invalid JSON ({error.msg} at column {error.colno})")


def iter_rows(path: str | Path) -> Iterator[tuple[int, ManifestRow | None, str | None]]:
    """Walk a manifest without stopping at bad rows.

    Yields:
        ``(line, row, problem)`` for every non-blank line: ``row`` is the parsed row and ``problem`` is
        ``None`` when the line follows the schema; otherwise ``row`` is ``None`` and ``problem`` names every
        bad field with expected vs got.

    Raises:
        ManifestError: when the manifest itself does not exist.
    """
    for number, row, problems in _parse_lines(Path(path)):
        yield number, row, (_describe(problems) if problems else None)


def _describe(problems: list[tuple[str, str, str]]) -> str:
    parts = [
        (f"field {key!r}: " if key else "") + f"expected {want}, got {got}"
        for key, want, got in problems
    ]
    return "; ".join(parts)


def _parse_lines(path: Path) -> Iterator[tuple[int, ManifestRow | None, list[tuple[str, str, str]]]]:
    """``(line, row or None, problems)`` for every non-blank line."""
    base = path.absolute().parent
    for number, text in _open_manifest(path):
        obj, bad = _decode_line(text)
        if bad is not None:
            yield number, None, [("", *bad)]
            continue
        problems = _row_problems(obj)
        yield number, (None if problems else _make_row(obj, base, number)), problems


def held_out(count: int, fraction: float, seed: int) -> set[int]:
    """The positions (of ``range(count)``) a seeded ``fraction`` holds out: ``round(fraction · count)`` of them,
    at least one when ``fraction > 0`` and ``count >= 2``, never all; a ``random.Random(seed)`` sample."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction: expected 0 <= val_fraction < 1, got {fraction}")
    held = round(fraction * count)
    if fraction > 0 and count >= 2:
        held = min(max(held, 1), count - 1)
    return set(random.Random(seed).sample(range(count), held))


@dataclass(frozen=True)
class Holdout:
    """Splits for rows that have none: they are ``train`` rows, and when no row is in the ``val`` split a seeded
    ``fraction`` of them (:func:`held_out`) becomes ``val`` rows.

    Attributes:
        fraction: share of the unsplit rows held out for validation (0: none).
        seed: seeds which rows are held out (the same rows whatever the training seed).
        train, val: the split names given.
    """

    fraction: float = 0.1
    seed: int = 0
    train: str = "train"
    val: str = "val"

    def assign(self, rows: list[ManifestRow]) -> list[ManifestRow]:
        """`rows` with every missing ``split`` filled in (rows that have one are returned as they are)."""
        unsplit = [i for i, row in enumerate(rows) if row.split is None]
        if not unsplit:
            return rows
        has_val = any(row.split == self.val for row in rows)
        chosen = set() if has_val else {unsplit[i] for i in held_out(len(unsplit), self.fraction, self.seed)}
        return [replace(row, split=self.val if i in chosen else self.train) if row.split is None else row
                for i, row in enumerate(rows)]


def read_manifest(path: str | Path, split: str | None = None, holdout: Holdout | None = None) -> list[ManifestRow]:
    """Read and validate every row of a manifest.

    Args:
        path: the JSONL manifest.
        split: keep only rows whose ``split`` equals this (``None`` keeps all rows).
        holdout: give rows without a ``split`` one first (:meth:`Holdout.assign`); ``None`` leaves them without.

    Returns:
        The rows in file order, with ``audio`` resolved to absolute paths.

    Raises:
        ManifestError: on the first row that breaks the schema (naming file, line, field, expected and got),
            or when the file does not exist.
    """
    path = Path(path)
    rows: list[ManifestRow] = []
    for number, row, problems in _parse_lines(path):
        if problems:
            raise ManifestError(path, number, *problems[0])
        assert row is not None
        rows.append(row)
    if holdout is not None:
        rows = holdout.assign(rows)
    return [row for row in rows if split is None or row.split == split]


def iter_manifest_problems(path: str | Path) -> Iterator[tuple[int, str]]:
    """Every schema problem in a manifest, as ``(line, message)``; one entry per bad row.

    Only the schema is checked (no file access beyond the manifest); a message lists every bad field of a row.

    Raises:
        ManifestError: when the manifest itself does not exist.
    """
    for number, _row, problem in iter_rows(path):
        if problem is not None:
            yield number, problem


def _relative_audio(audio: str | os.PathLike[str], base: Path) -> str:
    path = Path(audio)
    if not path.is_absolute():
        return path.as_posix()
    return Path(os.path.relpath(path, base)).as_posix()


_KEY_ORDER = {key: i for i, key in enumerate(KNOWN_KEYS)}


def write_manifest(path: str | Path, rows: Iterable[Mapping[str, Any] | ManifestRow]) -> Path:
    """Write rows as a JSONL manifest, atomically (temporary file in the same folder, then rename).

    Args:
        path: destination; its parent folder is created if needed.
        rows: manifest objects (``audio`` may be a str or a Path; absolute paths are written relative to the
            manifest's folder) or :class:`ManifestRow` instances. Keys follow the schema order, unknown ones
            last.

    Returns:
        The manifest path.

    Raises:
        ManifestError: a row breaks the schema (``line`` is its 1-based position in ``rows``); nothing is
            written then.
    """
    path = Path(path)
    base = path.absolute().parent
    base.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for number, row in enumerate(rows, start=1):
        obj = row.to_dict() if isinstance(row, ManifestRow) else dict(row)
        if isinstance(obj.get("audio"), os.PathLike):
            obj["audio"] = os.fspath(obj["audio"])
        if isinstance(obj.get("caption"), tuple):
            obj["caption"] = list(obj["caption"])
        problems = _row_problems(obj)
        if problems:
            raise ManifestError(path, number, *problems[0])
        obj["audio"] = _relative_audio(obj["audio"], base)
        ordered = dict(sorted(obj.items(), key=lambda item: _KEY_ORDER.get(item[0], len(_KEY_ORDER))))
        lines.append(json.dumps(ordered, ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))
    return path
