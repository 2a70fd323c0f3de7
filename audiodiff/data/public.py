"""Manifests for public captioned-audio corpora, from their own metadata files and audio you downloaded.

``python -m audiodiff.data.public name=NAME meta=PATH audio_dir=DIR out=MANIFEST [valid_subset=false]``

Nothing is downloaded here. ``meta`` is the corpus's metadata file (or the folder holding it) and
``audio_dir`` the folder of audio files; rows are written for the clips found on disk and the missing ones
are counted. Every row carries ``split``, ``license`` and ``source``; ``data/README.md`` says where each
corpus comes from, its licence and the file names expected.

=================== ========================================== ==============================================
corpus              metadata                                   splits
=================== ========================================== ==============================================
``audiocaps``       ``train.csv``, ``val.csv``, ``test.csv``   train / val / test (one row per YouTube clip)
``clotho``          ``clotho_captions_<split>.csv``            development → train, validation → val,
                                                               evaluation → test
``musiccaps``       ``musiccaps-public.csv``                   is_audioset_eval → test, others → train
``song_describer``  ``song_describer.csv``                     test (an evaluation-only corpus)
``esc50``           ``meta/esc50.csv``                         folds 1–3 → train, 4 → val, 5 → test
=================== ========================================== ==============================================
"""

from __future__ import annotations

import ast
import csv
import io
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiodiff.data.manifest import write_manifest
from audiodiff.utils.settings import flag, text

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".webm"}
)

YOUTUBE_AUDIO = "audio: YouTube (AudioSet), rights remain with the uploaders"
LICENSES = {
    "audiocaps": f"captions: MIT (AudioCaps; the authors ask for academic use only); {YOUTUBE_AUDIO}",
    "clotho": "captions: Tampere University licence (non-commercial, attribution); "
    "audio: Freesound, licence per file",
    "musiccaps": f"captions: CC BY-SA 4.0 (MusicCaps); {YOUTUBE_AUDIO}",
    "song_describer": "captions: CC BY-SA 4.0 (Song Describer); audio: per-track Creative Commons licence "
    "(MTG-Jamendo; see audio_licenses.txt)",
    "esc50": "CC BY-NC 3.0 (ESC-50; clips from Freesound)",
}


class PublicCorpusError(ValueError):
    """A corpus's metadata is missing or not laid out as expected."""


