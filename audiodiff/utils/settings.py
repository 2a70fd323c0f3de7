"""Checked reads of a command-line tool's settings, for the task functions the entry points run.

A task gets its settings as `cfg` (conf/<tool>.yaml with the user's `key=value` overrides; anything with `.get`).
These read one setting each and raise ValueError naming the key and the value when it has the wrong type, which the
command-line runner (:mod:`audiodiff.cli`) turns into one `error: ...` line. No Hydra or OmegaConf import here: library
modules use this, and only entry points import the runner.
"""

from __future__ import annotations

from typing import Any


def _value(cfg: Any, key: str) -> Any:
    return cfg.get(key)


def whole(cfg: Any, key: str, *, minimum: int | None = None) -> int | None:
    """Setting `key` as an int (None stays None); ValueError unless it is a whole number >= `minimum`."""
    value = _value(cfg, key)
    if value is None:
        return None
    try:
        ok = not isinstance(value, bool) and int(value) == float(value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{key}: expected a whole number, got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise ValueError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return int(value)


def number(cfg: Any, key: str, *, minimum: float | None = None) -> float | None:
    """Setting `key` as a float (None stays None); ValueError unless it is a number >= `minimum`."""
    value = _value(cfg, key)
    if value is None:
        return None
    try:
        ok = not isinstance(value, bool) and float(value) == float(value)  # NaN is no number here
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if minimum is not None and float(value) < minimum:
        raise ValueError(f"{key}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def flag(cfg: Any, key: str) -> bool:
    """Setting `key` as a bool; ValueError unless it is true or false."""
    value = _value(cfg, key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key}: expected true or false, got {value!r}")


def text(cfg: Any, key: str, *, required: bool = False) -> str | None:
    """Setting `key` as a string (a path, a name); None (or an empty value) stays None, unless `required`."""
    value = _value(cfg, key)
    if value is None or value == "":
        if required:
            raise ValueError(f"{key}: expected a value ({key}=...), got none")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{key}: expected a single value, got {value!r}")
    return str(value)
