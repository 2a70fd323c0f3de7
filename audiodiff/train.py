"""`python -m audiodiff.train recipe=<name> [stage=<name>] [overrides]`: compose the configuration and run the
recipe's unfinished stages in order (`audiodiff.stages`), or the one `stage=` names."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from audiodiff.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from audiodiff.stages import run_stages

    run_stages(list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
