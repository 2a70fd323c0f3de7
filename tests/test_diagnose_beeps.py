"""recipes/sfx/diagnose_beeps.py: the per-event levels and pitches it reads from a clip."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from audiodiff.benchmarks.sfx.corpus import synthesize

SCRIPT = Path(__file__).parents[1] / "recipes" / "sfx" / "diagnose_beeps.py"


@pytest.fixture(scope="module")
def diagnose() -> ModuleType:
    spec = importlib.util.spec_from_file_location("diagnose_beeps", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_beeps_are_equal_events_of_one_pitch(diagnose: ModuleType) -> None:
    wav = synthesize({"kind": "beeps", "pitch": "high", "count": 3, "loudness": "loud"}, np.random.default_rng(3))
    found = diagnose.events(wav)
    assert len(found) == 3
    assert all(level > -3.0 for level, _ in found)
    pitches = [hz for _, hz in found]
    assert 1100.0 - 16 <= min(pitches) and max(pitches) <= 1900.0 + 16  # within one STFT bin of the register
    assert max(pitches) - min(pitches) <= 16.0  # one pitch for every beep
    row = diagnose.summarise([wav])
    assert row["spread"] < 0.3 and row["after_db"] > -3.0 and row["read"] == {"beeps 3": 1}


def test_a_faded_beep_is_found_and_reported_below_the_loudest(diagnose: ModuleType) -> None:
    sr = 16000
    t = np.arange(int(0.15 * sr)) / sr
    beep = np.sin(2 * np.pi * 1500.0 * t)
    wav = np.zeros(2 * sr)
    for onset, gain in ((0.2, 1.0), (0.7, 0.1), (1.2, 1.0)):  # the middle beep 20 dB down
        wav[int(onset * sr):int(onset * sr) + beep.size] += gain * beep
    levels = [level for level, _ in diagnose.events(wav.astype(np.float32))]
    assert len(levels) == 3
    assert levels[1] == pytest.approx(-20.0, abs=1.0)
    assert diagnose.summarise([wav.astype(np.float32)])["after_db"] == pytest.approx(-10.0, abs=1.0)
