"""Where the Hydra configuration lives, and helpers to compose it outside an entry point."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# In a checkout `audiodiff/conf` is a link to the repository's conf/; an installed package carries a copy.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/<name>.yaml` with command-line style overrides, as the entry points do."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])
