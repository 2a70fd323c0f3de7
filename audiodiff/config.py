"""Where the Hydra configuration lives, and helpers to compose it outside an entry point."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from audiodiff.utils.paths import CONF_DIR

__all__ = ["CONF_DIR", "compose_config"]


def compose_config(name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/<name>.yaml` with command-line style overrides, as the entry points do."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])
