"""Reading and writing audio files.

Decoding goes through ``soundfile``. The pinned soundfile 0.14.0 bundles libsndfile 1.2.2, which reads
(and writes) WAV (PCM_U8/16/24/32, FLOAT, DOUBLE and the ADPCM/law variants), FLAC (8/16/24 bit),
Ogg Vorbis, Ogg Opus and MP3 (libsndfile >= 1.1 links mpg123 and LAME); AIFF, CAF, W64 and the other
libsndfile formats come for free. A linked libsndfile older than 1.1 lacks MP3 and Opus; for those, and
for formats libsndfile never reads (AAC/M4A, WMA, WebM, ...), ``load_audio`` and ``audio_info`` fall back
to ``audioread``, which needs an ffmpeg, GStreamer or Core Audio backend on the system (its only
pure-Python backend reads WAV/AIFF/AU, which libsndfile already covers). Without such a backend those
files raise :class:`AudioDecodeError` saying so.

Samples are returned as float32 ``[C, T]``: integer PCM is scaled to [-1, 1) as libsndfile decodes it;
float files are returned as stored (no clipping), but NaN/Inf samples are refused with
:class:`AudioContentError`.

Failures are typed (see :mod:`audiodiff.audio.errors`) and name the file:

- missing path or a directory: :class:`AudioFileNotFound`;
- zero-byte file, bytes that are not audio, a truncated file (a FLAC or MP3 stream cut short, an Ogg stream
  without its end, a WAV holding less than :data:`MIN_DECODED_FRACTION` of the frames its header declares), an
  unsupported format: :class:`AudioDecodeError`;
- NaN/Inf samples, zero frames, channel counts that cannot be converted: :class:`AudioContentError`.

A WAV whose header overstates its data chunk (common in files written by real tools, and what a copy cut short
leaves) is one rule, :func:`check_shortfall`, applied by both :func:`load_audio` and :func:`audio_info` (so the
loader and ``python -m audiodiff.data.validate`` agree): libsndfile reads what the file holds without an error,
so when at least :data:`MIN_DECODED_FRACTION` of the declared frames decode the clip is kept and the
:class:`Shortfall` is noted (a logging warning from :func:`load_audio`, ``AudioInfo.shortfall`` from
:func:`audio_info`); below that the file raises :class:`AudioDecodeError` naming declared vs decoded frames.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from audiodiff.audio.errors import AudioContentError, AudioDecodeError, AudioEncodeError, AudioFileNotFound
from audiodiff.audio.transforms import resample, to_channels
from audiodiff.utils.files import atomic_path

log = logging.getLogger(__name__)

# Decode this many frames per read so that a corrupt header claiming billions of frames cannot allocate them.
_READ_BLOCK = 1 << 20
# MP3 frame counts in the header may be estimates: only a shortfall beyond two MPEG frames (and 1%)
# means truncation.
_MP3_SLACK_FRAMES = 2 * 1152
# WAV/RF64 writers that stream to a pipe put a placeholder in the data size; these are not truncations.
_STREAMING_SIZE_MIN = 0x7FFF0000
# A WAV holding at least this fraction of the frames its header declares is loaded (with a note); less is refused.
MIN_DECODED_FRACTION = 0.9

_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def _libsndfile_reads(fmt: str, subtype: str | None = None) -> bool:
    if fmt not in sf.available_formats():
        return False
    return subtype is None or subtype in sf.available_subtypes(fmt)


# Extensions that libsndfile cannot decode here, so they go to audioread. Computed from the linked library.
_AUDIOREAD_EXTENSIONS = frozenset(
    {".m4a", ".aac", ".mp4", ".wma", ".webm", ".mka", ".ac3", ".amr"}
    | (set() if _libsndfile_reads("MP3") else {".mp3", ".mp2"})
    | (set() if _libsndfile_reads("OGG", "OPUS") else {".opus"})
)


@dataclass(frozen=True)
class Shortfall:
    """A file that holds fewer frames than its header declares but enough to keep (see :func:`check_shortfall`).

    Attributes:
        declared_frames: sample frames per channel the header declares.
        decoded_frames: sample frames per channel that decode (``< declared_frames``).
    """

    declared_frames: int
    decoded_frames: int

    @property
    def percent(self) -> float:
        """How much of the declared audio is missing, in percent of the declared frames."""
        return 100.0 * (self.declared_frames - self.decoded_frames) / self.declared_frames

    @property
    def note(self) -> str:
        """One line for a log or a report, e.g. ``"header declares 32000 frames, 31680 decode (1.0% short)..."``."""
        return (
            f"header declares {self.declared_frames} frames, {self.decoded_frames} decode ({self.percent:.1f}% "
            f"short); loaded the {self.decoded_frames} frames that decode"
        )


def check_shortfall(path: str | Path, declared_frames: int, decoded_frames: int) -> Shortfall | None:
    """The one rule for a file that holds fewer frames than its header declares.

    Args:
        path: the file, named in the error.
        declared_frames: sample frames per channel the header declares.
        decoded_frames: sample frames per channel that decode.

    Returns:
        ``None`` when nothing is missing, else the :class:`Shortfall` of a file that is kept because at least
        :data:`MIN_DECODED_FRACTION` of the declared frames decode.

    Raises:
        AudioDecodeError: fewer than :data:`MIN_DECODED_FRACTION` of the declared frames decode.
    """
    if decoded_frames >= declared_frames:
        return None
    shortfall = Shortfall(declared_frames, decoded_frames)
    if decoded_frames < MIN_DECODED_FRACTION * declared_frames:
        raise AudioDecodeError(
            path,
            f"truncated: header declares {declared_frames} frames, only {decoded_frames} decode "
            f"({shortfall.percent:.1f}% short; at least {MIN_DECODED_FRACTION:.0%} must decode)",
        )
    return shortfall


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    Attributes:
        sample_rate: Hz.
        channels: number of channels C.
        frames: number of sample frames T per channel.
        duration: ``frames / sample_rate`` in seconds.
        format: container, as libsndfile names it (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ...).
        subtype: sample encoding (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ...); ``""`` when unknown.
        shortfall: set when the header declares more frames than the file holds but enough of them decode
            (``frames`` is then what decodes); ``None`` otherwise.
    """

    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str = ""
    shortfall: Shortfall | None = None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioFileNotFound(path, "no such file")
    if not path.is_file():
        raise AudioFileNotFound(path, "not a regular file (is it a directory?)")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")


