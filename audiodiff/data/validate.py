"""Check a manifest and the audio it points to.

``python -m audiodiff.data.validate manifest=MANIFEST [decode=true] [workers=1]``

For every row: the schema; that the audio file exists and decodes to finite samples (header only with
``decode=false``); that a declared ``sample_rate`` equals the file's and a declared ``duration`` is within
:data:`DURATION_TOLERANCE` seconds of it. Every bad row is printed as ``MANIFEST:LINE: AUDIO: reason``, then a
summary; the exit status is 0 when every row is fine and 1 when any row is bad or the manifest has no rows. A
manifest that cannot be read at all, or a bad setting, ends in one ``error: ...`` line and exit status 1 too.

A WAV whose header declares more frames than the file holds gets the loader's verdict
(:func:`audiodiff.audio.io.check_shortfall`): bad when less than
:data:`~audiodiff.audio.io.MIN_DECODED_FRACTION` of the declared frames decode; otherwise the row is fine and
printed as ``MANIFEST:LINE: AUDIO: note: header declares ... frames, ... decode (...% short) ...``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from audiodiff.audio.errors import AudioError
from audiodiff.audio.io import audio_info, load_audio_noted
from audiodiff.data.manifest import ManifestRow, iter_rows
from audiodiff.utils.settings import flag, text, whole

DURATION_TOLERANCE = 0.05  # seconds between a declared duration and the file's
_PROGRESS_EVERY_S = 2.0  # seconds between progress lines on stderr


@dataclass(frozen=True)
class RowCheck:
    """The verdict on one manifest line.

    Attributes:
        line: 1-based line number.
        audio: the resolved audio path (``""`` when the row did not parse).
        problem: why the row is bad, or ``None`` when it is fine.
        note: something worth knowing about a usable file (it holds fewer frames than its header declares,
            but enough to keep), or ``None``.
    """

    line: int
    audio: str
    problem: str | None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ValidationReport:
    """Every row's verdict, in manifest order."""

    manifest: Path
    checks: tuple[RowCheck, ...]

    @property
    def rows(self) -> int:
        return len(self.checks)

    @property
    def bad(self) -> tuple[RowCheck, ...]:
        return tuple(check for check in self.checks if not check.ok)

    @property
    def ok(self) -> int:
        return self.rows - len(self.bad)

    @property
    def noted(self) -> tuple[RowCheck, ...]:
        """Rows with a note, bad or not."""
        return tuple(check for check in self.checks if check.note is not None)


def check_audio(row: ManifestRow, decode: bool = True) -> str | None:
    """Why ``row``'s audio file is unusable, or ``None`` when it is fine (see :func:`inspect_audio`)."""
    return inspect_audio(row, decode)[0]


def inspect_audio(row: ManifestRow, decode: bool = True) -> tuple[str | None, str | None]:
    """Why ``row``'s audio file is unusable, and what is worth noting about it.

    Args:
        row: a schema-valid manifest row.
        decode: decode every sample (catches truncation and NaN/Inf samples); ``False`` reads the header only.

    Returns:
        ``(problem, note)``: ``problem`` is ``None`` when the file is fine; ``note`` names a shortfall the
        loader accepts (a WAV holding fewer frames than its header declares, but enough to keep), else ``None``.
    """
    try:
        if decode:  # the loader refuses NaN/Inf samples and truncated streams
            wav, sample_rate, shortfall = load_audio_noted(row.audio)
            frames = int(wav.shape[-1])
        else:
            info = audio_info(row.audio)
            sample_rate, frames, shortfall = info.sample_rate, info.frames, info.shortfall
    except AudioError as error:
        return error.reason, None
    except Exception as error:  # a validator reports whatever a decoder throws instead of dying on it
        return f"unexpected {type(error).__name__} while reading: {error}", None
    note = None if shortfall is None else shortfall.note
    problems = []
    if row.sample_rate is not None and row.sample_rate != sample_rate:
        problems.append(f"declared sample_rate {row.sample_rate} Hz, the file has {sample_rate} Hz")
    duration = frames / sample_rate
    if row.duration is not None and abs(row.duration - duration) > DURATION_TOLERANCE:
        problems.append(
            f"declared duration {row.duration:.3f} s, the file lasts {duration:.3f} s "
            f"(tolerance {DURATION_TOLERANCE} s)"
        )
    return "; ".join(problems) or None, note