@dataclass
class BuildResult:
    """What a builder found.

    Attributes:
        corpus: corpus name.
        rows: manifest objects for the clips found on disk (``audio`` is an absolute Path).
        missing: ids of metadata entries whose audio is not on disk.
        notes: how files were matched and anything else worth telling the user.
    """

    corpus: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines: rows per split, missing count (with examples) and notes."""
        splits = Counter(row["split"] for row in self.rows)
        per_split = ", ".join(f"{name}: {count}" for name, count in sorted(splits.items())) or "none"
        missing = len(self.missing)
        lines = [f"{self.corpus}: {len(self.rows)} rows ({per_split}); {missing} audio files missing"]
        if self.missing:
            lines.append(f"  missing, e.g.: {', '.join(self.missing[:5])}")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


# -- shared helpers -----------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV with a header, checking that ``required`` columns are there (UTF-8, else Latin-1)."""
    if not path.is_file():
        got = "a folder" if path.exists() else "nothing"
        raise PublicCorpusError(f"{path}: expected a metadata CSV file, got {got}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # some corpora's older CSVs
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    header = list(reader.fieldnames or [])
    absent = [name for name in required if name not in header]
    if absent:
        raise PublicCorpusError(f"{path}: expected columns {list(required)}, missing {absent}; got {header}")
    return rows


def _find_meta(meta: Path, names: Sequence[str]) -> Path:
    """``meta`` itself when it is a file, else the first of ``names`` inside the folder ``meta``."""
    if meta.is_file():
        return meta
    for name in names:
        if (meta / name).is_file():
            return meta / name
    raise PublicCorpusError(f"{meta}: expected a metadata file or a folder holding one of {list(names)}")


class AudioIndex:
    """Every audio file under a folder, found by file name or by stem (name without the audio extension)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            got = "a file" if root.exists() else "nothing"
            raise PublicCorpusError(f"{root}: expected the folder of downloaded audio files, got {got}")
        self.root = root
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for folder, _dirs, files in os.walk(root):
            for name in sorted(files):
                path = Path(folder) / name
                suffix = path.suffix.lower()
                if suffix not in AUDIO_EXTENSIONS:
                    continue
                self.by_name[name].append(path)
                stem = name[: -len(suffix)]
                self.by_stem[stem].append(path)
                if stem.endswith(".2min"):  # Song Describer's excerpts: <track_id>.2min.mp3
                    self.by_stem[stem[: -len(".2min")]].append(path)

    def name(self, name: str) -> Path | None:
        """The file called ``name`` (first in path order when several folders hold one)."""
        found = self.by_name.get(name)
        return sorted(found)[0] if found else None

    def stem(self, stem: str) -> Path | None:
        """A file whose name is ``stem`` plus an audio extension."""
        found = self.by_stem.get(stem)
        return sorted(found)[0] if found else None


def _split_files(meta: Path, names: Sequence[str]) -> list[Path]:
    """``[meta]`` when it is a file, else those of ``names`` present in the folder ``meta`` (at least one)."""
    if meta.is_file():
        return [meta]
    files = [meta / name for name in names if (meta / name).is_file()]
    if not files:
        raise PublicCorpusError(f"{meta}: expected a metadata file or a folder holding some of {list(names)}")
    return files


def _first_file(paths: Iterable[Path]) -> Path | None:
    return next((path for path in paths if path.is_file()), None)


def _captions(values: Iterable[str | None]) -> list[str]:
    return [text for text in (" ".join((v or "").split()) for v in values) if text]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def _number(value: str) -> int | float | str:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


# -- AudioCaps ----------------------------------------------------------------------------------------------

AUDIOCAPS_SPLITS = {"train": "train", "val": "val", "test": "test"}


def build_audiocaps(meta: Path, audio_dir: Path) -> BuildResult:
    """AudioCaps (Kim et al., 2019): ``audiocap_id,youtube_id,start_time,caption`` per caption.

    ``meta`` is the folder of ``train.csv`` / ``val.csv`` / ``test.csv`` (or one of them). The captions of a
    YouTube clip (five in val/test) become one row. Audio files may be named by ``youtube_id`` (also with
    AudioSet's ``Y`` prefix) or by any of the clip's ``audiocap_id``; the summary says which matched.
    """
    files = _split_files(meta, [f"{name}.csv" for name in AUDIOCAPS_SPLITS])
    index = AudioIndex(audio_dir)
    result = BuildResult("audiocaps")
    matched: Counter[str] = Counter()
    for csv_path in files:
        split = AUDIOCAPS_SPLITS.get(csv_path.stem, csv_path.stem)
        clips: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        for row in _read_csv(csv_path, ["audiocap_id", "youtube_id", "start_time", "caption"]):
            clips[(row["youtube_id"].strip(), row["start_time"].strip())].append(row)
        for (youtube_id, start), entries in clips.items():
            ids = [entry["audiocap_id"].strip() for entry in entries]
            candidates = [(youtube_id, "youtube_id"), (f"Y{youtube_id}", "youtube_id")]
            candidates += [(audiocap_id, "audiocap_id") for audiocap_id in ids]
            found = next(((index.stem(stem), how) for stem, how in candidates if index.stem(stem)), None)
            if found is None:
                result.missing.append(f"{split}/{youtube_id}")
                continue
            path, how = found
            matched[how] += 1
            result.rows.append({
                "audio": path,
                "caption": _captions(entry["caption"] for entry in entries),
                "split": split,
                "license": LICENSES["audiocaps"],
                "source": f"AudioCaps; https://www.youtube.com/watch?v={youtube_id}&t={_number(start)}",
                "attributes": {"youtube_id": youtube_id, "start_time": _number(start), "audiocap_ids": ids},
            })
    by_youtube, by_audiocap = matched["youtube_id"], matched["audiocap_id"]
    result.notes.append(f"audio matched by youtube_id: {by_youtube}, by audiocap_id: {by_audiocap}")
    return result


# -- Clotho -------------------------------------------------------------------------------------------------

CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}


def build_clotho(meta: Path, audio_dir: Path) -> BuildResult:
    """Clotho v2 (Drossos et al., 2020): ``file_name,caption_1..caption_5`` per clip.

    ``meta`` is the folder of ``clotho_captions_<development|validation|evaluation>.csv`` (or one of them).
    Audio is looked up as ``<audio-dir>/<split>/<file_name>``, then ``<audio-dir>/<file_name>``, then anywhere
    below ``audio-dir``. When ``clotho_metadata_<split>.csv`` lies beside the captions, each row gets its
    file's own Freesound licence, link and keywords.
    """
    files = _split_files(meta, [f"clotho_captions_{name}.csv" for name in CLOTHO_SPLITS])
    index = AudioIndex(audio_dir)
    result = BuildResult("clotho")
    for csv_path in files:
        clotho_split = csv_path.stem.removeprefix("clotho_captions_")
        split = CLOTHO_SPLITS.get(clotho_split, clotho_split)
        metadata = _clotho_metadata(csv_path.with_name(f"clotho_metadata_{clotho_split}.csv"))
        if not metadata:
            note = f"{csv_path.name}: no clotho_metadata_{clotho_split}.csv beside it, so no per-file licence"
            result.notes.append(note)
        for row in _read_csv(csv_path, ["file_name"] + [f"caption_{i}" for i in range(1, 6)]):
            name = row["file_name"].strip()
            path = _first_file([audio_dir / clotho_split / name, audio_dir / name]) or index.name(name)
            if path is None:
                result.missing.append(f"{clotho_split}/{name}")
                continue
            info = metadata.get(name, {})
            licence = LICENSES["clotho"]
            if info.get("license"):
                licence = f"{licence}: {info['license'].strip()}"
            attributes: dict[str, Any] = {"file_name": name}
            if info.get("keywords"):
                attributes["keywords"] = [k.strip() for k in info["keywords"].split(";") if k.strip()]
            if info.get("sound_id"):
                attributes["sound_id"] = _number(info["sound_id"])
            result.rows.append({
                "audio": path,
                "caption": _captions(row[f"caption_{i}"] for i in range(1, 6)),
                "split": split,
                "license": licence,
                "source": f"Clotho v2; {info.get('sound_link', '').strip() or 'Freesound'}",
                "attributes": attributes,
            })
    return result


def _clotho_metadata(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    return {row["file_name"].strip(): row for row in _read_csv(path, ["file_name", "license"])}


# -- MusicCaps ----------------------------------------------------------------------------------------------

MUSICCAPS_COLUMNS = [
    "ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
    "is_balanced_subset", "is_audioset_eval",
]


def _aspects(text: str) -> list[str]:
    """MusicCaps's ``aspect_list`` is a Python list literal such as ``"['low quality', 'mellow piano']"``."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [part.strip(" '\"") for part in text.strip("[]").split(",") if part.strip(" '\"")]
    return [str(item) for item in value] if isinstance(value, list | tuple) else [str(value)]


