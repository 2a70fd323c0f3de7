"""Manifest builders for public corpora, on small metadata fixtures in the real column layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff import cli
from audiodiff.data import public
from audiodiff.data.manifest import read_manifest
from audiodiff.data.public import (
    ESC50_PHRASES,
    LICENSES,
    PublicCorpusError,
    build_audiocaps,
    build_clotho,
    build_esc50,
    build_manifest,
    build_musiccaps,
    build_song_describer,
    esc50_captions,
)
from audiodiff.data.validate import validate_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "public"


def main(argv: list[str]) -> int:
    """`python -m audiodiff.data.public ARGV...`, run in this process; returns the exit status."""
    return cli.run("audiodiff.data.public", "public", public.main, public.__doc__, argv)


def _clip(path: Path, fmt: str | None = None) -> Path:
    """A 0.1 s 8 kHz tone (WAV, or MP3 when ``fmt="MP3"``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(800) / 8000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000, format=fmt or "WAV")
    return path


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["split"], []).append(row)
    return out


def test_audiocaps_matches_youtube_ids_and_audiocap_ids(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    _clip(audio / "train" / "r1nicOVtvkQ.wav")
    _clip(audio / "train" / "YUDGBjjwyaqE.wav")  # AudioSet's Y prefix
    _clip(audio / "val" / "97153.wav")  # named by one of the clip's audiocap_ids
    result = build_audiocaps(FIXTURES / "audiocaps", audio)
    splits = _by_split(result.rows)
    assert sorted(splits) == ["train", "val"]
    assert [r["attributes"]["youtube_id"] for r in splits["train"]] == ["r1nicOVtvkQ", "UDGBjjwyaqE"]
    val = splits["val"][0]
    assert val["audio"] == audio / "val" / "97153.wav"
    assert val["caption"][0] == "A large crowd cheers and applauds" and len(val["caption"]) == 5
    assert val["attributes"] == {"youtube_id": "rqfQRErjfk8", "start_time": 170,
                                 "audiocap_ids": ["97151", "97152", "97153", "97154", "97155"]}
    assert val["source"] == "AudioCaps; https://www.youtube.com/watch?v=rqfQRErjfk8&t=170"
    assert all(r["license"] == LICENSES["audiocaps"] for r in result.rows)
    assert result.missing == ["train/JXpBx-DCpjY", "test/-8r29EqhTKs"]
    assert "audio matched by youtube_id: 2, by audiocap_id: 1" in result.notes
    summary = result.summary()
    assert summary.startswith("audiocaps: 3 rows (train: 2, val: 1); 2 audio files missing")
    # One CSV on its own works too; its stem is the split.
    only_val = build_audiocaps(FIXTURES / "audiocaps" / "val.csv", audio)
    assert [r["split"] for r in only_val.rows] == ["val"] and only_val.missing == []


def test_clotho_maps_splits_and_per_file_licences(tmp_path: Path) -> None:
    audio = tmp_path / "clotho_audio"
    _clip(audio / "development" / "Distorted AM Radio noise.wav")
    _clip(audio / "development" / "Paper_Parchment_Rustling.wav")
    _clip(audio / "birds in the park.wav")  # flat layout for the evaluation split
    result = build_clotho(FIXTURES / "clotho", audio)
    splits = _by_split(result.rows)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "test": 1}
    radio = splits["train"][0]
    assert radio["caption"][0] == "A muddled noise of broken channel of the TV" and len(radio["caption"]) == 5
    assert radio["license"].endswith(": http://creativecommons.org/publicdomain/zero/1.0/")
    assert radio["source"] == "Clotho v2; https://freesound.org/people/qubodup/sounds/250365"
    assert radio["attributes"] == {"file_name": "Distorted AM Radio noise.wav", "sound_id": 250365,
                                   "keywords": ["noise", "radio", "static", "am", "distorted"]}
    assert splits["train"][1]["caption"][2] == "A person is very carefully wrapping a gift, for someone else."
    evaluation = splits["test"][0]
    assert evaluation["license"] == LICENSES["clotho"] and evaluation["source"] == "Clotho v2; Freesound"
    assert result.missing == ["validation/Rain on a tin roof.wav"]
    assert any("clotho_metadata_evaluation.csv" in note for note in result.notes)


