"""`python -m audiodiff.train recipe=<name> [stage=<name>] [overrides]`: compose the configuration and run the
recipe's unfinished stages in order (`audiodiff.training.stages`), or the one `stage=` names."""

from __future__ import annotations

from omegaconf import DictConfig

from audiodiff import cli


def train(cfg: DictConfig, overrides: list[str]) -> None:
    from audiodiff.training.stages import run_stages

    run_stages(overrides)


if __name__ == "__main__":
    cli.main("audiodiff.train", "train", train, __doc__)