def build_musiccaps(meta: Path, audio_dir: Path) -> BuildResult:
    """MusicCaps (Agostinelli et al., 2023): one caption per 10 s YouTube excerpt in ``musiccaps-public.csv``.

    Audio files must be the excerpts (``start_s`` to ``end_s``), named by ``ytid`` (also ``Y<ytid>``).
    ``is_audioset_eval`` rows form the test split, the rest train.
    """
    csv_path = _find_meta(meta, ["musiccaps-public.csv"])
    index = AudioIndex(audio_dir)
    result = BuildResult("musiccaps")
    for row in _read_csv(csv_path, MUSICCAPS_COLUMNS):
        ytid = row["ytid"].strip()
        path = index.stem(ytid) or index.stem(f"Y{ytid}")
        if path is None:
            result.missing.append(ytid)
            continue
        captions = _captions([row["caption"]])
        if not captions:
            result.notes.append(f"{ytid}: empty caption, skipped")
            continue
        start, end = _number(row["start_s"]), _number(row["end_s"])
        result.rows.append({
            "audio": path,
            "caption": captions,
            "split": "test" if _truthy(row["is_audioset_eval"]) else "train",
            "license": LICENSES["musiccaps"],
            "source": f"MusicCaps; https://www.youtube.com/watch?v={ytid}&t={start}",
            "attributes": {
                "ytid": ytid,
                "start_s": start,
                "end_s": end,
                "aspects": _aspects(row["aspect_list"]),
                "audioset_labels": [label for label in row["audioset_positive_labels"].split(",") if label],
                "author_id": _number(row["author_id"]),
                "is_balanced_subset": _truthy(row["is_balanced_subset"]),
            },
        })
    return result


# -- Song Describer -----------------------------------------------------------------------------------------


