"""Recipes as stages: `python -m audiodiff.train recipe=<name>` runs every unfinished stage of the recipe in order.

A recipe lists its stages (`stages: [vocoder, diffusion]`); each stage has a runner that trains (or resumes) it and
ends by writing `<stage run dir>/export/export.json`, which marks it finished. Rerunning the command skips finished
stages and resumes the unfinished one from its last checkpoint; `stage=<name>` runs that stage alone (again, if it
had finished: its runner resumes and re-exports). A recipe sets a stage's values with `stage_settings.<stage>`, a
node merged over `conf/stage/<stage>.yaml` when that stage runs (the command's own `stage.*` overrides still win),
and its config-group choices with `stage_groups.<stage>`, e.g. the diffusion stage's `{vocoder: trained}`, which
loads the vocoder the earlier stage exported. A stage whose export can go
stale has a check in STAGE_CURRENT: the encode stage's latent cache is rebuilt when the representation or the data
changed, even though it exported, and a diffusion stage trained on the old cache then stops with a message instead
of being skipped.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from audiodiff.utils.paths import CONF_DIR

log = logging.getLogger(__name__)

# stage name → "module:function" taking the stage's composed configuration and returning its run directory.
STAGE_RUNNERS: dict[str, str] = {
    "vocoder": "audiodiff.training.vocoder.run:train_vocoder",
    "autoencoder": "audiodiff.training.autoencoder.run:train_autoencoder",
    "diffusion": "audiodiff.training.diffusion.run:train",
    "embedder": "audiodiff.training.stages:train_recipe_embedder",
    "encode": "audiodiff.training.encode:encode_latents",
    "distill": "audiodiff.training.distill:train_distill",
}

# stage name → "module:function" telling whether a stage that exported still matches its composed configuration
# (stages not listed always do): a latent cache is stale once the representation or the data change.
STAGE_CURRENT: dict[str, str] = {
    "encode": "audiodiff.training.encode:is_current",
    "diffusion": "audiodiff.training.diffusion.run:is_current",
    "distill": "audiodiff.training.distill:is_current",
}


def _function(spec: str) -> Callable:
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def stage_runner(name: str) -> Callable[[DictConfig], Path]:
    """The training function of stage `name`."""
    if name not in STAGE_RUNNERS:
        raise ValueError(f"stage: unknown {name!r}; expected one of {sorted(STAGE_RUNNERS)}")
    return _function(STAGE_RUNNERS[name])


def stage_dir(cfg: DictConfig) -> Path:
    """Run directory of the stage `cfg` was composed for: `stage.run_dir` where the stage sets one, else `run_dir`."""
    stage = cfg.get("stage")
    return Path(stage.run_dir) if stage is not None and stage.get("run_dir") else Path(cfg.run_dir)


def is_finished(cfg: DictConfig, name: str | None = None) -> bool:
    """Whether the stage `cfg` was composed for has exported (its export folder is written last and atomically)
    after reaching its `max_steps` (a stage `trainer.max_time` stopped earlier is unfinished: the same command
    continues it) and, for a stage `name` listed in STAGE_CURRENT, whether what it exported still matches `cfg`."""
    record = stage_dir(cfg) / "export" / "export.json"
    if not record.is_file():
        return False
    step, max_steps = json.loads(record.read_text()).get("global_step"), stage_max_steps(cfg)
    if step is not None and max_steps is not None and 0 <= step < max_steps:
        log.info("stage %s stopped at step %d of %d (trainer.max_time): unfinished", name or "", step, max_steps)
        return False
    return name not in STAGE_CURRENT or bool(_function(STAGE_CURRENT[name])(cfg))


def stage_max_steps(cfg: DictConfig) -> int | None:
    """The optimizer steps the stage trains for: the run's `trainer.max_steps` for the diffusion stage (an empty
    `stage` node) and a stage whose `trainer` node does not set them, `stage.trainer.max_steps` where it does; None
    for a stage that trains no run trainer (encode, embedder) or has no step limit (-1)."""
    stage = cfg.get("stage")
    if stage and stage.get("trainer") is None:
        return None
    steps = ((stage or {}).get("trainer") or {}).get("max_steps", cfg.trainer.get("max_steps"))
    return int(steps) if steps is not None and int(steps) >= 0 else None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# `stage.<key>` nodes merged over the run's `<key>` node by the stage runners (conf/stage/*.yaml).
MERGED_OVER_GROUP = ("data", "trainer")


def stage_overrides(overrides: list[str], cfg: DictConfig, name: str) -> list[str]:
    """The command's overrides for stage `name`: `stage=<name>` plus the recipe's `stage_groups[name]` choices
    ({group: option}), which win over the command's for the same group. An option of null makes no choice (a
    recipe undoes a choice it inherits), leaving the group to the command and the recipe's defaults."""
    groups = (cfg.get("stage_groups") or {}).get(name) or {}
    extra = [f"{group}={option}" for group, option in groups.items() if option is not None]
    taken = {_key(o) for o in extra} | {"stage"}
    return [o for o in overrides if _key(o) not in taken] + [f"stage={name}", *extra]


