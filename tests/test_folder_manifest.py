"""`python -m audiodiff.data.folder`: a manifest from a folder of clips, captions from sidecars or file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from audiodiff import cli
from audiodiff.data import folder as folder_tool
from audiodiff.data.folder import assign_split, caption_from_name, folder_manifest
from audiodiff.data.manifest import read_manifest

SR = 8000


def tone(path: Path, seconds: float = 0.25, amplitude: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    return path


def main(argv: list[str]) -> int:
    return cli.run("audiodiff.data.folder", "folder", folder_tool.main, folder_tool.__doc__, argv)


def test_captions_from_sidecars_then_file_names_and_bad_files_skipped(tmp_path, capsys):
    clips = tmp_path / "clips"
    tone(clips / "door.wav")
    (clips / "door.txt").write_text("a wooden door creaks open\n\na heavy door\n")
    tone(clips / "sub" / "dog_bark-03.wav")
    tone(clips / "quiet.wav", amplitude=0.0)
    (clips / "broken.wav").write_bytes(b"RIFF not really audio")
    out = tmp_path / "manifest.jsonl"
    assert main([f"dir={clips}", f"out={out}", "val_fraction=0"]) == 0
    printed = capsys.readouterr().out
    assert "rows: 2 (2 train), skipped: 2" in printed
    assert "1 from sidecar .txt files, 1 from file names" in printed and "captioned by their file names" in printed
    assert "quiet.wav: silent" in printed and "broken.wav: not a readable audio file" in printed
    rows = {row.audio.name: row for row in read_manifest(out)}
    assert rows["door.wav"].captions == ("a wooden door creaks open", "a heavy door")
    assert rows["dog_bark-03.wav"].captions == ("dog bark",)
    assert rows["door.wav"].sample_rate == SR and abs(rows["door.wav"].duration - 0.25) < 1e-6
    written = {json.loads(line)["audio"] for line in out.read_text().splitlines()}
    assert written == {"clips/door.wav", "clips/sub/dog_bark-03.wav"}  # relative to the manifest


def test_captions_csv_and_metadata_jsonl(tmp_path):
    a = tmp_path / "a"
    tone(a / "x.wav")
    tone(a / "y.flac")
    (a / "captions.csv").write_text("file_name,caption\nx.wav,a low hum\ny.flac,a bright chime\nz.wav,gone\n")
    result = folder_manifest(a, tmp_path / "a.jsonl", val_fraction=0.0)
    assert result.sources == {"captions.csv": 2} and result.unmatched == ["z.wav"]
    assert [r.caption for r in read_manifest(tmp_path / "a.jsonl")] == ["a low hum", "a bright chime"]
    b = tmp_path / "b"
    tone(b / "x.wav")
    (b / "metadata.jsonl").write_text(json.dumps({"file_name": "x.wav", "text": "rain on a roof"}) + "\n")
    folder_manifest(b, tmp_path / "b.jsonl", val_fraction=0.0)
    assert read_manifest(tmp_path / "b.jsonl")[0].caption == "rain on a roof"


def test_seeded_split_fraction(tmp_path):
    for i in range(10):
        tone(tmp_path / "c" / f"clip{i}.wav", seconds=0.05)
    first = folder_manifest(tmp_path / "c", tmp_path / "m1.jsonl", val_fraction=0.2, seed=3)
    again = folder_manifest(tmp_path / "c", tmp_path / "m2.jsonl", val_fraction=0.2, seed=3)
    assert [r["split"] for r in first.rows] == [r["split"] for r in again.rows]
    assert sum(r["split"] == "val" for r in first.rows) == 2
    assert assign_split(10, 0.2, 3) != assign_split(10, 0.2, 4) or assign_split(10, 0.2, 5) != assign_split(10, 0.2, 3)
    assert assign_split(3, 0.01, 0).count("val") == 1  # at least one held out when asked for any


def test_file_name_captions():
    assert caption_from_name(Path("Dog_Bark (2).wav")) == "dog bark"
    assert caption_from_name(Path("glassBreak_01.wav")) == "glass break"
    assert caption_from_name(Path("0001.wav")) == "0001"


def test_a_folder_without_audio_is_one_error_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main([f"dir={tmp_path}", f"out={tmp_path / 'm.jsonl'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no audio files found" in err[0]
    assert main([f"dir={tmp_path / 'missing'}", f"out={tmp_path / 'm.jsonl'}"]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()
