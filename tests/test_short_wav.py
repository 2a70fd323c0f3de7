"""WAVs whose header overstates the data chunk: the loader and the validator apply one rule.

At least 90% of the declared frames decode: the clip loads (what decodes) with a note naming the file, the
declared and decoded frames and the shortfall in percent. Less: :class:`AudioDecodeError` from the loader, a bad
row in the validator, a skipped and counted clip in the dataset. Every WAV is built here in tmp_path, either by
cutting a complete file short or by inflating the sizes in an intact file's header.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff import cli
from audiodiff.audio.errors import AudioDecodeError
from audiodiff.audio.io import MIN_DECODED_FRACTION, Shortfall, audio_info, check_shortfall, load_audio
from audiodiff.data import validate
from audiodiff.data.dataset import AudioCaptionDataset
from audiodiff.data.manifest import write_manifest
from audiodiff.data.validate import validate_manifest

SR = 16000
FRAMES = 32000  # declared frames of every test file (2 s at SR)
CHANNELS = 2
BYTES_PER_FRAME = 2 * CHANNELS  # PCM_16
HEADER = 44  # bytes before the samples in soundfile's plain PCM WAV


def _samples() -> np.ndarray:
    """[FRAMES, CHANNELS] float32 ramps that survive PCM_16 exactly, so a decoded prefix can be compared."""
    ramp = (np.arange(FRAMES) % 20000 - 10000).astype(np.float32) / 32768.0
    return np.stack([ramp, -ramp], axis=1)


def _cut(path: Path, percent_short: int) -> tuple[Path, int]:
    """A complete WAV of FRAMES frames whose bytes are cut so that ``percent_short`` % of the frames are gone.

    Returns:
        ``(path, frames the file still holds)``.
    """
    sf.write(path, _samples(), SR, subtype="PCM_16")
    raw = path.read_bytes()
    assert raw[36:40] == b"data" and struct.unpack_from("<I", raw, 40)[0] == FRAMES * BYTES_PER_FRAME
    held = FRAMES - FRAMES * percent_short // 100
    path.write_bytes(raw[: HEADER + held * BYTES_PER_FRAME])
    return path, held


def _inflated(path: Path, percent_short: int) -> tuple[Path, int]:
    """An intact WAV of ``held`` frames whose RIFF and data sizes claim FRAMES frames (a writer's wrong header).

    Returns:
        ``(path, frames the file holds)``.
    """
    held = FRAMES - FRAMES * percent_short // 100
    sf.write(path, _samples()[:held], SR, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    declared_bytes = FRAMES * BYTES_PER_FRAME
    struct.pack_into("<I", raw, 4, declared_bytes + HEADER - 8)
    struct.pack_into("<I", raw, 40, declared_bytes)
    path.write_bytes(bytes(raw))
    return path, held


BUILDERS = {"cut": _cut, "inflated": _inflated}


def _manifest(tmp_path: Path, audio: Path) -> Path:
    return write_manifest(tmp_path / f"{audio.stem}.jsonl", [{"audio": audio.name, "caption": "short wav"}])


def _note_parts(held: int, percent_short: int) -> list[str]:
    return [f"header declares {FRAMES} frames", f"{held} decode", f"({percent_short:.1f}% short)"]


# --- kept: at least 90% of the declared frames decode ----------------------------------------------------


@pytest.mark.parametrize("build", sorted(BUILDERS))
@pytest.mark.parametrize("percent_short", [1, 9, 10])
def test_mostly_complete_wav_loads_with_a_note(tmp_path: Path, build: str, percent_short: int,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path, held = BUILDERS[build](tmp_path / f"{build}{percent_short}.wav", percent_short)
    with sf.SoundFile(path) as handle:  # libsndfile clamps the data chunk to the file and reads without error
        assert handle.frames == held
    with caplog.at_level(logging.WARNING, logger="audiodiff.audio.io"):
        wav, sample_rate = load_audio(path)
    assert sample_rate == SR and tuple(wav.shape) == (CHANNELS, held)
    np.testing.assert_array_equal(wav.numpy().T, _samples()[:held])
    notes = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(notes) == 1 and notes[0].startswith(f"{path}: ")
    for part in _note_parts(held, percent_short):
        assert part in notes[0]

    info = audio_info(path)
    assert info.frames == held and info.shortfall == Shortfall(FRAMES, held)


def test_note_is_logged_once_per_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = _cut(tmp_path / "again.wav", 1)
    with caplog.at_level(logging.WARNING, logger="audiodiff.audio.io"):
        for _ in range(3):  # a dataset reloads its clips every epoch
            load_audio(path)
    assert len([r for r in caplog.records if "header declares" in r.getMessage()]) == 1


def test_complete_and_streaming_wavs_have_no_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, _samples(), SR, subtype="PCM_16")
    streamed = tmp_path / "streamed.wav"  # writers that stream to a pipe leave 0xFFFFFFFF in the sizes
    raw = bytearray(whole.read_bytes())
    struct.pack_into("<I", raw, 4, 0xFFFFFFFF)
    struct.pack_into("<I", raw, 40, 0xFFFFFFFF)
    streamed.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="audiodiff.audio.io"):
        for path in (whole, streamed):
            assert load_audio(path)[0].shape[-1] == FRAMES
            assert audio_info(path).shortfall is None
    assert not caplog.records


# --- refused: less than 90% decodes -----------------------------------------------------------------------


@pytest.mark.parametrize("build", sorted(BUILDERS))
@pytest.mark.parametrize("percent_short", [11, 60])
def test_mostly_missing_wav_is_refused(tmp_path: Path, build: str, percent_short: int) -> None:
    path, held = BUILDERS[build](tmp_path / f"{build}{percent_short}.wav", percent_short)
    expected = f"truncated: header declares {FRAMES} frames, only {held} decode ({percent_short:.1f}% short"
    for call in (load_audio, audio_info):
        with pytest.raises(AudioDecodeError) as info:
            call(path)
        assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
        assert expected in info.value.reason


def test_check_shortfall_is_the_rule() -> None:
    assert MIN_DECODED_FRACTION == 0.9
    assert check_shortfall("a.wav", 1000, 1000) is None
    assert check_shortfall("a.wav", 1000, 900) == Shortfall(1000, 900)
    assert Shortfall(1000, 990).percent == pytest.approx(1.0)
    with pytest.raises(AudioDecodeError, match=r"a.wav: truncated: header declares 1000 frames, only 899 decode"):
        check_shortfall("a.wav", 1000, 899)


# --- the validator and the dataset agree with the loader --------------------------------------------------


def _loader_verdict(path: Path) -> str | None:
    try:
        load_audio(path)
    except AudioDecodeError as error:
        return error.reason
    return None


@pytest.mark.parametrize("build", sorted(BUILDERS))
@pytest.mark.parametrize("percent_short", [1, 9, 60])
@pytest.mark.parametrize("decode", [True, False])
def test_validator_gives_the_loaders_verdict(tmp_path: Path, build: str, percent_short: int, decode: bool) -> None:
    path, held = BUILDERS[build](tmp_path / f"{build}{percent_short}.wav", percent_short)
    (check,) = validate_manifest(_manifest(tmp_path, path), decode=decode).checks
    problem = _loader_verdict(path)
    assert check.problem == problem
    if percent_short <= 10:
        assert check.ok and check.note is not None
        for part in _note_parts(held, percent_short):
            assert part in check.note
    else:
        assert not check.ok and check.note is None
        assert f"header declares {FRAMES} frames, only {held} decode" in check.problem


def test_validator_cli_prints_notes_and_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for percent_short in (1, 9, 60):
        path, _ = _cut(tmp_path / f"cut{percent_short}.wav", percent_short)
        rows.append({"audio": path.name, "caption": f"{percent_short}% short"})
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = [f"manifest={manifest}"]
    assert cli.run("audiodiff.data.validate", "validate", validate.main, validate.__doc__, argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert out[0].startswith(f"{manifest}:1: {tmp_path / 'cut1.wav'}: note: header declares {FRAMES} frames")
    assert out[1].startswith(f"{manifest}:2: {tmp_path / 'cut9.wav'}: note: ")
    assert out[2].startswith(f"{manifest}:3: {tmp_path / 'cut60.wav'}: truncated: header declares {FRAMES}")
    assert out[3] == "rows: 3, ok: 2, bad: 1 (2 ok with a note)"


def test_dataset_keeps_short_clips_and_skips_mostly_missing_ones(tmp_path: Path) -> None:
    rows = []
    for percent_short in (1, 9, 60):
        path, _ = _cut(tmp_path / f"cut{percent_short}.wav", percent_short)
        rows.append({"audio": path.name, "caption": f"{percent_short}% short"})
    ds = AudioCaptionDataset(write_manifest(tmp_path / "m.jsonl", rows), None, sample_rate=SR, channels=2,
                             segment_seconds=2.0, train=False)
    kept = [ds[(i, 0)] for i in range(3)]
    assert [item["audio"] for item in kept] == [str(tmp_path / name) for name in ("cut1.wav", "cut9.wav", "cut1.wav")]
    assert kept[0]["seconds_total"] == pytest.approx((FRAMES - FRAMES // 100) / SR)
    assert list(ds.failures()) == [str(tmp_path / "cut60.wav")]
    assert f"header declares {FRAMES} frames" in ds.failures()[str(tmp_path / "cut60.wav")]