def compose_stage(overrides: list[str], cfg: DictConfig, name: str) -> DictConfig:
    """The configuration stage `name` runs with: the command's overrides with the stage's group choices
    (`stage_overrides`), then `stage_settings[name]` merged over the `stage` node, then the command's own `stage.*`
    values again, so that the command wins. A setting the stage does not have is refused, naming it."""
    stage_cfg = _compose(stage_overrides(overrides, cfg, name))
    settings = (cfg.get("stage_settings") or {}).get(name)
    if not settings:
        return stage_cfg
    command = OmegaConf.from_dotlist([o[len("stage."):] for o in overrides if o.startswith("stage.")])
    for key in MERGED_OVER_GROUP:  # these take any key of the group they are merged over, checked there
        if OmegaConf.is_dict(stage_cfg.stage.get(key)):
            OmegaConf.set_struct(stage_cfg.stage[key], False)
    try:
        stage_cfg.stage = OmegaConf.merge(stage_cfg.stage, settings, command)
    except OmegaConfBaseException as err:
        raise ValueError(f"stage_settings.{name}: {' '.join(str(err).split())} (the settings of "
                         f"conf/stage/{name}.yaml)") from err
    return stage_cfg


def _compose(overrides: list[str], name: str = "train") -> DictConfig:
    """conf/<name>.yaml with `overrides`, inside a running Hydra application or outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def train_recipe_embedder(cfg: DictConfig) -> Path:
    """The embedder stage: the contrastive audio–text model of `audiodiff.evaluation.embedders.contrastive`
    (conf/embedder.yaml) trained on the recipe's own data into `stage.run_dir`, for offline FAD, near copies and
    text scores."""
    from audiodiff.training.embedder.run import train_embedder

    data = cfg.data
    source = [f"data={data.corpus}"] if data.get("corpus") else ["data=manifest", f"data.manifest={data.manifest}"]
    overrides = [*source, f"data.root={data.root}", f"run_dir={cfg.stage.run_dir}", f"seed={cfg.seed}",
                 f"name={cfg.name}_embedder", *[str(o) for o in cfg.stage.overrides]]
    return train_embedder(_compose(overrides, "embedder"))


def run_stages(overrides: list[str]) -> list[Path]:
    """Run the stages the command asks for (see the module docstring); returns the run directories of the stages
    that ran. Stops after a stage that did not finish (a signal stopped it): the same command resumes it."""
    cfg = _compose(overrides)
    if cfg.get("init"):
        from audiodiff.training.finetune import check_overrides

        check_overrides(overrides)
    stages = [str(s) for s in cfg.stages]
    for name in stages:
        stage_runner(name)  # unknown stages fail before anything trains
    asked = [o.split("=", 1)[1] for o in overrides if _key(o) == "stage"]
    if asked and asked[-1] not in stages:
        raise ValueError(f"stage={asked[-1]}: recipe {cfg.name!r} has the stages {stages}")
    ran = []
    for name in asked[-1:] or stages:
        stage_cfg = compose_stage(overrides, cfg, name)
        # Checked when the stage's turn comes, after the stages before it ran: a retrained autoencoder makes the
        # encode stage's cache stale.
        if not asked and is_finished(stage_cfg, name):
            log.info("stage %s: finished already", name)
            continue
        log.info("stage %s: %s", name, stage_dir(stage_cfg))
        ran.append(stage_runner(name)(stage_cfg))
        if not is_finished(stage_cfg):
            log.info("stage %s stopped before finishing; rerun the same command to resume it", name)
            break
    return ran
