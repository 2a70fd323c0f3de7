"""`python -m audiodiff.train recipe=<name> [overrides]`: compose the configuration and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from audiodiff.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from audiodiff.training import train

    train(cfg)


if __name__ == "__main__":
    main()
