"""The reconstruction table: systems by name, exact rebuilds score zero, Griffin-Lim scores what it should."""

from __future__ import annotations

import pytest
import torch

from audiodiff import cli
from audiodiff.evaluation import reconstruction
from audiodiff.evaluation.reconstruction import (
    build_system,
    griffinlim_system,
    markdown,
    score_system,
    systems_setting,
)


def _clips() -> list[torch.Tensor]:
    t = torch.arange(12000) / 16000
    return [(0.3 * torch.sin(2 * torch.pi * f * t))[None, None] for f in (330.0, 1200.0)]


def test_an_exact_rebuild_scores_zero_and_griffinlim_does_not() -> None:
    clips = _clips()
    exact = score_system(lambda wav: wav, clips)
    assert exact["mel_l1"] == pytest.approx(0.0, abs=1e-6) and exact["stft_distance"] == pytest.approx(0.0, abs=1e-6)
    griffinlim = score_system(griffinlim_system(), clips)
    assert 0.0 < griffinlim["mel_l1"] < 1.0 and griffinlim["stft_distance"] > 0.0
    silence = score_system(lambda wav: torch.zeros_like(wav), clips)
    assert silence["mel_l1"] > 5 * griffinlim["mel_l1"]
    # From the clip's own magnitude Griffin-Lim does better than from the mel's inverse.
    from_stft = score_system(build_system("griffinlim:stft"), clips)
    assert from_stft["stft_distance"] < griffinlim["stft_distance"]


def test_systems_are_named_clearly_and_the_table_lists_them() -> None:
    with pytest.raises(ValueError, match=r"vocoder:<folder> or autoencoder:<folder>, got .hifigan."):
        build_system("hifigan")
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        build_system("vocoder:/nonexistent/export")
    table = markdown({"griffinlim": {"mel_l1": 0.1, "stft_distance": 0.5, "seconds": 3.0}}, 2)
    assert table.splitlines()[2] == "| griffinlim | 0.100 | 0.500 | 3 |"


def _run(argv: list[str]) -> int:
    return cli.run("audiodiff.evaluation.reconstruction", "reconstruction", reconstruction.main, reconstruction.__doc__,
                   argv)


def test_command_help_lists_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.evaluation.reconstruction [key=value ...]" in out
    for setting in ("corpus: sfx", "root: data", "split: test", "'n': 100", "systems:\n- griffinlim", "out: null"):
        assert setting in out, out


@pytest.mark.parametrize(("argv", "message"), [
    (["n=abc"], "error: n: expected a whole number, got 'abc'"),
    (["n=0"], "error: n: expected a whole number >= 1, got 0"),
    (["systems=[]"], "error: systems: expected at least one system, got none"),
    (["sytems=[griffinlim]"], "error: Could not override 'sytems'"),
])
def test_command_bad_values_end_in_one_error_line(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message), captured.err
    assert "Traceback" not in captured.err + captured.out


def test_systems_setting_takes_a_list_or_a_comma_separated_string() -> None:
    assert systems_setting(["griffinlim", " vocoder:a/b "]) == ["griffinlim", "vocoder:a/b"]
    assert systems_setting("[griffinlim,griffinlim:stft]") == ["griffinlim", "griffinlim:stft"]
    with pytest.raises(ValueError, match="systems: expected a list"):
        systems_setting(3)