def _libsndfile_message(error: Exception) -> str:
    message = (getattr(error, "error_string", None) or str(error)).strip()
    if "does not exist" in message:
        # libsndfile's mpg123 reader reports undecodable bytes this way; the file was checked to exist.
        return "no decodable audio stream found"
    return message


def _truncation_in_log(log: str) -> str | None:
    """Why libsndfile's parse log says the Ogg stream was cut short, or ``None`` when it does not."""
    if "File ended unexpectedly" in log:
        return "truncated: the Ogg stream ends without its end-of-stream page"
    return None


def _declared_frames(log: str, frames: int) -> int | None:
    """Frames per channel a WAV header declares when its data chunk claims more bytes than the file holds.

    libsndfile clamps an overstated data chunk to the bytes present (``frames`` is what it will decode) and
    notes ``data : DECLARED (should be HELD)`` in its parse log. Returns ``None`` when the log has no such
    line, or the size is a streaming writer's placeholder (not a truncation).
    """
    sizes = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, flags=re.MULTILINE)
    if sizes is None:
        return None
    declared_bytes, held_bytes = int(sizes[1]), int(sizes[2])
    if not held_bytes < declared_bytes < _STREAMING_SIZE_MIN:
        return None
    block_align = re.search(r"^\s*Block Align\s*:\s*(\d+)", log, flags=re.MULTILINE)
    if block_align is not None and int(block_align[1]) > 0 and "Samples/Block" not in log:
        return declared_bytes // int(block_align[1])  # linear PCM/float/law: one block per frame
    if held_bytes == 0:
        return None  # nothing to scale from; the file fails as zero frames of audio
    return max(frames, round(frames * declared_bytes / held_bytes))  # block codecs (ADPCM, GSM): proportional


def _open_error(path: Path, error: Exception) -> AudioDecodeError:
    return AudioDecodeError(path, f"not a readable audio file ({_libsndfile_message(error)})")