def _check_one(job: tuple[ManifestRow, bool]) -> tuple[str | None, str | None]:
    return inspect_audio(*job)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _checks(
    rows: list[tuple[int, ManifestRow | None, str | None]], decode: bool, workers: int
) -> Iterator[RowCheck]:
    parsed = [(line, row) for line, row, _ in rows if row is not None]
    jobs = [(row, decode) for _, row in parsed]
    if workers > 1 and len(jobs) > 1:
        chunksize = max(1, min(64, len(jobs) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            audio_problems = pool.map(_check_one, jobs, chunksize=chunksize)
            yield from _merge(rows, audio_problems)
    else:
        yield from _merge(rows, map(_check_one, jobs))


def _merge(
    rows: list[tuple[int, ManifestRow | None, str | None]],
    audio_verdicts: Iterator[tuple[str | None, str | None]],
) -> Iterator[RowCheck]:
    for line, row, schema_problem in rows:
        if row is None:
            yield RowCheck(line, "", schema_problem)
        else:
            yield RowCheck(line, str(row.audio), *next(audio_verdicts))


def validate_manifest(
    path: str | Path,
    *,
    decode: bool = True,
    workers: int = 1,
    progress: Callable[[int, int, int], None] | None = None,
) -> ValidationReport:
    """Check every row of a manifest (schema, existence, decoding, declared duration and sample rate).

    Args:
        path: the JSONL manifest.
        decode: decode every file (``False``: header only).
        workers: processes that check files in parallel (1: in this process).
        progress: called as ``progress(done, total, bad)`` after every row.

    Raises:
        ManifestError: the manifest file does not exist.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    path = Path(path)
    rows = list(iter_rows(path))
    checks: list[RowCheck] = []
    bad = 0
    for check in _checks(rows, decode, workers):
        checks.append(check)
        bad += not check.ok
        if progress is not None:
            progress(len(checks), len(rows), bad)
    return ValidationReport(path, tuple(checks))


def _progress_printer(stream: TextIO) -> Callable[[int, int, int], None]:
    last = time.monotonic()

    def report(done: int, total: int, bad: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_EVERY_S and done < total:
            last = now
            percent = 100 * done / total
            print(f"checked {done}/{total} rows ({percent:.0f}%), {bad} bad", file=stream, flush=True)

    return report


def main(cfg: Any, overrides: list[str] | None = None) -> int:
    """Check the manifest `cfg` (conf/validate.yaml) names; returns the exit status (0 all rows fine, 1 some row
    bad or no rows). An unreadable manifest raises ManifestError, a bad setting ValueError."""
    manifest = text(cfg, "manifest", required=True)
    decode, workers = flag(cfg, "decode"), whole(cfg, "workers", minimum=1)
    report = validate_manifest(manifest, decode=decode, workers=workers, progress=_progress_printer(sys.stderr))
    for check in report.checks:
        where = f"{report.manifest}:{check.line}"
        if not check.ok:
            print(f"{where}: {check.audio}: {check.problem}" if check.audio else f"{where}: {check.problem}")
        elif check.note is not None:
            print(f"{where}: {check.audio}: note: {check.note}")
    if report.rows == 0:
        print(f"{report.manifest}: the manifest has no rows")
    noted = sum(check.ok for check in report.noted)
    with_notes = f" ({noted} ok with a note)" if noted else ""
    print(f"rows: {report.rows}, ok: {report.ok}, bad: {len(report.bad)}{with_notes}")
    return 0 if report.rows and not report.bad else 1


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.data.validate", "validate", main, __doc__)
