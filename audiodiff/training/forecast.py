"""What a run will cost, said once its speed is known: a forecast of the steps it reaches within `trainer.max_time`,
and a stop, before hours are spent, for a run that would take longer than a day with no time limit set (the staged
GPU recipes started on a CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

log = logging.getLogger(__name__)


class RunTooLongError(ValueError):
    """The measured speed says the run would take longer than its settings allow (a settings error: the user picks
    a CPU preset, a time limit, or allows it)."""


@dataclass(frozen=True)
class Forecast:
    """A run's measured speed and what follows from it."""

    steps_per_second: float
    step: int  # optimizer steps done when measured
    max_steps: int  # -1: no step limit
    seconds_left: float | None  # of trainer.max_time, None when no time limit is set

    @property
    def reached(self) -> int | None:
        """The step the run reaches when its time runs out (None: no time limit)."""
        if self.seconds_left is None:
            return None
        reach = self.step + int(self.steps_per_second * max(self.seconds_left, 0.0))
        return reach if self.max_steps < 0 else min(reach, self.max_steps)

    @property
    def seconds_to_finish(self) -> float | None:
        """Seconds to `max_steps` at this speed (None: no step limit)."""
        if self.max_steps < 0:
            return None
        return max(self.max_steps - self.step, 0) / self.steps_per_second


def describe_duration(seconds: float) -> str:
    """`seconds` as "2 h 05 min" or "14 min" or "40 s"."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


class RunForecast(L.Callback):
    """Measures optimizer steps per second over the first `measure_seconds` of training (after `skip_steps` warm-up
    steps) and then, once:

    - with `trainer.max_time` set: logs the step the run will reach and, when that is short of `max_steps`, warns
      that it will stop early, what that means (`short_note`), and that rerunning the command with a larger
      `trainer.max_time` continues it;
    - with no time limit: raises :class:`RunTooLongError` when reaching `max_steps` would take more than
      `max_hours`, naming the estimate and the `cpu_presets` that fit, unless `allow_long`.

    A resumed run measures its own speed again; the time limit counts the whole run (Lightning's Timer state is in
    the checkpoint).
    """

    def __init__(self, what: str, measure_seconds: float = 60.0, skip_steps: int = 5, max_hours: float = 24.0,
                 allow_long: bool = False, cpu_presets: Sequence[str] = (), short_note: str = "") -> None:
        if measure_seconds <= 0 or skip_steps < 0 or max_hours <= 0:
            raise ValueError(f"RunForecast: need measure_seconds > 0, skip_steps >= 0, max_hours > 0; got "
                             f"{measure_seconds}, {skip_steps}, {max_hours}")
        self.what = what
        self.measure_seconds = measure_seconds
        self.skip_steps = skip_steps
        self.max_hours = max_hours
        self.allow_long = allow_long
        self.cpu_presets = list(cpu_presets)
        self.short_note = short_note
        self.forecast: Forecast | None = None
        self._start: tuple[float, int] | None = None
        self._seen = 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.forecast is not None:
            return
        self._seen += 1
        now, step = time.perf_counter(), trainer.global_step
        if self._start is None:
            if self._seen > self.skip_steps:  # the clock starts after the warm-up steps
                self._start = (now, step)
            return
        if now - self._start[0] < self.measure_seconds or step <= self._start[1]:
            return
        rate = (step - self._start[1]) / (now - self._start[0])
        self.forecast = Forecast(rate, step, int(trainer.max_steps), _seconds_left(trainer))
        self.report(self.forecast)

    def report(self, forecast: Forecast) -> None:
        """Log (or raise) what `forecast` means for this run."""
        rate = f"{forecast.steps_per_second:.2f} steps/s"
        reached, finish = forecast.reached, forecast.seconds_to_finish
        if reached is not None:
            if forecast.max_steps >= 0 and reached < forecast.max_steps:
                log.warning("%s: at %s it will stop at ~%s of %s steps when trainer.max_time runs out%s; rerun the "
                            "same command with a larger trainer.max_time to continue it", self.what, rate,
                            f"{reached:,}", f"{forecast.max_steps:,}",
                            f" ({self.short_note})" if self.short_note else "")
            else:
                log.info("%s: at %s it reaches its %s steps in %s, within trainer.max_time", self.what, rate,
                         f"{forecast.max_steps:,}", describe_duration(finish or 0.0))
            return
        if finish is None:
            return
        log.info("%s: at %s the %s steps take %s", self.what, rate, f"{forecast.max_steps:,}",
                 describe_duration(finish))
        if finish > self.max_hours * 3600 and not self.allow_long:
            presets = (f"; the presets {', '.join(self.cpu_presets)} are made for a CPU" if self.cpu_presets
                       else "")
            raise RunTooLongError(
                f"{self.what}: at the measured {rate} its {forecast.max_steps:,} steps would take "
                f"{describe_duration(finish)} on this machine, more than budget.max_hours={self.max_hours:g}"
                f"{presets}; to go on anyway set budget.allow_long=true (or a trainer.max_time)")


def _seconds_left(trainer: L.Trainer) -> float | None:
    """Seconds of `trainer.max_time` left (None when no Timer limits the run)."""
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            duration = callback._duration  # seconds, or None
            if duration is None:
                return None
            remaining = callback.time_remaining("train")
            return float(remaining if remaining is not None else duration)
    return None



def run_forecast(cfg: Mapping[str, Any], what: str) -> RunForecast:
    """The forecast callback a run's `budget` settings describe (defaults where the configuration has none)."""
    return RunForecast(what, **(cfg.get("budget") or {}))
