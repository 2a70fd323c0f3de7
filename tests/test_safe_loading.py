"""Loading a model folder or checkpoint builds only audiodiff's registered components: a crafted config that names
any other `_target_` is refused before it is imported, and the code it names never runs."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from audiodiff.config import compose_config
from audiodiff.models import registry
from audiodiff.models.build import build_model
from audiodiff.models.registry import (
    COMPONENTS,
    UnknownComponentError,
    build_component,
    component_kind,
    register_component,
)
from audiodiff.pipeline import AudioDiffusionPipeline, ModelLoadError
from audiodiff.training.checkpoints import export_run

FIXTURE = Path(__file__).parent / "fixtures" / "export_v0_1"
CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_GROUPS = ("representation", "vocoder", "denoiser", "diffusion", "text_encoder", "timing", "autoencoder")


def test_an_export_written_by_0_1_generates_the_audio_it_generated_then():
    """tests/fixtures/export_v0_1 was exported, and its audio generated (seed 0, 25 steps, guidance 3), by
    audiodiff 0.1.0 before the layered layout; the same request must give the same samples."""
    pipe = AudioDiffusionPipeline.from_pretrained(FIXTURE / "model", watermark=False)  # 0.1 wrote no mark
    audio = pipe(["three loud high-pitched beeps"], duration=1.0, steps=25, guidance=3.0, seed=0).audio
    expected = torch.from_numpy(np.load(FIXTURE / "audio_seed0_steps25.npy"))
    assert audio.shape == expected.shape
    # Bit-exact on the CPU that wrote it; another CPU's matmul kernels (AMX against AVX2) change the last float bits,
    # which 25 steps and Griffin-Lim grow to about 0.3% of the signal. Another model or setting moves it by far more.
    error = float((audio - expected).norm() / expected.norm())
    assert error < 1e-2, f"relative L2 error {error:.4f} against the samples 0.1 generated"


def test_every_model_target_in_conf_is_registered():
    for group in MODEL_GROUPS:
        for file in sorted((CONF / group).glob("*.yaml")):
            node = yaml.safe_load(file.read_text()) or {}
            target = node.get("_target_")
            if target is not None:
                assert component_kind(target) is not None, f"{file}: {target} is not a registered component"


def _crafted_export(tmp_path: Path, part: str, node: dict) -> Path:
    folder = tmp_path / "shared_model"
    folder.mkdir()
    config = yaml.safe_load((FIXTURE / "model" / "config.yaml").read_text())
    config[part] = node
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "model.safetensors").write_bytes((FIXTURE / "model" / "model.safetensors").read_bytes())
    return folder


@pytest.mark.parametrize("part", ["denoiser", "vocoder", "text_encoder", "diffusion"])
def test_a_crafted_export_config_is_refused_and_its_target_never_runs(tmp_path, part):
    witness = tmp_path / "ran"
    folder = _crafted_export(tmp_path, part, {"_target_": "os.system", "command": f"touch {witness}"})
    with pytest.raises(ModelLoadError, match=r"_target_ 'os.system' is not a registered audiodiff"):
        AudioDiffusionPipeline.from_pretrained(folder)
    assert not witness.exists()


def test_a_crafted_nested_target_is_refused(tmp_path):
    """A target hidden inside a registered component's arguments (Hydra builds nested nodes) is refused too."""
    witness = tmp_path / "ran"
    node = {"_target_": "audiodiff.representations.autoencoder.from_config",
            "autoencoder": {"_target_": "os.system", "command": f"touch {witness}"}, "sample_rate": 16000}
    folder = _crafted_export(tmp_path, "representation", node)
    with pytest.raises(ModelLoadError, match="representation.autoencoder: _target_ 'os.system'"):
        AudioDiffusionPipeline.from_pretrained(folder)
    assert not witness.exists()


def test_a_crafted_checkpoint_config_is_refused(tmp_path):
    witness = tmp_path / "ran"
    config = yaml.safe_load((FIXTURE / "model" / "config.yaml").read_text())
    config["denoiser"] = {"_target_": "subprocess.call", "args": ["touch", str(witness)]}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"audiodiff": {"config": config}, "state_dict": {"ema.average.w": torch.zeros(1)}}, ckpt)
    with pytest.raises(ModelLoadError, match="a training checkpoint .* export it first"):
        AudioDiffusionPipeline.from_pretrained(ckpt)  # the pipeline reads export folders only
    out = export_run(ckpt, tmp_path / "export")  # exporting copies the config; it builds nothing
    with pytest.raises(ModelLoadError, match="'subprocess.call' is not a registered audiodiff denoiser"):
        AudioDiffusionPipeline.from_pretrained(out)
    assert not witness.exists()


def test_converted_families_build_only_registered_components():
    """What the converters write (Stable Audio Open, Stable Audio 3) is on the allow-list, each of its own kind."""
    from audiodiff.conditioning.stable_audio import STABLE_AUDIO_CONDITIONING_TARGET
    from audiodiff.conditioning.stable_audio3 import STABLE_AUDIO3_CONDITIONING_TARGET
    from audiodiff.denoisers.stable_audio3_dit import STABLE_AUDIO3_DIT_TARGET
    from audiodiff.denoisers.stable_audio_dit import STABLE_AUDIO_DIT_TARGET
    from audiodiff.representations.oobleck import OOBLECK_REPRESENTATION_TARGET
    from audiodiff.representations.same import SAME_REPRESENTATION_TARGET

    for target, kind in ((STABLE_AUDIO_DIT_TARGET, "denoiser"), (STABLE_AUDIO3_DIT_TARGET, "denoiser"),
                         (OOBLECK_REPRESENTATION_TARGET, "representation"),
                         (SAME_REPRESENTATION_TARGET, "representation"),
                         (STABLE_AUDIO_CONDITIONING_TARGET, "timing"), (STABLE_AUDIO3_CONDITIONING_TARGET, "timing")):
        assert component_kind(target) == kind, target
    with pytest.raises(UnknownComponentError, match="not a registered audiodiff denoiser"):
        build_component({"_target_": "audiodiff.autoencoders.same.SAME"}, "denoiser", "denoiser")


def test_a_registered_component_of_another_kind_is_refused():
    """A denoiser node cannot build a vocoder, even a registered one."""
    node = {"_target_": "audiodiff.vocoders.griffinlim.GriffinLimVocoder", "sample_rate": 16000}
    with pytest.raises(UnknownComponentError, match="not a registered audiodiff denoiser"):
        build_component(node, "denoiser", "denoiser")


def test_hydra_call_keys_are_refused():
    node = {"_target_": "audiodiff.diffusion.objectives.FlowMatching", "_args_": ["x"]}
    with pytest.raises(ValueError, match="_args_ is not supported"):
        build_component(node, "diffusion", "diffusion")


def test_code_can_register_its_own_component(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})
    calls = []

    def make(width: int) -> str:
        calls.append(width)
        return f"net{width}"

    register_component("tests.my_denoiser", "denoiser", make)
    assert build_component({"_target_": "tests.my_denoiser", "width": 3}, "denoiser", "denoiser") == "net3"
    assert calls == [3]
    with pytest.raises(ValueError, match="built in already"):
        register_component(next(iter(COMPONENTS)), "denoiser", make)


def test_build_model_matches_the_composed_config():
    """The registry builds the same parts Hydra's instantiate did: a composed recipe builds and runs."""
    model = build_model(compose_config("train", ["recipe=debug", "denoiser=dit_tiny"]))
    assert type(model.net).__name__ == "DiT1d"
    assert type(model.representation.vocoder).__name__ == "GriffinLimVocoder"
