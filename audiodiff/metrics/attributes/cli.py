"""`key=value` command-line arguments for the attribute scripts."""

from __future__ import annotations


def parse_overrides(argv: list[str], defaults: dict[str, object]) -> dict[str, object]:
    """`key=value` arguments over `defaults`, each converted to its default's type.

    Raises SystemExit with a message naming the argument for an unknown key, a missing `=`, or a value that
    does not convert (booleans take true/false).
    """
    out = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"expected key=value with key in {sorted(defaults)}, got {arg!r}")
        default = defaults[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"{key}: expected true or false, got {value!r}")
            out[key] = value.lower() == "true"
            continue
        try:
            out[key] = type(default)(value)
        except ValueError:
            raise SystemExit(f"{key}: expected {type(default).__name__}, got {value!r}") from None
    return out