def test_musiccaps_splits_by_audioset_eval_and_parses_aspects(tmp_path: Path) -> None:
    audio = tmp_path / "mc"
    _clip(audio / "-0Gj8-vB1q4.wav")
    _clip(audio / "Y-0SdAVK79lg.wav")
    result = build_musiccaps(FIXTURES / "musiccaps", audio)
    assert result.missing == ["-0vPFx-wRRI"]
    first, second = result.rows
    assert (first["split"], second["split"]) == ("test", "train")
    assert first["caption"][0].startswith("The low quality recording features a ballad song")
    assert first["attributes"]["aspects"][:2] == ["low quality", "sustained strings melody"]
    assert first["attributes"]["audioset_labels"] == ["/m/0140xf", "/m/02cjck", "/m/04rlf"]
    assert (first["attributes"]["start_s"], first["attributes"]["end_s"]) == (30, 40)
    assert first["attributes"]["author_id"] == 4 and first["attributes"]["is_balanced_subset"] is False
    assert first["license"] == LICENSES["musiccaps"] and "CC BY-SA 4.0" in first["license"]
    assert first["source"] == "MusicCaps; https://www.youtube.com/watch?v=-0Gj8-vB1q4&t=30"


def test_song_describer_groups_captions_per_track_and_finds_excerpts(tmp_path: Path) -> None:
    root = tmp_path / "sdd"
    _clip(root / "audio" / "34" / "1004034.2min.mp3", fmt="MP3")  # the released layout
    _clip(root / "elsewhere" / "1007274.wav")  # found by track id anywhere below
    result = build_song_describer(FIXTURES / "song_describer" / "song_describer.csv", root)
    assert result.missing == ["1051200"]
    first, second = result.rows
    assert first["audio"] == root / "audio" / "34" / "1004034.2min.mp3"
    assert first["caption"] == [
        "An electronic tune with a steady beat and bright synth pads, good for a late night drive.",
        "Upbeat electronic music with arpeggios",
    ]
    assert first["attributes"] == {"track_id": 1004034, "caption_ids": [859, 860], "artist_id": 368880,
                                   "album_id": 118196, "valid_subset": [True, False]}
    assert first["split"] == "test" and first["source"] == "Song Describer; https://www.jamendo.com/track/1004034"
    assert second["audio"] == root / "elsewhere" / "1007274.wav"
    # Pointing at audio/ itself works, and --valid-subset drops unvalidated captions.
    valid = build_song_describer(FIXTURES / "song_describer", root / "audio", valid_subset=True)
    assert [r["caption"] for r in valid.rows] == [[first["caption"][0]]]


def test_esc50_captions_splits_and_attributes(tmp_path: Path) -> None:
    audio = tmp_path / "ESC-50-master" / "audio"
    for name in ["1-100032-A-0.wav", "1-100038-A-14.wav", "4-181286-A-10.wav", "5-200334-A-1.wav"]:
        _clip(audio / name)
    result = build_esc50(FIXTURES / "esc50", audio.parent)  # the dataset root: audio/ is looked into
    assert result.missing == ["2-102414-C-17.wav", "5-9032-A-0.wav"]
    assert [r["split"] for r in result.rows] == ["train", "train", "val", "test"]
    dog = result.rows[0]
    assert dog["caption"] == ["a dog barking", "the sound of a dog barking", "a recording of a dog barking"]
    assert dog["attributes"] == {"category": "dog", "target": 0, "fold": 1, "esc10": True, "take": "A"}
    assert dog["license"] == "CC BY-NC 3.0 (ESC-50; clips from Freesound)"
    assert dog["source"] == "ESC-50; https://freesound.org/s/100032/"
    assert result.rows[1]["caption"][0] == "birds chirping"
    assert len(ESC50_PHRASES) == 50 and esc50_captions("new_class")[0] == "new class"