def build_song_describer(meta: Path, audio_dir: Path, *, valid_subset: bool = False) -> BuildResult:
    """Song Describer (Manco et al., 2023): captions of MTG-Jamendo tracks in ``song_describer.csv``.

    The captions of a track become one row (split ``test``); ``valid_subset`` keeps only the captions of the
    validated subset. The CSV's ``path`` (``34/1004034.mp3``) names the full track; the released audio is
    the two-minute excerpt ``audio/34/1004034.2min.mp3``. ``audio_dir`` may be ``audio/`` or its parent;
    files are also found anywhere below it as ``<track_id>.2min.<ext>`` or ``<track_id>.<ext>``.
    """
    csv_path = _find_meta(meta, ["song_describer.csv"])
    index = AudioIndex(audio_dir)
    result = BuildResult("song_describer")
    tracks: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _read_csv(csv_path, ["caption_id", "track_id", "caption", "is_valid_subset", "path"]):
        if not valid_subset or _truthy(row["is_valid_subset"]):
            tracks[row["track_id"].strip()].append(row)
    for track_id, entries in tracks.items():
        path = _song_describer_audio(audio_dir, entries[0]["path"].strip())
        path = path or index.stem(f"{track_id}.2min") or index.stem(track_id)
        if path is None:
            result.missing.append(track_id)
            continue
        first = entries[0]
        result.rows.append({
            "audio": path,
            "caption": _captions(entry["caption"] for entry in entries),
            "split": "test",
            "license": LICENSES["song_describer"],
            "source": f"Song Describer; https://www.jamendo.com/track/{track_id}",
            "attributes": {
                "track_id": _number(track_id),
                "caption_ids": [_number(entry["caption_id"]) for entry in entries],
                "artist_id": _number(first.get("artist_id") or ""),
                "album_id": _number(first.get("album_id") or ""),
                "valid_subset": [_truthy(entry["is_valid_subset"]) for entry in entries],
            },
        })
    if valid_subset:
        result.notes.append("kept only captions of the validated subset (is_valid_subset)")
    return result


def _song_describer_audio(audio_dir: Path, relative: str) -> Path | None:
    """``34/1004034.mp3`` → ``<audio_dir>[/audio]/34/1004034.2min.mp3`` (or the full track), if present."""
    if not relative:
        return None
    suffix = Path(relative).suffix
    excerpt = relative[: -len(suffix)] + ".2min" + suffix if suffix else relative
    return _first_file(audio_dir / base / name for base in ("", "audio") for name in (excerpt, relative))


# -- ESC-50 -------------------------------------------------------------------------------------------------

# What each ESC-50 class sounds like, as a caption phrase.
ESC50_PHRASES = {
    "dog": "a dog barking", "rooster": "a rooster crowing", "pig": "a pig grunting", "cow": "a cow mooing",
    "frog": "a frog croaking", "cat": "a cat meowing", "hen": "a hen clucking", "insects": "insects buzzing",
    "sheep": "a sheep bleating", "crow": "a crow cawing", "rain": "rain falling",
    "sea_waves": "sea waves crashing",
    "crackling_fire": "a fire crackling", "crickets": "crickets chirping", "chirping_birds": "birds chirping",
    "water_drops": "water dripping", "wind": "wind blowing", "pouring_water": "water being poured",
    "toilet_flush": "a toilet flushing", "thunderstorm": "a thunderstorm", "crying_baby": "a baby crying",
    "sneezing": "a person sneezing", "clapping": "people clapping", "breathing": "a person breathing",
    "coughing": "a person coughing", "footsteps": "footsteps", "laughing": "a person laughing",
    "brushing_teeth": "someone brushing their teeth", "snoring": "a person snoring",
    "drinking_sipping": "someone drinking and sipping", "door_wood_knock": "knocking on a wooden door",
    "mouse_click": "a computer mouse clicking", "keyboard_typing": "typing on a keyboard",
    "door_wood_creaks": "a wooden door creaking", "can_opening": "a can being opened",
    "washing_machine": "a washing machine running", "vacuum_cleaner": "a vacuum cleaner running",
    "clock_alarm": "an alarm clock ringing", "clock_tick": "a clock ticking",
    "glass_breaking": "glass breaking",
    "helicopter": "a helicopter flying", "chainsaw": "a chainsaw cutting", "siren": "a siren wailing",
    "car_horn": "a car horn honking", "engine": "an engine running", "train": "a train passing",
    "church_bells": "church bells ringing", "airplane": "an airplane flying overhead",
    "fireworks": "fireworks exploding", "hand_saw": "a hand saw cutting wood",
}
ESC50_TEMPLATES = ("{}", "the sound of {}", "a recording of {}")
ESC50_FOLD_SPLITS = {1: "train", 2: "train", 3: "train", 4: "val", 5: "test"}


