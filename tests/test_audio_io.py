"""audiodiff.audio.io: decoding, typed errors, header info and atomic writes.

Fixtures are generated in tmp_path with soundfile or raw bytes; reference signals are written by soundfile
(an independent encoder) and compared after our decode.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio.errors import (
    AudioContentError,
    AudioDecodeError,
    AudioEncodeError,
    AudioError,
    AudioFileNotFound,
)
from audiodiff.audio.io import AudioInfo, audio_info, load_audio, save_audio


def _sine(
    frames: int, sample_rate: int, channels: int = 1, freq: float = 440.0, amp: float = 0.5
) -> np.ndarray:
    """[frames, channels] float64 sines, channel c at freq * (c + 1)."""
    t = np.arange(frames) / sample_rate
    return np.stack([amp * np.sin(2 * math.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)


def _write(path: Path, data: np.ndarray, sample_rate: int, **kwargs: str) -> Path:
    sf.write(path, data, sample_rate, **kwargs)
    return path


def _dominant_hz(wav: torch.Tensor, sample_rate: int) -> float:
    x = wav.double().numpy() * np.hanning(wav.shape[-1])
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * sample_rate / wav.shape[-1]


def _assert_names(error: AudioError, path: Path) -> None:
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: ")


# --- bad input -------------------------------------------------------------------------------------------


def test_error_str_and_pickle() -> None:
    import pickle

    error = AudioDecodeError("/x/y.wav", "empty file (0 bytes)")
    assert str(error) == "/x/y.wav: empty file (0 bytes)"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is AudioDecodeError and again.path == "/x/y.wav" and again.reason == error.reason
    assert str(AudioContentError(None, "zero frames")) == "zero frames"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.wav"
    for call in (load_audio, audio_info):
        with pytest.raises(AudioFileNotFound) as info:
            call(path)
        _assert_names(info.value, path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFound, match="not a regular file"):
        load_audio(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    for call in (load_audio, audio_info):
        with pytest.raises(AudioDecodeError, match="empty file") as info:
            call(path)
        _assert_names(info.value, path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".opus"])
def test_random_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(20000))
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    _assert_names(info.value, path)
    assert "does not exist" not in str(info.value)


def test_header_only_wav(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.wav", _sine(1000, 16000), 16000)
    path = tmp_path / "header.wav"
    path.write_bytes(full.read_bytes()[:20])
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    _assert_names(info.value, path)


@pytest.mark.parametrize(
    ("suffix", "kwargs", "keep"),
    [
        (".wav", {"subtype": "PCM_16"}, 0.5),
        (".flac", {"subtype": "PCM_24"}, 0.5),
        (".mp3", {"format": "MP3"}, 0.5),
        (".ogg", {"format": "OGG", "subtype": "VORBIS"}, 0.5),
    ],
)
def test_truncated_file(tmp_path: Path, suffix: str, kwargs: dict[str, str], keep: float) -> None:
    if not sf.check_format(kwargs.get("format", suffix[1:].upper()), kwargs.get("subtype")):
        pytest.skip(f"the linked libsndfile {sf.__libsndfile_version__} cannot write {suffix}")
    full = _write(tmp_path / f"full{suffix}", _sine(32000, 16000, channels=2), 16000, **kwargs)
    path = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AudioDecodeError, match="truncated") as info:
        load_audio(path)
    _assert_names(info.value, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    data = _sine(100, 16000).astype(np.float32)
    data[37, 0] = bad
    path = _write(tmp_path / "bad.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioContentError, match=r"NaN/Inf.*frame 37") as info:
        load_audio(path)
    _assert_names(info.value, path)


def test_zero_frames(tmp_path: Path) -> None:
    path = _write(tmp_path / "nothing.wav", np.zeros((0, 2)), 16000, subtype="PCM_16")
    for call in (load_audio, audio_info):
        with pytest.raises(AudioContentError, match="zero frames") as info:
            call(path)
        _assert_names(info.value, path)


def test_format_libsndfile_cannot_read(tmp_path: Path) -> None:
    # AAC in MP4 goes to audioread; garbage (or no ffmpeg backend) must still give a typed error.
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    _assert_names(info.value, path)


# --- decoding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [
        (".wav", "PCM_U8", 2.0**-7),
        (".wav", "PCM_16", 2.0**-15),
        (".wav", "PCM_24", 2.0**-23),
        (".wav", "PCM_32", 2.0**-24),  # float32 output resolution
        (".wav", "FLOAT", 1e-7),
        (".wav", "DOUBLE", 1e-7),
        (".flac", "PCM_S8", 2.0**-7),
        (".flac", "PCM_16", 2.0**-15),
        (".flac", "PCM_24", 2.0**-23),
    ],
)
def test_bit_depths(tmp_path: Path, suffix: str, subtype: str, tolerance: float) -> None:
    reference = _sine(4000, 16000, channels=2, amp=0.9)
    path = _write(tmp_path / f"clip{suffix}", reference, 16000, subtype=subtype)
    wav, sample_rate = load_audio(path)
    assert sample_rate == 16000
    assert wav.dtype == torch.float32 and wav.shape == (2, 4000)
    np.testing.assert_allclose(wav.numpy(), reference.T, atol=tolerance)


@pytest.mark.parametrize(
    ("channels", "sample_rate"), [(1, 8000), (2, 44100), (3, 22050), (6, 48000), (8, 96000)]
)
def test_channels_and_rates(tmp_path: Path, channels: int, sample_rate: int) -> None:
    reference = _sine(sample_rate // 10, sample_rate, channels=channels, freq=100.0)
    path = _write(tmp_path / "multi.flac", reference, sample_rate, subtype="PCM_24")
    wav, rate = load_audio(path)
    assert rate == sample_rate and wav.shape == (channels, sample_rate // 10)
    np.testing.assert_allclose(wav.numpy(), reference.T, atol=2.0**-22)
    info = audio_info(path)
    assert info == AudioInfo(sample_rate, channels, sample_rate // 10, 0.1, "FLAC", "PCM_24")


def test_one_sample_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.wav", np.array([[0.25, -0.5]]), 8000, subtype="PCM_16")
    wav, rate = load_audio(path)
    assert rate == 8000 and wav.shape == (2, 1)
    np.testing.assert_allclose(wav.numpy()[:, 0], [0.25, -0.5])
    resampled, rate = load_audio(path, sample_rate=4000)
    assert rate == 4000 and resampled.shape == (2, 1) and torch.isfinite(resampled).all()


def test_channel_conversion(tmp_path: Path) -> None:
    stereo = _write(tmp_path / "stereo.wav", _sine(800, 8000, channels=2), 8000, subtype="FLOAT")
    wav, _ = load_audio(stereo)
    mono, _ = load_audio(stereo, channels=1)
    torch.testing.assert_close(mono, wav.mean(dim=0, keepdim=True))

    mono_path = _write(tmp_path / "mono.wav", _sine(800, 8000), 8000, subtype="FLOAT")
    dup, _ = load_audio(mono_path, channels=2)
    assert dup.shape == (2, 800)
    torch.testing.assert_close(dup[0], dup[1])

    six = _write(tmp_path / "six.wav", _sine(800, 8000, channels=6), 8000, subtype="FLOAT")
    with pytest.raises(AudioContentError, match="cannot convert 6 channels to 2") as info:
        load_audio(six, channels=2)
    _assert_names(info.value, six)


def test_resample_on_load(tmp_path: Path) -> None:
    path = _write(tmp_path / "cd.wav", _sine(44100, 44100, freq=1000.0), 44100, subtype="PCM_24")
    wav, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and wav.shape == (1, 16000)
    assert abs(_dominant_hz(wav[0], 16000) - 1000.0) <= 1.0


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "sample_rate"),
    [
        (".ogg", "OGG", "VORBIS", 16000),
        (".opus", "OGG", "OPUS", 48000),
        (".mp3", "MP3", "MPEG_LAYER_III", 16000),
    ],
)
def test_lossy_formats(tmp_path: Path, suffix: str, fmt: str, subtype: str, sample_rate: int) -> None:
    if not sf.check_format(fmt, subtype):
        pytest.skip(
            f"libsndfile {sf.__libsndfile_version__} linked by soundfile cannot write {fmt}/{subtype}"
        )
    frames = sample_rate // 2
    path = _write(
        tmp_path / f"tone{suffix}",
        _sine(frames, sample_rate, channels=2),
        sample_rate,
        format=fmt,
        subtype=subtype,
    )
    wav, rate = load_audio(path)
    assert rate == sample_rate and wav.shape == (2, frames)
    assert torch.isfinite(wav).all()
    assert abs(_dominant_hz(wav[0], rate) - 440.0) <= 5.0
    rms = float(wav[0, frames // 4 : 3 * frames // 4].pow(2).mean().sqrt())
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.1)
    info = audio_info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, sample_rate, 2)


# --- writing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [
        (".wav", None, 2.0**-15),
        (".wav", "PCM_24", 2.0**-23),
        (".wav", "FLOAT", 0.0),
        (".flac", "PCM_16", 2.0**-15),
        (".flac", "PCM_24", 2.0**-23),
    ],
)
def test_save_load_round_trip(tmp_path: Path, suffix: str, subtype: str | None, tolerance: float) -> None:
    wav = torch.from_numpy(_sine(3000, 22050, channels=2).T.astype(np.float32))
    path = save_audio(tmp_path / "nested" / "deeper" / f"out{suffix}", wav, 22050, subtype=subtype)
    assert path == tmp_path / "nested" / "deeper" / f"out{suffix}"
    assert sf.info(path).subtype == (subtype or "PCM_16")
    loaded, rate = load_audio(path)
    assert rate == 22050
    torch.testing.assert_close(loaded, wav, atol=tolerance, rtol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_save_mono_vector_and_clipping(tmp_path: Path) -> None:
    wav = torch.tensor([0.0, 0.5, 2.0, -3.0, -1.0])
    path = save_audio(tmp_path / "clip.wav", wav, 8000, subtype="FLOAT")
    loaded, _ = load_audio(path)
    assert loaded.shape == (1, 5)
    torch.testing.assert_close(loaded[0], torch.tensor([0.0, 0.5, 1.0, -1.0, -1.0]))


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    good = torch.zeros(1, 10)
    with pytest.raises(ValueError, match=r"out\.mp3.*expected one of \['\.flac', '\.wav'\]"):
        save_audio(tmp_path / "out.mp3", good, 16000)
    with pytest.raises(ValueError, match="subtype 'VORBIS' is not valid for WAV"):
        save_audio(tmp_path / "out.wav", good, 16000, subtype="VORBIS")
    with pytest.raises(ValueError, match=r"expected wav \[C, T\] or \[T\]"):
        save_audio(tmp_path / "out.wav", torch.zeros(1, 1, 10), 16000)
    with pytest.raises(AudioContentError, match="non-finite") as info:
        save_audio(tmp_path / "out.wav", torch.tensor([0.0, float("nan")]), 16000)
    _assert_names(info.value, tmp_path / "out.wav")
    with pytest.raises(AudioContentError, match="zero frames"):
        save_audio(tmp_path / "out.wav", torch.zeros(2, 0), 16000)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = save_audio(tmp_path / "keep.flac", torch.full((1, 100), 0.25), 16000)
    before = path.read_bytes()
    with pytest.raises(AudioEncodeError) as info:
        save_audio(path, torch.zeros(9, 100), 16000)  # FLAC allows at most 8 channels
    _assert_names(info.value, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.flac"]


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    path = save_audio(tmp_path / "a.wav", torch.full((1, 100), 0.25), 16000)
    save_audio(path, torch.full((2, 50), -0.5), 8000)
    wav, rate = load_audio(path)
    assert rate == 8000 and wav.shape == (2, 50)
    torch.testing.assert_close(wav, torch.full((2, 50), -0.5))
