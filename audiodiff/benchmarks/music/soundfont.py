"""Rendering General MIDI with a SoundFont through the FluidSynth command-line program.

FluidSynth renders offline (``-F``), with no audio or MIDI driver, and is deterministic: the same MIDI
file, SoundFont and settings give the same samples. Chorus is switched off; reverb (a fixed Freeverb) stays.

On Debian/Ubuntu: ``apt-get install fluidsynth timgm6mb-soundfont``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

# Where Debian's `timgm6mb-soundfont` (and a few other distributions) put TimGM6mb.
TIMGM6MB_PATHS: tuple[str, ...] = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/TimGM6mb.sf2",
    "/usr/local/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/local/share/soundfonts/TimGM6mb.sf2",
)
SOUNDFONT_LICENSES: dict[str, str] = {"TimGM6mb.sf2": "GPL-2.0-only"}  # Debian copyright: GPL-2
# FluidSynth synthesises at this rate; the result is resampled (soxr, high quality) to the requested rate.
# Rendering at 16 kHz directly would alias the upper partials of cymbals and bright samples.
SYNTHESIS_RATE = 32000


class SynthesisError(RuntimeError):
    """FluidSynth or the SoundFont is missing, or a render failed."""


def find_soundfont(path: str | Path | None = None) -> Path:
    """The SoundFont to render with: ``path`` if given, else TimGM6mb from its usual install locations.

    Raises:
        SynthesisError: the file is missing (naming the Debian package that provides TimGM6mb).
    """
    candidates = (path,) if path is not None else TIMGM6MB_PATHS
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise SynthesisError(
        f"SoundFont not found (looked at {looked}); install the Debian package 'timgm6mb-soundfont' "
        "(apt-get install timgm6mb-soundfont) or pass the path of a General MIDI .sf2 file"
    )


def find_fluidsynth(executable: str = "fluidsynth") -> Path:
    """Absolute path of the FluidSynth program.

    Raises:
        SynthesisError: not found on PATH (naming the Debian package).
    """
    found = shutil.which(executable)
    if found is None:
        raise SynthesisError(
            f"FluidSynth program {executable!r} not found on PATH; install the Debian package 'fluidsynth' "
            "(apt-get install fluidsynth)"
        )
    return Path(found)


def soundfont_license(soundfont: Path) -> str:
    """SPDX identifier of a known SoundFont's licence, or a pointer to its own terms."""
    return SOUNDFONT_LICENSES.get(soundfont.name, f"see the licence of {soundfont.name}")


def render_midi(
    midi: mido.MidiFile,
    *,
    soundfont: Path,
    sample_rate: int,
    fluidsynth: Path,
    gain: float = 0.4,
) -> np.ndarray:
    """Render a MIDI file to mono audio.

    Args:
        midi: the piece; rendered until its last voice has died away.
        soundfont: a General MIDI ``.sf2`` file.
        sample_rate: output rate in Hz.
        fluidsynth: the program (see :func:`find_fluidsynth`).
        gain: FluidSynth master gain (its default 0.2 is quiet; callers normalise loudness anyway).

    Returns:
        wav: [T] float32 at ``sample_rate`` Hz, the average of FluidSynth's two channels.

    Raises:
        SynthesisError: FluidSynth failed or wrote no audio (its stderr is included).
    """
    with tempfile.TemporaryDirectory(prefix="audiodiff-midi-") as tmp:
        mid_path, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        midi.save(mid_path)
        command = [
            str(fluidsynth), "-n", "-i", "-q",
            "-R", "1", "-C", "0",
            "-g", f"{gain:g}",
            "-r", str(SYNTHESIS_RATE),
            "-T", "wav", "-O", "float",
            "-F", str(wav_path),
            str(soundfont), str(mid_path),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav_path.is_file() or wav_path.stat().st_size == 0:
            raise SynthesisError(
                f"fluidsynth failed (exit {result.returncode}) rendering with {soundfont}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        stereo, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    mono = stereo.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
