"""A training manifest from a folder of audio files.

``python -m audiodiff.data.folder dir=DIR out=MANIFEST [val_fraction=0.1 seed=0 min_peak_db=-60]``

Every audio file under ``DIR`` (recursively; see :data:`~audiodiff.data.public.AUDIO_EXTENSIONS`) becomes a row.
Its captions come from the first of:

1. a sidecar text file beside it with the same stem (``clip.txt`` for ``clip.wav``): one caption per non-empty line;
2. ``DIR/captions.csv``: a header row with a file column (``file``, ``file_name``, ``filename``, ``audio`` or
   ``path``) and a caption column (``caption``, ``text``, ``description`` or ``prompt``), the file relative to DIR;
3. ``DIR/metadata.jsonl``: one object per line with the same keys (the Hugging Face ``audiofolder`` layout);
4. the file name: ``dog_bark-03.wav`` gives ``dog bark`` (separators become spaces, trailing numbers go).

The summary says how many captions came from each source, so captions guessed from file names are never silent.
Every file is decoded with the loader training uses (:func:`audiodiff.audio.io.load_audio_noted`, the validator's
rules): an unreadable file, and a silent one (peak below ``min_peak_db`` dBFS), is reported and left out. Rows are
split by a seeded fraction: ``round(val_fraction · rows)`` of them (at least one when there are two or more) get
``split: val``, the others ``split: train``. Each row records its ``duration`` and ``sample_rate``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audiodiff.audio.errors import AudioError
from audiodiff.audio.io import load_audio_noted
from audiodiff.data.manifest import held_out, write_manifest
from audiodiff.data.public import AUDIO_EXTENSIONS
from audiodiff.utils.settings import number, text, whole

CaptionSource = Literal["sidecar", "captions.csv", "metadata.jsonl", "file name"]
CAPTIONS_CSV = "captions.csv"
METADATA_JSONL = "metadata.jsonl"
FILE_KEYS = ("file", "file_name", "filename", "audio", "path")
CAPTION_KEYS = ("caption", "text", "description", "prompt")
MIN_PEAK_DB = -60.0  # dBFS: a clip whose loudest sample is quieter than this is silent for training purposes


class FolderError(ValueError):
    """The folder cannot make a manifest: it does not exist, holds no audio, or no usable clip."""


@dataclass
class FolderManifest:
    """What :func:`folder_manifest` found.

    Attributes:
        rows: the manifest rows written, in path order.
        sources: how many rows took their captions from each source.
        skipped: ``(file, reason)`` for every audio file left out.
        unmatched: captions in ``captions.csv`` / ``metadata.jsonl`` naming no audio file found.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        splits = Counter(row["split"] for row in self.rows)
        lines = [f"rows: {len(self.rows)} ({', '.join(f'{n} {s}' for s, n in sorted(splits.items()))}), "
                 f"skipped: {len(self.skipped)}"]
        lines.append("captions: " + ", ".join(f"{n} from {_SOURCE_WORDS[s]}" for s, n in self.sources.items()))
        if self.sources.get("file name"):
            lines.append(f"note: {self.sources['file name']} clip(s) have no caption file and are captioned by their "
                         f"file names; add clip.txt beside clip.wav, or a {CAPTIONS_CSV}, for better captions")
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (" ..." if len(self.unmatched) > 5 else "")
            lines.append(f"{len(self.unmatched)} caption(s) name no audio file found: {shown}")
        return "\n".join(lines)


_SOURCE_WORDS = {"sidecar": "sidecar .txt files", "captions.csv": CAPTIONS_CSV, "metadata.jsonl": METADATA_JSONL,
                 "file name": "file names"}


def caption_from_name(path: Path) -> str:
    """A caption from a file name: ``dog_bark-03.wav`` → ``dog bark``; the bare stem when nothing else is left."""
    words = re.sub(r"[_\-.]+", " ", path.stem)
    words = re.sub(r"(\s*\(?\d+\)?)+$", "", words).strip()  # trailing take numbers: "bark 03", "bark (2)"
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", words)  # camelCase
    return " ".join(words.split()).lower() or path.stem