def esc50_captions(category: str) -> list[str]:
    """Captions of an ESC-50 class: ``"dog"`` → ``["a dog barking", "the sound of a dog barking", ...]``."""
    phrase = ESC50_PHRASES.get(category, category.replace("_", " "))
    return [template.format(phrase) for template in ESC50_TEMPLATES]


def build_esc50(meta: Path, audio_dir: Path) -> BuildResult:
    """ESC-50 (Piczak, 2015): 2,000 five-second clips in 50 classes, ``meta/esc50.csv``.

    Captions come from the class name through :data:`ESC50_PHRASES` and :data:`ESC50_TEMPLATES`. Folds 1–3
    are train, 4 val, 5 test (the fold is kept in ``attributes`` for cross-validation). Audio is
    ``<audio-dir>/<filename>`` or ``<audio-dir>/audio/<filename>``.
    """
    csv_path = _find_meta(meta, ["esc50.csv", "meta/esc50.csv"])
    index = AudioIndex(audio_dir)
    result = BuildResult("esc50")
    unknown: set[str] = set()
    for row in _read_csv(csv_path, ["filename", "fold", "target", "category", "esc10", "src_file", "take"]):
        name, category = row["filename"].strip(), row["category"].strip()
        fold = row["fold"].strip()
        if fold not in {str(k) for k in ESC50_FOLD_SPLITS}:
            raise PublicCorpusError(f"{csv_path}: {name}: field 'fold': expected 1-5, got {fold!r}")
        path = _first_file([audio_dir / name, audio_dir / "audio" / name]) or index.name(name)
        if path is None:
            result.missing.append(name)
            continue
        if category not in ESC50_PHRASES:
            unknown.add(category)
        result.rows.append({
            "audio": path,
            "caption": esc50_captions(category),
            "split": ESC50_FOLD_SPLITS[int(fold)],
            "license": LICENSES["esc50"],
            "source": f"ESC-50; https://freesound.org/s/{row['src_file'].strip()}/",
            "attributes": {
                "category": category,
                "target": _number(row["target"]),
                "fold": int(fold),
                "esc10": _truthy(row["esc10"]),
                "take": row["take"].strip(),
            },
        })
    if unknown:
        result.notes.append(f"classes without a caption phrase (their name is used): {sorted(unknown)}")
    return result


# -- registry and CLI ---------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., BuildResult]] = {
    "audiocaps": build_audiocaps,
    "clotho": build_clotho,
    "musiccaps": build_musiccaps,
    "song_describer": build_song_describer,
    "esc50": build_esc50,
}


def build_manifest(
    name: str, meta: str | Path, audio_dir: str | Path, out: str | Path, **options: Any
) -> BuildResult:
    """Build corpus ``name``'s manifest at ``out`` (paths relative to its folder) and return what was found.

    Raises:
        PublicCorpusError: unknown corpus, missing metadata or columns, no audio folder, or no audio found.
    """
    if name not in BUILDERS:
        raise PublicCorpusError(f"unknown corpus {name!r}; expected one of {sorted(BUILDERS)}")
    result = BUILDERS[name](Path(meta), Path(audio_dir), **options)
    if not result.rows:
        raise PublicCorpusError(
            f"{name}: none of the {len(result.missing)} clips in the metadata were found under {audio_dir}; "
            "see data/README.md for the file names expected"
        )
    write_manifest(out, result.rows)
    return result


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Write the manifest `cfg` (conf/public.yaml) asks for and print what was found. PublicCorpusError (a
    ValueError) when nothing usable is found, ValueError for a bad setting."""
    name = text(cfg, "name", required=True)
    options = {}
    if flag(cfg, "valid_subset"):
        if name != "song_describer":
            raise ValueError(f"valid_subset=true applies to song_describer only, got name={name}")
        options["valid_subset"] = True
    out = text(cfg, "out", required=True)
    result = build_manifest(name, text(cfg, "meta", required=True), text(cfg, "audio_dir", required=True), out,
                            **options)
    print(result.summary())
    print(f"wrote {out}")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.data.public", "public", main, __doc__)
