"""Every recipe composes, and its parts instantiate with sizes linked by interpolation."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.config import CONF_DIR, compose_config
from audiodiff.models.build import build_model
from audiodiff.models.model import SamplerSettings

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
    if cfg.trainer.accelerator == "gpu":  # GPU-sized models: the memory estimate stands in for building them
        from bench.train_memory import estimate

        assert estimate(cfg)["total"] < 22.0, "the preset must leave room for activations within 24 GB"
        return
    model = build_model(cfg)
    assert model.net.in_channels == model.representation.latent_channels
    dm = instantiate(cfg.data)
    assert dm is not None
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("recipe", ["music_quick", "music_long"])
def test_music_recipes_are_timing_conditioned(recipe):
    """Music clips (4-10 s) are padded to the 8 s window: without the clip's length the model learns the padding
    and ends clips early (recipes/music/README.md); with it the denoiser gets (seconds start, seconds total)."""
    model = build_model(compose_config("train", [f"recipe={recipe}"]))
    assert model.timing is not None and model.net.global_dim == model.timing.dim
    assert model.fixed_window and model.max_duration == model.duration == 8.0, "it samples its window, told the length"


def test_recipes_hold_only_what_differs():
    for recipe in RECIPES:
        text = (CONF_DIR / "recipe" / f"{recipe}.yaml").read_text()
        assert "_target_" not in text, f"{recipe}: a recipe overrides values; targets live in the groups"


def test_conf_dir_is_the_repository_conf():
    assert (CONF_DIR / "train.yaml").is_file()
    assert (Path(__file__).parents[1] / "conf" / "train.yaml").resolve() == (CONF_DIR / "train.yaml").resolve()


GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("diffusion", "sampler", "denoiser")}


def test_groups_hold_the_documented_choices():
    assert {"flow_x0", "flow_v", "vp_eps", "vp_v", "edm"} <= set(GROUPS["diffusion"])
    assert {"flow_euler", "flow_heun", "euler", "heun", "ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde"} <= set(
        GROUPS["sampler"])
    assert {"unet1d", "unet1d_tiny", "dit", "dit_tiny", "dit_1b"} <= set(GROUPS["denoiser"])


@pytest.mark.parametrize("denoiser", ["unet1d_tiny", "dit_tiny"])
@pytest.mark.parametrize("diffusion", GROUPS["diffusion"])
def test_every_objective_trains_and_samples_with_every_sampler(diffusion, denoiser):
    """Each objective × denoiser gives a finite loss with gradients, then every sampler group generates audio."""
    cfg = compose_config("train", ["recipe=debug", f"diffusion={diffusion}", f"denoiser={denoiser}"])
    model = build_model(cfg)
    z = torch.randn(2, model.representation.latent_channels, 16)
    loss = model.objective.loss(model.net, z, model.encode_text(["two beeps", ""]))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.net.parameters())
    for sampler in GROUPS["sampler"]:
        sampler_cfg = compose_config("train", ["recipe=debug", f"sampler={sampler}"]).sampler
        settings = SamplerSettings(**{**OmegaConf.to_container(sampler_cfg, resolve=True), "steps": 2})
        wav = model.generate(["two beeps"], duration=0.25, settings=settings, seed=0)
        assert wav.shape == (1, 1, 4000) and torch.isfinite(wav).all(), (diffusion, denoiser, sampler)


@pytest.mark.parametrize("preset,nodes", [("ddp", 1), ("multinode", 2)])
def test_ddp_presets_build_a_ddp_trainer(preset, nodes):
    """A dry run on CPU with two devices: the Trainer gets DDP and the node count (nothing is launched)."""
    cfg = compose_config("train", ["recipe=debug", f"trainer={preset}", "trainer.accelerator=cpu",
                                   "trainer.devices=2", "trainer.precision=32-true"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert trainer.num_devices == 2 and trainer.num_nodes == nodes


def test_fsdp_preset_shards_per_transformer_block():
    from lightning.pytorch.strategies import FSDPStrategy

    from audiodiff.denoisers.dit import DiTBlock

    cfg = compose_config("train", ["recipe=debug", "trainer=fsdp"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = instantiate(cfg.trainer.strategy)  # FSDP needs CUDA to run, not to be configured
    assert isinstance(strategy, FSDPStrategy)
    assert DiTBlock in strategy.kwargs["auto_wrap_policy"]._module_classes


def test_slurm_preset_requeues_on_sigusr1():
    import signal

    cfg = compose_config("train", ["recipe=debug", "trainer=slurm"])
    (env,) = instantiate(cfg.trainer.plugins)
    assert type(env).__name__ == "SLURMEnvironment" and env.auto_requeue
    assert env.requeue_signal == signal.SIGUSR1 and cfg.trainer.strategy == "ddp"


def test_compile_switch_compiles_the_denoiser_in_place():
    from audiodiff.training.diffusion.task import DiffusionTask

    cfg = compose_config("train", ["recipe=debug", "task.compile=true"])
    model = build_model(cfg)
    names = list(model.net.state_dict())
    task = DiffusionTask(model, optimizer=instantiate(cfg.optim), **cfg.task)
    assert task.model.net._compiled_call_impl is not None
    assert list(task.model.net.state_dict()) == names  # checkpoints keep their keys