def _pick(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    return next((lowered[k] for k in keys if lowered.get(k) not in (None, "")), None)


def read_caption_table(folder: Path) -> tuple[dict[str, list[str]], CaptionSource | None]:
    """Captions by file path relative to `folder` (POSIX) from `captions.csv`, else `metadata.jsonl`; several rows
    for one file give it several captions. ({}, None) when neither file exists; FolderError for one without the
    needed columns."""
    table: dict[str, list[str]] = {}
    if (folder / CAPTIONS_CSV).is_file():
        source: CaptionSource = "captions.csv"
        with (folder / CAPTIONS_CSV).open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.DictReader(handle))
    elif (folder / METADATA_JSONL).is_file():
        source = "metadata.jsonl"
        records = []
        for number_, line in enumerate((folder / METADATA_JSONL).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise FolderError(f"{folder / METADATA_JSONL}:{number_}: not JSON ({err.msg})") from err
    else:
        return table, None
    for number_, record in enumerate(records, 1):
        name, caption = (_pick(record, FILE_KEYS), _pick(record, CAPTION_KEYS)) if isinstance(record, dict) else \
            (None, None)
        if name is None or caption is None:
            raise FolderError(f"{folder / source}: row {number_} has no file column ({'/'.join(FILE_KEYS)}) or no "
                              f"caption column ({'/'.join(CAPTION_KEYS)})")
        table.setdefault(Path(str(name)).as_posix().lstrip("./"), []).append(" ".join(str(caption).split()))
    return table, source


def _sidecar(path: Path) -> list[str]:
    sidecar = path.with_suffix(".txt")
    if not sidecar.is_file():
        return []
    return [" ".join(line.split()) for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_clip(path: Path, min_peak_db: float = MIN_PEAK_DB) -> tuple[str | None, float, int]:
    """(why the file is unusable or None, duration in s, sample rate in Hz), decoding it as training will."""
    try:
        wav, sample_rate, _ = load_audio_noted(path)
    except AudioError as error:
        return error.reason, 0.0, 0
    except Exception as error:  # a decoder's own exception: report it, as the validator does
        return f"unexpected {type(error).__name__} while reading: {error}", 0.0, 0
    peak = float(wav.abs().max())
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if peak_db < min_peak_db:
        return f"silent (peak {peak_db:.1f} dBFS, below min_peak_db={min_peak_db:g})", 0.0, 0
    return None, wav.shape[-1] / sample_rate, sample_rate


def assign_split(count: int, val_fraction: float, seed: int) -> list[str]:
    """"train" / "val" for `count` rows: the rows :func:`~audiodiff.data.manifest.held_out` chooses get "val"
    (the rule training applies to a manifest without splits)."""
    chosen = held_out(count, val_fraction, seed)
    return ["val" if i in chosen else "train" for i in range(count)]


def folder_manifest(folder: str | Path, out: str | Path, *, val_fraction: float = 0.1, seed: int = 0,
                    min_peak_db: float = MIN_PEAK_DB) -> FolderManifest:
    """Write the manifest of `folder`'s audio files to `out` (see the module docstring).

    Raises:
        FolderError: `folder` is not a folder, holds no audio file, or none of its files is usable (nothing is
            written then).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise FolderError(f"{folder}: no audio files found (looked for {', '.join(sorted(AUDIO_EXTENSIONS))}, "
                          f"in subfolders too)")
    table, table_source = read_caption_table(folder)
    result = FolderManifest()
    used: set[str] = set()
    for path in files:
        problem, duration, sample_rate = check_clip(path, min_peak_db)
        if problem is not None:
            result.skipped.append((str(path), problem))
            continue
        key = path.relative_to(folder).as_posix()
        captions, source = _sidecar(path), "sidecar"
        if not captions and key in table:
            captions, source = table[key], table_source
            used.add(key)
        if not captions:
            captions, source = [caption_from_name(path)], "file name"
        result.sources[source] += 1
        result.rows.append({"audio": path.absolute(), "caption": captions[0] if len(captions) == 1 else captions,
                            "duration": round(duration, 6), "sample_rate": sample_rate, "source": str(folder)})
    result.unmatched = sorted(set(table) - used - {p.relative_to(folder).as_posix() for p in files})
    if not result.rows:
        raise FolderError(f"{folder}: none of the {len(files)} audio files is usable:\n"
                          + "\n".join(f"  {path}: {reason}" for path, reason in result.skipped))
    for row, split in zip(result.rows, assign_split(len(result.rows), val_fraction, seed), strict=True):
        row["split"] = split
    write_manifest(out, result.rows)
    return result


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Write the manifest `cfg` (conf/folder.yaml) asks for and print its summary; FolderError or ValueError."""
    folder, out = text(cfg, "dir", required=True), text(cfg, "out", required=True)
    result = folder_manifest(folder, out, val_fraction=number(cfg, "val_fraction", minimum=0.0),
                             seed=whole(cfg, "seed", minimum=0), min_peak_db=number(cfg, "min_peak_db"))
    print(result.summary())
    print(f"wrote {out}")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.data.folder", "folder", main, __doc__)
