"""The one command-line style of every entry point: `python -m audiodiff.<tool> [key=value ...]`.

Each tool has a configuration `conf/<tool>.yaml`; its arguments are Hydra overrides of it (`key=value`,
`+key=value`, `group=option`), and `recipe=<name>` always names a training recipe (`conf/recipe/<name>.yaml`).
`--help` prints what the tool does and every setting with its default, then exits 0. A user error (a missing model,
a bad override, a malformed file) prints one line, `error: ...`, and exits 1; `--debug` (or `HYDRA_FULL_ERROR=1`)
shows the traceback instead. Only entry points import this module.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiodiff.config import CONF_DIR, compose_config

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# Errors a user causes (input, files, settings); anything else is reported as an internal error.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, LookupError, TypeError)


class UsageError(ValueError):
    """A command line the tool cannot take (raised before any work)."""


def recipes() -> list[str]:
    """The names of the training recipes (`conf/recipe/*.yaml`)."""
    return sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))


def check_recipe(name: str) -> str:
    """`name` if it is a training recipe, else UsageError listing them."""
    if name not in recipes():
        raise UsageError(f"recipe={name}: no such recipe; expected one of {recipes()}")
    return name


def split_recipe(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the recipe `recipe=` names, or None; the other overrides). For configurations that are not training's,
    where `recipe` is a plain setting and not the config group of conf/recipe/."""
    names = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "recipe"]
    rest = [o for o in overrides if o.split("=", 1)[0] != "recipe"]
    return (check_recipe(names[-1]) if names else None), rest


def recipe_run_dir(name: str, overrides: Sequence[str] = ()) -> Path:
    """The run directory `python -m audiodiff.train recipe=<name> [overrides]` trains into."""
    return Path(compose_config("train", [f"recipe={name}", *overrides]).run_dir)


def _help(tool: str, config_name: str, doc: str, overrides: list[str]) -> str:
    cfg = compose_config(config_name, overrides)
    settings = OmegaConf.to_yaml(cfg, resolve=False).rstrip()
    return (f"{(doc or '').strip()}\n\nusage: python -m {tool} [key=value ...] [--debug] [--help]\n\n"
            f"Settings (conf/{config_name}.yaml; ??? must be given):\n{settings}\n")


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`; UsageError for a malformed override, an unknown key or group
    option, or a required (`???`) setting left unset."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise UsageError(f"expected key=value arguments, got {bad} (see --help)")
    try:
        cfg = compose_config(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split("Config search path")[0].split())
        raise UsageError(f"{message} (see --help for the settings)") from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UsageError(f"required setting(s) not given: {', '.join(f'{k}=...' for k in missing)}")
    return cfg


def run(tool: str, config_name: str, task: Callable[[DictConfig, list[str]], Any], doc: str | None,
        argv: Sequence[str] | None = None) -> int:
    """Run `task(cfg, overrides)` for `python -m <tool> argv...` as the module docstring says; returns the exit
    status: the int `task` returns (0 when it returns anything else), 1 for an error, 130 when interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HYDRA_FULL_ERROR") == "1"
    overrides = [a for a in args if a not in ("--debug", "--help", "-h")]
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    try:
        if "--help" in args or "-h" in args:
            print(_help(tool, config_name, doc or "", [o for o in overrides if "=" in o]))
            return 0
        unknown = [a for a in overrides if a.startswith("-")]
        if unknown:
            raise UsageError(f"unknown option(s) {unknown}; options are --help and --debug, settings are key=value")
        if config_name != "train":
            # The training configuration composes recipes as its `recipe` group; elsewhere `recipe=` is a setting.
            recipe, rest = split_recipe(overrides)
            cfg = compose(config_name, rest)
            if recipe is not None:
                if "recipe" not in cfg:
                    raise UsageError(f"{tool} takes no recipe= (see --help)")
                cfg.recipe = recipe
        else:
            for name in [o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")]:
                check_recipe(name)
            cfg = compose(config_name, overrides)
        status = task(cfg, overrides)  # a task may return its own exit status
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error ends in one line unless --debug
        if debug:
            raise
        kind = "" if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: "
        message = str(err) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err)
        print(f"error: {kind}{message}", file=sys.stderr)
        if kind:
            print("(an internal error: --debug shows the traceback; please report it)", file=sys.stderr)
        return 1


def main(tool: str, config_name: str, task: Callable[[DictConfig, list[str]], Any], doc: str | None) -> None:
    """`run` with the process's arguments, exiting with its status (the body of an entry module's __main__)."""
    raise SystemExit(run(tool, config_name, task, doc))
