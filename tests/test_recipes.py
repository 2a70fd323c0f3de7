"""Every recipe composes, and its parts instantiate with sizes linked by interpolation."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.build import build_model
from audiodiff.config import CONF_DIR, compose_config

RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))


def test_recipes_are_found():
    assert {"sfx", "sfx_quick", "sfx_long", "music", "debug"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_instantiates(recipe):
    cfg = compose_config("train", [f"recipe={recipe}"])
    assert OmegaConf.missing_keys(cfg) == set(), "only user-supplied values may be ???"
    assert cfg.name == recipe
    assert cfg.run_dir == f"runs/{recipe}/seed0"
    assert cfg.data.sample_rate == cfg.representation.sample_rate
    assert cfg.vocoder.n_fft == cfg.representation.n_fft
    model = build_model(cfg)
    assert model.net.in_channels == model.representation.latent_channels
    dm = instantiate(cfg.data)
    assert dm is not None
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps


def test_recipes_hold_only_what_differs():
    for recipe in RECIPES:
        text = (CONF_DIR / "recipe" / f"{recipe}.yaml").read_text()
        assert "_target_" not in text, f"{recipe}: a recipe overrides values; targets live in the groups"


def test_conf_dir_is_the_repository_conf():
    assert (CONF_DIR / "train.yaml").is_file()
    assert (Path(__file__).parents[1] / "conf" / "train.yaml").resolve() == (CONF_DIR / "train.yaml").resolve()
