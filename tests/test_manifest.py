"""Manifest schema, reading/writing, and the ``audiodiff.data.validate`` CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff import cli
from audiodiff.data import validate
from audiodiff.data.manifest import (
    ManifestError,
    ManifestRow,
    iter_manifest_problems,
    iter_rows,
    read_manifest,
    write_manifest,
)
from audiodiff.data.validate import DURATION_TOLERANCE, validate_manifest


def main(argv: list[str]) -> int:
    """`python -m audiodiff.data.validate ARGV...`, run in this process; returns the exit status."""
    return cli.run("audiodiff.data.validate", "validate", validate.main, validate.__doc__, argv)


SR = 8000


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _tone(path: Path, seconds: float = 0.5, sample_rate: int = SR, channels: int = 1) -> Path:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    sf.write(path, np.stack([wave] * channels, axis=1), sample_rate, subtype="PCM_16")
    return path


# -- schema -------------------------------------------------------------------------------------------------


def test_read_manifest_parses_every_field_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    manifest = _write_lines(
        tmp_path / "sub" / "m.jsonl",
        [
            json.dumps({"audio": "a.wav", "caption": "a dog barks", "duration": 1.5, "sample_rate": 16000,
                        "split": "train", "license": "CC0", "source": "test", "attributes": {"kind": "dog"},
                        "annotator": 7}),
            "",
            "   ",
            json.dumps({"audio": "/abs/b.flac", "caption": ["rain", "rain on a roof"], "split": "val"}),
            json.dumps({"audio": "../c.wav", "caption": "c", "duration": 2}),
        ],
    )
    rows = read_manifest(manifest)
    assert [r.line for r in rows] == [1, 4, 5]
    first = rows[0]
    assert first.audio == tmp_path.absolute() / "sub" / "a.wav"
    assert first.captions == ("a dog barks",) and first.caption == "a dog barks"
    assert (first.duration, first.sample_rate, first.split) == (1.5, 16000, "train")
    assert (first.license, first.source, first.attributes) == ("CC0", "test", {"kind": "dog"})
    assert first.extra == {"annotator": 7}
    assert rows[1].audio == Path("/abs/b.flac") and rows[1].captions == ("rain", "rain on a roof")
    assert rows[1].attributes == {} and rows[1].duration is None
    assert rows[2].audio == tmp_path.absolute() / "c.wav"
    assert isinstance(rows[2].duration, float)
    assert [r.line for r in read_manifest(manifest, split="val")] == [4]
    assert read_manifest(manifest, split="test") == []


BAD_ROWS = [
    ({"caption": "x"}, "audio", "key missing"),
    ({"audio": 3, "caption": "x"}, "audio", "got int 3"),
    ({"audio": "", "caption": "x"}, "audio", "got string ''"),
    ({"audio": "a.wav"}, "caption", "key missing"),
    ({"audio": "a.wav", "caption": ""}, "caption", "got string ''"),
    ({"audio": "a.wav", "caption": "   "}, "caption", "got string '   '"),
    ({"audio": "a.wav", "caption": []}, "caption", "an empty list"),
    ({"audio": "a.wav", "caption": ["ok", ""]}, "caption[1]", "got string ''"),
    ({"audio": "a.wav", "caption": ["ok", 5]}, "caption[1]", "got int 5"),
    ({"audio": "a.wav", "caption": {"en": "x"}}, "caption", "got object"),
    ({"audio": "a.wav", "caption": "x", "duration": 0}, "duration", "got int 0"),
    ({"audio": "a.wav", "caption": "x", "duration": -1.5}, "duration", "got float -1.5"),
    ({"audio": "a.wav", "caption": "x", "duration": "3s"}, "duration", "got string '3s'"),
    ({"audio": "a.wav", "caption": "x", "duration": True}, "duration", "got boolean True"),
    ({"audio": "a.wav", "caption": "x", "sample_rate": 16000.0}, "sample_rate", "got float 16000.0"),
    ({"audio": "a.wav", "caption": "x", "sample_rate": 0}, "sample_rate", "got int 0"),
    ({"audio": "a.wav", "caption": "x", "sample_rate": True}, "sample_rate", "got boolean True"),
    ({"audio": "a.wav", "caption": "x", "split": 1}, "split", "got int 1"),
    ({"audio": "a.wav", "caption": "x", "license": None}, "license", "got null None"),
    ({"audio": "a.wav", "caption": "x", "source": ["a"]}, "source", "got array"),
    ({"audio": "a.wav", "caption": "x", "attributes": [1, 2]}, "attributes", "got array"),
]


@pytest.mark.parametrize(("row", "field", "got"), BAD_ROWS)
def test_each_bad_field_is_named_with_line_and_expected_vs_got(tmp_path: Path, row: dict, field: str,
                                                               got: str) -> None:
    good = json.dumps({"audio": "ok.wav", "caption": "fine"})
    manifest = _write_lines(tmp_path / "m.jsonl", [good, "", json.dumps(row)])
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    error = info.value
    assert (error.path, error.line, error.field) == (str(manifest), 3, field)
    message = str(error)
    assert message.startswith(f"{manifest}:3: field {field!r}: expected ")
    assert got in message


def test_non_finite_duration_is_rejected(tmp_path: Path) -> None:
    manifest = _write_lines(tmp_path / "m.jsonl", ['{"audio": "a.wav", "caption": "x", "duration": NaN}'])
    with pytest.raises(ManifestError, match=r"m.jsonl:1: field 'duration': expected a finite number"):
        read_manifest(manifest)


def test_invalid_json_and_non_objects_name_their_line(tmp_path: Path) -> None:
    lines = ['{"audio": "a.wav", "caption": "x"}', '{"audio": "a.wav",']
    manifest = _write_lines(tmp_path / "m.jsonl", lines)
    with pytest.raises(ManifestError, match=r"m.jsonl:2: expected valid JSON, got invalid JSON \("):
        read_manifest(manifest)
    manifest = _write_lines(tmp_path / "n.jsonl", ['["a.wav", "x"]'])
    with pytest.raises(ManifestError, match=r"n.jsonl:1: expected a JSON object, got array"):
        read_manifest(manifest)


def test_missing_manifest_raises_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="expected an existing manifest file, got no such file"):
        read_manifest(tmp_path / "absent.jsonl")


def test_iter_manifest_problems_reports_every_bad_row_with_all_fields(tmp_path: Path) -> None:
    manifest = _write_lines(
        tmp_path / "m.jsonl",
        [
            json.dumps({"audio": "a.wav", "caption": "ok"}),
            json.dumps({"audio": 1, "caption": "", "sample_rate": -3}),
            "not json",
            "",
            json.dumps({"audio": "b.wav", "caption": "ok", "duration": 1}),
            json.dumps({"audio": "c.wav", "caption": ["x", ""]}),
        ],
    )
    problems = dict(iter_manifest_problems(manifest))
    assert sorted(problems) == [2, 3, 6]
    assert "field 'audio'" in problems[2] and "field 'caption'" in problems[2]
    assert "field 'sample_rate'" in problems[2]
    assert "invalid JSON" in problems[3]
    assert "field 'caption[1]'" in problems[6]
    rows = list(iter_rows(manifest))
    parsed = [(line, row is not None) for line, row, _ in rows]
    assert parsed == [(1, True), (2, False), (3, False), (5, True), (6, False)]


def test_write_manifest_round_trips_with_relative_paths_and_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out" / "m.jsonl"
    audio = tmp_path / "out" / "clips" / "a.wav"
    rows = [
        {"caption": ("one", "two"), "audio": audio, "split": "train", "attributes": {"n": 1}, "zzz": "kept"},
        {"audio": "rel/b.wav", "caption": "b", "duration": 0.5, "sample_rate": 8000},
        {"audio": str(tmp_path / "elsewhere.wav"), "caption": "c"},
    ]
    assert write_manifest(out, rows) == out
    lines = out.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["audio", "caption", "split", "attributes", "zzz"]
    assert first["audio"] == "clips/a.wav" and first["caption"] == ["one", "two"]
    assert json.loads(lines[2])["audio"] == "../elsewhere.wav"
    read = read_manifest(out)
    assert read[0].audio == audio and read[0].extra == {"zzz": "kept"}
    assert read[1].audio == out.parent.absolute() / "rel" / "b.wav"
    assert read[2].audio == tmp_path / "elsewhere.wav"
    # ManifestRow objects round-trip too.
    again = tmp_path / "again.jsonl"
    write_manifest(again, read)
    assert [(r.audio, r.captions, r.attributes, r.extra) for r in read_manifest(again)] == [
        (r.audio, r.captions, r.attributes, r.extra) for r in read
    ]
    # A bad row writes nothing and leaves no temporary file behind.
    with pytest.raises(ManifestError, match=r"m.jsonl:2: field 'caption'"):
        write_manifest(out, [rows[1], {"audio": "x.wav", "caption": ""}])
    assert out.read_text(encoding="utf-8").splitlines() == lines
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.jsonl"]


def test_manifest_row_to_dict() -> None:
    row = ManifestRow(audio=Path("/a.wav"), captions=("x",), line=1, split="train", extra={"k": 1})
    assert row.to_dict() == {"audio": "/a.wav", "caption": "x", "split": "train", "k": 1}


# -- validation CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def mixed_manifest(tmp_path: Path) -> Path:
    """Lines: 1 good, 2 missing file, 3 corrupt file, 4 NaN samples, 5 schema error, 6 wrong duration,
    7 wrong sample rate, 8 good stereo."""
    _tone(tmp_path / "good.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all")
    nan = np.full((SR // 4, 1), 0.1, dtype=np.float32)
    nan[100, 0] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    _tone(tmp_path / "stereo.wav", seconds=0.25, channels=2)
    lines = [
        {"audio": "good.wav", "caption": "tone", "duration": 0.5 + DURATION_TOLERANCE / 2, "sample_rate": SR},
        {"audio": "missing.wav", "caption": "gone"},
        {"audio": "corrupt.wav", "caption": "broken"},
        {"audio": "nan.wav", "caption": "nan"},
        {"audio": "good.wav", "caption": 42},
        {"audio": "good.wav", "caption": "long?", "duration": 0.6},
        {"audio": "good.wav", "caption": "rate?", "sample_rate": 16000},
        {"audio": "stereo.wav", "caption": "two channels", "duration": 0.25},
    ]
    return _write_lines(tmp_path / "mixed.jsonl", [json.dumps(line) for line in lines])


def _bad_lines(report) -> dict[int, str]:
    return {check.line: check.problem for check in report.bad}


def test_validate_manifest_finds_every_bad_row(mixed_manifest: Path) -> None:
    report = validate_manifest(mixed_manifest)
    assert (report.rows, report.ok) == (8, 2)
    bad = _bad_lines(report)
    assert sorted(bad) == [2, 3, 4, 5, 6, 7]
    assert "no such file" in bad[2]
    assert "not a readable audio file" in bad[3]
    assert "non-finite" in bad[4]
    assert "field 'caption'" in bad[5]
    assert "declared duration 0.600 s, the file lasts 0.500 s" in bad[6]
    assert "declared sample_rate 16000 Hz, the file has 8000 Hz" in bad[7]


def test_validate_without_decoding_misses_only_sample_content(mixed_manifest: Path) -> None:
    report = validate_manifest(mixed_manifest, decode=False)
    assert sorted(_bad_lines(report)) == [2, 3, 5, 6, 7]  # the NaN file has a valid header


def test_validate_main_exit_codes_and_output(mixed_manifest: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"manifest={mixed_manifest}", "workers=2"]) == 1
    out = capsys.readouterr().out.splitlines()
    reported = [line.split(":")[1] for line in out if line.startswith(str(mixed_manifest))]
    assert reported == ["2", "3", "4", "5", "6", "7"]
    assert f"{mixed_manifest}:2: {tmp_path.absolute() / 'missing.wav'}: " in out[0]
    assert out[-1] == "rows: 8, ok: 2, bad: 6"

    good = _write_lines(tmp_path / "good.jsonl", [json.dumps({"audio": "good.wav", "caption": "fine"})])
    assert main([f"manifest={good}"]) == 0
    assert capsys.readouterr().out.splitlines() == ["rows: 1, ok: 1, bad: 0"]

    empty = _write_lines(tmp_path / "empty.jsonl", [""])
    assert main([f"manifest={empty}"]) == 1
    assert main([f"manifest={tmp_path / 'absent.jsonl'}"]) == 1  # an unreadable manifest: one error line
    err = capsys.readouterr().err
    absent = tmp_path / "absent.jsonl"
    assert err.splitlines() == [f"error: {absent}: expected an existing manifest file, got no such file"]


def test_validate_help_prints_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.data.validate [key=value ...]" in out
    for setting in ("manifest: ???", "decode: true", "workers: 1"):
        assert setting in out


@pytest.mark.parametrize(("argv", "message"), [
    (["workers=abc"], "error: workers: expected a whole number, got 'abc'"),
    (["workers=0"], "error: workers: expected a whole number >= 1, got 0"),
    (["decode=maybe"], "error: decode: expected true or false, got 'maybe'"),
    ([], "error: required setting(s) not given: manifest=..."),
    (["--no-decode"], "error: unknown option(s) ['--no-decode']"),
    (["colour=red"], "error: Could not override 'colour'"),
])
def test_validate_bad_settings_end_in_one_error_line(mixed_manifest: Path, argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    manifest = [] if not argv or argv[0].startswith("-") else [f"manifest={mixed_manifest}"]
    assert main([*manifest, *argv]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message), captured.err
    assert "Traceback" not in captured.err + captured.out


def test_validate_cli_in_a_subprocess(mixed_manifest: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "audiodiff.data.validate", f"manifest={mixed_manifest}", "decode=false"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[1] for line in lines[:-1]] == ["2", "3", "5", "6", "7"]
    assert lines[-1] == "rows: 8, ok: 3, bad: 5"
    done = subprocess.run([sys.executable, "-m", "audiodiff.data.validate", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Settings (conf/validate.yaml; ??? must be given):" in done.stdout and "manifest: ???" in done.stdout


def test_duration_tolerance_boundary(tmp_path: Path) -> None:
    _tone(tmp_path / "t.wav", seconds=1.0)
    rows = [{"audio": "t.wav", "caption": "x", "duration": 1.0 + d} for d in (0.049, -0.049, 0.051, -0.051)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    report = validate_manifest(manifest, decode=False)
    assert sorted(_bad_lines(report)) == [3, 4]
    assert math.isclose(DURATION_TOLERANCE, 0.05)


def test_progress_lines_go_to_stderr(mixed_manifest: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from audiodiff.data import validate

    monkeypatch.setattr(validate, "_PROGRESS_EVERY_S", 0.0)
    assert main([f"manifest={mixed_manifest}", "decode=false"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "checked 1/8 rows (12%), 0 bad"
    assert err[-1] == "checked 7/8 rows (88%), 5 bad"  # the last row goes straight to the summary