def test_cli_writes_a_manifest_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "esc" / "audio"
    for name in ["1-100032-A-0.wav", "5-200334-A-1.wav"]:
        _clip(audio / name)
    out = tmp_path / "manifests" / "esc50.jsonl"
    code = main(["name=esc50", f"meta={FIXTURES / 'esc50' / 'meta' / 'esc50.csv'}", f"audio_dir={audio}",
                 f"out={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "esc50: 2 rows (test: 1, train: 1); 4 audio files missing" in printed
    rows = read_manifest(out)
    assert [r.audio for r in rows] == [audio / "1-100032-A-0.wav", audio / "5-200334-A-1.wav"]
    assert '"audio": "../esc/audio/1-100032-A-0.wav"' in out.read_text()
    report = validate_manifest(out)
    assert (report.rows, report.ok) == (2, 2)


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    # No audio at all: exit status 1 and a message naming the folder.
    assert main(["name=musiccaps", f"meta={FIXTURES / 'musiccaps'}", f"audio_dir={audio}",
                 f"out={tmp_path / 'm.jsonl'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: musiccaps: ") and len(err.splitlines()) == 1
    assert f"none of the 3 clips in the metadata were found under {audio}" in err
    assert not (tmp_path / "m.jsonl").exists()
    # Wrong columns name the file, the expected and the missing columns.
    bad = tmp_path / "musiccaps-public.csv"
    bad.write_text("ytid,caption\nabc,hello\n")
    with pytest.raises(PublicCorpusError, match=r"public.csv: expected columns \['ytid', 'start_s'"):
        build_musiccaps(bad, audio)
    with pytest.raises(PublicCorpusError, match="expected the folder of downloaded audio files, got nothing"):
        build_esc50(FIXTURES / "esc50", tmp_path / "absent")
    with pytest.raises(PublicCorpusError, match=r"expected a metadata file or a folder holding some of"):
        build_clotho(tmp_path, audio)
    with pytest.raises(PublicCorpusError, match="unknown corpus 'wavcaps'"):
        build_manifest("wavcaps", tmp_path, audio, tmp_path / "x.jsonl")
    folds = tmp_path / "esc50.csv"
    text = (FIXTURES / "esc50" / "meta" / "esc50.csv").read_text()
    text = text.replace("4-181286-A-10.wav,4,", "4-181286-A-10.wav,6,")
    folds.write_text(text)
    with pytest.raises(PublicCorpusError, match=r"4-181286-A-10.wav: field 'fold': expected 1-5, got '6'"):
        build_esc50(folds, audio)
    assert main(["name=esc50", "meta=m", "audio_dir=a", "out=o", "valid_subset=true"]) == 1
    assert capsys.readouterr().err == "error: valid_subset=true applies to song_describer only, got name=esc50\n"


def test_cli_help_prints_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.data.public [key=value ...]" in out
    for setting in ("name: ???", "meta: ???", "audio_dir: ???", "out: ???", "valid_subset: false"):
        assert setting in out


@pytest.mark.parametrize(("argv", "message"), [
    (["name=wavcaps"], "error: unknown corpus 'wavcaps'; expected one of ['audiocaps', 'clotho', 'esc50',"),
    (["name=esc50", "valid_subset=maybe"], "error: valid_subset: expected true or false, got 'maybe'"),
    (["name=esc50", "--meta"], "error: unknown option(s) ['--meta']"),
])
def test_cli_bad_settings_end_in_one_error_line(tmp_path: Path, argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    paths = [f"meta={FIXTURES / 'esc50'}", f"audio_dir={tmp_path}", f"out={tmp_path / 'm.jsonl'}"]
    assert main([*argv, *paths]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert main(["name=esc50", f"meta={FIXTURES / 'esc50'}"]) == 1
    assert capsys.readouterr().err == "error: required setting(s) not given: audio_dir=..., out=...\n"


def test_latin1_metadata_is_read(tmp_path: Path) -> None:
    meta = tmp_path / "clotho_captions_evaluation.csv"
    text = (FIXTURES / "clotho" / "clotho_captions_evaluation.csv").read_text()
    meta.write_bytes(text.replace("Birds chirp in a park", "Birds chirp in a caf\u00e9").encode("latin-1"))
    _clip(tmp_path / "audio" / "evaluation" / "birds in the park.wav")
    shutil.copy(FIXTURES / "clotho" / "clotho_captions_validation.csv", tmp_path)
    result = build_clotho(tmp_path, tmp_path / "audio")
    assert result.rows[0]["caption"][0] == "Birds chirp in a caf\u00e9"
    assert result.missing == ["validation/Rain on a tin roof.wav"]
