"""A run says what it will cost once its speed is measured, stops before days are spent on a machine that cannot
finish it, and a stage that ran out of time is continued by the same command."""

import json
import logging

import pytest

from audiodiff import cli, train
from audiodiff.benchmarks import ensure_corpus
from audiodiff.training.forecast import Forecast, RunForecast, RunTooLongError, describe_duration
from audiodiff.training.stages import run_stages


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    return root


def test_forecast_arithmetic():
    short = Forecast(steps_per_second=3.0, step=100, max_steps=4500, seconds_left=800.0)
    assert short.reached == 100 + 2400 and short.seconds_to_finish == pytest.approx(4400 / 3)
    assert Forecast(3.0, 100, 4500, 10_000.0).reached == 4500  # capped at max_steps
    assert Forecast(3.0, 100, 4500, None).reached is None
    assert Forecast(3.0, 100, -1, None).seconds_to_finish is None
    assert [describe_duration(s) for s in (40, 840, 7500)] == ["40 s", "14 min", "2 h 05 min"]


def test_a_run_that_will_stop_short_says_so_once(caplog):
    forecast = RunForecast("sfx_quick: diffusion stage", short_note="expect lower accuracy")
    with caplog.at_level(logging.INFO):
        forecast.report(Forecast(2.85, 300, 4500, 860.0))
    assert "will stop at ~2,751 of 4,500 steps" in caplog.text
    assert "expect lower accuracy" in caplog.text and "larger trainer.max_time" in caplog.text


def test_a_run_that_fits_its_time_says_when_it_ends(caplog):
    with caplog.at_level(logging.INFO):
        RunForecast("sfx_quick: diffusion stage").report(Forecast(7.0, 300, 4500, 860.0))
    assert "reaches its 4,500 steps in 10 min, within trainer.max_time" in caplog.text


def test_a_run_of_days_without_a_time_limit_stops_naming_the_cpu_presets():
    forecast = RunForecast("music: vocoder stage", cpu_presets=["music_quick", "music_long"])
    with pytest.raises(RunTooLongError, match=r"100,000 steps would take 69 h 26 min .* music_quick, music_long"):
        forecast.report(Forecast(0.4, 10, 100_000, None))
    RunForecast("music: vocoder stage", allow_long=True).report(Forecast(0.4, 10, 100_000, None))  # goes on


def test_the_command_stops_with_the_estimate(root, tmp_path, capsys):
    argv = ["recipe=debug", f"data.root={root}", f"run_dir={tmp_path / 'run'}", "trainer.max_steps=40",
            "trainer.val_check_interval=40", "budget.measure_seconds=0.2", "budget.max_hours=1e-6",
            "+budget.cpu_presets=[sfx_quick]"]
    assert cli.run("audiodiff.train", "train", train.train, "", argv) == 1
    err = capsys.readouterr().err
    assert "error: debug: diffusion stage: at the measured" in err and "budget.allow_long=true" in err
    assert "Traceback" not in err


def test_a_stage_stopped_short_is_continued_by_the_same_command(root, tmp_path):
    command = ["recipe=debug", f"data.root={root}", f"run_dir={tmp_path / 'run'}"]
    assert run_stages([*command, "trainer.max_steps=2"]) == [tmp_path / "run"]
    record = tmp_path / "run" / "export" / "export.json"
    assert json.loads(record.read_text())["global_step"] == 2
    # What a max_time stop leaves: an export short of max_steps. The same command with a larger budget continues.
    assert run_stages([*command, "trainer.max_steps=4"]) == [tmp_path / "run"]
    assert json.loads(record.read_text())["global_step"] == 4
    assert run_stages([*command, "trainer.max_steps=4"]) == []  # finished now
