"""Non-finite losses and gradients are skipped and counted; a run of them stops training with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.diffusion.objectives import FlowMatching
from audiodiff.export import load_checkpoint
from audiodiff.training.diffusion.run import train


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    return root


def _poison(monkeypatch, bad_calls: set[int], where: str) -> list[int]:
    """Make FlowMatching.loss return NaN (where="loss") or a loss with NaN gradients (where="grad") on the given
    training calls (1-based; validation calls pass a generator and are left alone)."""
    calls = []
    original = FlowMatching.loss

    def loss(self, net, x0, cond, generator=None, weight=None):
        value = original(self, net, x0, cond, generator, weight)
        if generator is not None:
            return value
        calls.append(len(calls) + 1)
        if calls[-1] in bad_calls:
            if where == "loss":
                return value * float("nan")
            # Finite value, NaN gradients: the unselected branch's backward is 0 · ∞.
            return torch.where(torch.tensor(True), value, torch.sqrt(value - value.detach() - 1.0))
        return value

    monkeypatch.setattr(FlowMatching, "loss", loss)
    return calls


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_bad_steps_are_skipped_and_weights_stay_finite(root, tmp_path, monkeypatch, caplog, where):
    _poison(monkeypatch, {2, 3}, where)
    run = tmp_path / "run"
    train(compose_config("train", ["recipe=debug", f"data.root={root}", f"run_dir={run}", "trainer.max_steps=5"]))
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point()), "a NaN reached weights"
    assert (run / "export" / "model.safetensors").is_file()
    kind = "loss" if where == "loss" else "gradient"
    skipped = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(skipped) == 2 and all(f"non-finite {kind}" in m for m in skipped), skipped


def test_consecutive_bad_steps_stop_the_run_with_a_clear_error(root, tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(1, 100)), "loss")
    cfg = compose_config("train", ["recipe=debug", f"data.root={root}", f"run_dir={tmp_path / 'run'}",
                                   "task.max_nonfinite=3"])
    with pytest.raises(FloatingPointError, match=r"3 consecutive steps had a non-finite loss .*task.max_nonfinite=3"):
        train(cfg)


def test_the_check_and_the_clipping_share_one_global_norm(monkeypatch):
    """`on_before_optimizer_step` computes the gradients' global norm once; `configure_gradient_clipping` clips with
    it exactly as `torch.nn.utils.clip_grad_norm_` does; a NaN in any one gradient skips the step."""
    from types import SimpleNamespace

    from audiodiff.models.build import build_model
    from audiodiff.training.diffusion.task import DiffusionTask

    task = DiffusionTask(build_model(compose_config("train", ["recipe=debug"])), optimizer=torch.optim.AdamW)
    task._trainer = SimpleNamespace(world_size=1, global_step=0)
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    params = task.trainable_parameters()
    gen = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    expected = [p.grad.clone() for p in params]
    reference_norm = torch.nn.utils.clip_grad_norm_([_with_grad(g) for g in expected], 1.0)
    task.on_before_optimizer_step(None)
    torch.testing.assert_close(task._grad_norm, reference_norm, rtol=1e-6, atol=0)
    assert reference_norm > 1.0  # so that the clipping below changes the gradients
    task.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)

    params[len(params) // 2].grad.view(-1)[0] = float("nan")
    task.on_before_optimizer_step(None)
    assert task._grad_norm is None and all(p.grad is None for p in params) and task.nonfinite_steps == 1


def _with_grad(grad: torch.Tensor) -> torch.nn.Parameter:
    """A parameter whose .grad is `grad` itself (so clip_grad_norm_ scales `grad` in place)."""
    p = torch.nn.Parameter(torch.zeros_like(grad))
    p.grad = grad
    return p