def audio_info(path: str | Path) -> AudioInfo:
    """Read a file's header (no sample decoding) with the same typed errors as :func:`load_audio`.

    Raises:
        AudioFileNotFound, AudioDecodeError, AudioContentError (zero frames).
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(path) as handle:
            log = handle.extra_info
            info = AudioInfo(
                sample_rate=int(handle.samplerate),
                channels=int(handle.channels),
                frames=int(handle.frames),
                duration=handle.frames / handle.samplerate,
                format=str(handle.format),
                subtype=str(handle.subtype),
            )
    except sf.LibsndfileError as error:
        if path.suffix.lower() in _AUDIOREAD_EXTENSIONS:
            return _audioread_info(path)
        raise _open_error(path, error) from error
    truncation = _truncation_in_log(log)
    if truncation is not None:
        raise AudioDecodeError(path, truncation)
    declared = _declared_frames(log, info.frames)
    if declared is not None:
        shortfall = check_shortfall(path, declared, info.frames)
        if shortfall is not None:
            info = replace(info, shortfall=shortfall)
    if info.frames == 0:
        raise AudioContentError(path, "zero frames of audio")
    return info


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int, Shortfall | None]:
    """Decode every frame as float32 ``[T, C]``; raises typed errors for unreadable or truncated files.

    Returns:
        ``(samples [T, C], sample_rate in Hz, shortfall)``: ``shortfall`` is set for a WAV whose header
        overstates its data chunk yet holds enough frames to keep (see :func:`check_shortfall`).
    """
    try:
        handle = sf.SoundFile(path)
    except sf.LibsndfileError as error:
        raise _open_error(path, error) from error
    with handle:
        sample_rate, header_frames, fmt = int(handle.samplerate), int(handle.frames), str(handle.format)
        truncation = _truncation_in_log(handle.extra_info)
        if truncation is not None:
            raise AudioDecodeError(path, truncation)
        declared = _declared_frames(handle.extra_info, header_frames)
        if declared is not None:
            check_shortfall(path, declared, header_frames)  # refuse before decoding what will be thrown away
        blocks: list[np.ndarray] = []
        try:
            while True:
                block = handle.read(_READ_BLOCK, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(block)
                if block.shape[0] < _READ_BLOCK:
                    break
        except sf.LibsndfileError as error:
            raise AudioDecodeError(
                path, f"decoding failed, the file is truncated or corrupt ({_libsndfile_message(error)})"
            ) from error
        channels = int(handle.channels)
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)
    decoded = data.shape[0]
    slack = max(_MP3_SLACK_FRAMES, header_frames // 100) if fmt == "MP3" else 0
    if decoded < header_frames - slack:
        raise AudioDecodeError(path, f"truncated: header declares {header_frames} frames, decoded {decoded}")
    shortfall = None if declared is None else check_shortfall(path, declared, decoded)
    return data, sample_rate, shortfall


def _audioread_open(path: Path) -> Any:  # audioread has no public type for its file objects
    try:
        import audioread
    except ImportError as error:
        raise AudioDecodeError(
            path,
            f"unsupported format '{path.suffix}': libsndfile cannot read it and audioread is not installed",
        ) from error
    try:
        return audioread.audio_open(str(path))
    except audioread.NoBackendError as error:
        raise AudioDecodeError(
            path,
            f"unsupported format '{path.suffix}': libsndfile {sf.__libsndfile_version__} cannot read it and "
            "audioread found no backend that can (install ffmpeg)",
        ) from error
    except (OSError, EOFError, audioread.DecodeError) as error:
        raise AudioDecodeError(path, f"audioread could not decode the file ({error})") from error


def _audioread_info(path: Path) -> AudioInfo:
    with _audioread_open(path) as handle:
        sample_rate, channels, duration = int(handle.samplerate), int(handle.channels), float(handle.duration)
    frames = int(round(duration * sample_rate))
    if frames == 0:
        raise AudioContentError(path, "zero frames of audio")
    return AudioInfo(sample_rate, channels, frames, frames / sample_rate, path.suffix.lstrip(".").upper())


def _decode_audioread(path: Path) -> tuple[np.ndarray, int]:
    with _audioread_open(path) as handle:
        sample_rate, channels = int(handle.samplerate), int(handle.channels)
        try:
            raw = b"".join(bytes(buffer) for buffer in handle)
        except Exception as error:  # backends raise assorted types mid-stream
            raise AudioDecodeError(path, f"audioread decoding failed ({error})") from error
    usable = len(raw) - len(raw) % (2 * channels)
    pcm = np.frombuffer(raw[:usable], dtype="<i2").reshape(-1, channels)
    return pcm.astype(np.float32) / 32768.0, sample_rate


# (path, declared frames, decoded frames) of the shortfalls load_audio has logged in this process.
_NOTED: set[tuple[str, int, int]] = set()


def load_audio(
    path: str | Path, sample_rate: int | None = None, channels: int | None = None
) -> tuple[Tensor, int]:
    """Decode an audio file.

    A WAV whose header declares more frames than the file holds is loaded when at least
    :data:`MIN_DECODED_FRACTION` of them decode, with a logging warning naming the file, the declared and
    decoded frames and the shortfall in percent (once per file and process: a dataset reloads its clips every
    epoch); :func:`load_audio_noted` returns that note instead of logging it.

    Args:
        path: a file soundfile (or, failing that, audioread) can decode; see the module docstring.
        sample_rate: resample to this rate in Hz (soxr HQ) if given and different from the file's.
        channels: ``1`` downmixes by mean, a mono file is duplicated to any count; other mismatches raise.

    Returns:
        ``(wav [C, T] float32 at sample_rate Hz, sample_rate)``; the returned rate is the file's when
        ``sample_rate`` is ``None``. A one-sample file is valid and gives ``[C, 1]``.

    Raises:
        AudioFileNotFound: the path does not exist or is not a file.
        AudioDecodeError: empty, truncated, not audio, or an unsupported format.
        AudioContentError: zero frames, NaN/Inf samples, or a channel count that cannot be converted.
    """
    wav, file_rate, shortfall = load_audio_noted(path, sample_rate, channels)
    if shortfall is not None:
        key = (str(path), shortfall.declared_frames, shortfall.decoded_frames)
        if key not in _NOTED:
            _NOTED.add(key)
            log.warning("%s: %s", path, shortfall.note)
    return wav, file_rate


def load_audio_noted(
    path: str | Path, sample_rate: int | None = None, channels: int | None = None
) -> tuple[Tensor, int, Shortfall | None]:
    """:func:`load_audio`, returning the :class:`Shortfall` of a WAV that holds fewer frames than its header
    declares (but enough to keep) instead of logging it.

    Returns:
        ``(wav [C, T] float32, sample_rate in Hz, shortfall or None)``; arguments and errors as :func:`load_audio`.
    """
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if channels is not None and channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    path = Path(path)
    _check_file(path)
    shortfall: Shortfall | None = None
    try:
        data, file_rate, shortfall = _decode_soundfile(path)
    except AudioDecodeError:
        if path.suffix.lower() not in _AUDIOREAD_EXTENSIONS:
            raise
        data, file_rate = _decode_audioread(path)

    if data.shape[0] == 0:
        raise AudioContentError(path, "zero frames of audio")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        first = int(np.argwhere(~finite)[0][0])
        raise AudioContentError(path, f"{bad} non-finite (NaN/Inf) samples, the first at frame {first}")

    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if channels is not None and channels != wav.shape[0]:
        try:
            wav = to_channels(wav, channels)
        except ValueError as error:
            raise AudioContentError(path, str(error)) from error
    if sample_rate is not None and sample_rate != file_rate:
        wav = resample(wav, file_rate, sample_rate)
        file_rate = sample_rate
    return wav.contiguous(), file_rate, shortfall


TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license", "tracknumber", "genre")
MAX_TAG_CHARS = 4000  # libsndfile keeps a few KB of strings per file


def check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """`tags` as a plain dict after checking names (soundfile's metadata fields: WAV LIST/INFO chunks, FLAC and Ogg
    Vorbis comments) and lengths; ValueError naming the first bad one."""
    out: dict[str, str] = {}
    for name, value in (tags or {}).items():
        if name not in TAGS:
            raise ValueError(f"tag {name!r}: expected one of {list(TAGS)}")
        if not isinstance(value, str) or len(value) > MAX_TAG_CHARS:
            raise ValueError(f"tag {name!r}: expected text of at most {MAX_TAG_CHARS} characters, got "
                             f"{type(value).__name__} of length {len(value) if isinstance(value, str) else '?'}")
        out[name] = value
    return out


def write_tagged(file: Any, data: np.ndarray, sample_rate: int, fmt: str, subtype: str,
                 tags: Mapping[str, str] | None = None) -> None:
    """`data` [T, C] written to `file` (a path or a binary file object) with metadata `tags` (see `check_tags`)."""
    checked = check_tags(tags)
    with sf.SoundFile(file, "w", sample_rate, data.shape[1], subtype=subtype, format=fmt) as out:
        for name, value in checked.items():
            setattr(out, name, value)
        out.write(data)


def read_tags(path: str | Path) -> dict[str, str]:
    """The metadata strings of an audio file soundfile reads (empty for none)."""
    with sf.SoundFile(str(path)) as f:
        return dict(f.copy_metadata())


def save_audio(path: str | Path, wav: Tensor, sample_rate: int, subtype: str | None = None,
               tags: Mapping[str, str] | None = None) -> Path:
    """Write ``wav`` as WAV or FLAC (chosen by the extension) without ever leaving a half-written file.

    Args:
        path: destination ending in ``.wav`` or ``.flac``; missing parent folders are created.
        wav: ``[C, T]`` or ``[T]`` floating-point samples at ``sample_rate`` Hz; clipped to [-1, 1].
        sample_rate: Hz (> 0).
        subtype: libsndfile subtype, default ``"PCM_16"`` (e.g. ``"PCM_24"``, ``"FLOAT"``,
            ``"PCM_U8"`` for WAV).
        tags: metadata strings ({"title", "comment", "software", "date", ...}: :data:`TAGS`) written into the file
            (WAV LIST/INFO, FLAC Vorbis comments).

    Returns:
        The destination path. The samples go to a temporary file in the same folder which is then renamed over
        ``path``, so readers see either the old file or the complete new one.

    Raises:
        ValueError: unsupported extension, subtype, shape or sample rate.
        AudioContentError: NaN/Inf samples or zero frames.
        AudioEncodeError: libsndfile refused to encode (e.g. more than 8 channels for FLAC).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot write '{path.suffix}', expected one of {sorted(_WRITE_FORMATS)}")
    subtype = subtype or "PCM_16"
    if not sf.check_format(fmt, subtype):
        raise ValueError(
            f"{path}: subtype {subtype!r} is not valid for {fmt}, "
            f"expected one of {sorted(sf.available_subtypes(fmt))}"
        )
    if sample_rate <= 0:
        raise ValueError(f"{path}: sample_rate must be positive, got {sample_rate}")
    check_tags(tags)
    if wav.ndim == 1:
        wav = wav.unsqueeze(0)
    if wav.ndim != 2:
        raise ValueError(f"{path}: expected wav [C, T] or [T], got shape {tuple(wav.shape)}")
    if not torch.is_floating_point(wav):
        raise ValueError(f"{path}: expected floating-point samples, got dtype {wav.dtype}")
    if wav.shape[-1] == 0:
        raise AudioContentError(path, "refusing to write zero frames of audio")
    data = wav.detach().to(device="cpu", dtype=torch.float32).numpy().T
    if not np.isfinite(data).all():
        raise AudioContentError(path, "refusing to write non-finite (NaN/Inf) samples")
    data = np.ascontiguousarray(np.clip(data, -1.0, 1.0))

    # atomic_path creates its temporary with O_EXCL under a random name (mkstemp), so concurrent writers never
    # share or clobber one; the finished file gets mode 0o644 like every file the package writes.
    try:
        with atomic_path(path) as temp:
            write_tagged(temp, data, sample_rate, fmt, subtype, tags)
    except sf.LibsndfileError as error:
        raise AudioEncodeError(
            path, f"libsndfile could not encode {fmt}/{subtype}: {_libsndfile_message(error)}"
        ) from error
    return path
