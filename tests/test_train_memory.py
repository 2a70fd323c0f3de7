"""bench/train_memory.py: the CPU peak it measures is the torch allocations' own, and its Stable Audio Open
estimate counts the published DiT and meets the fine-tuning memory goals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_cpu_peak_is_the_most_tensor_memory_alive_at_once(bench):
    def run() -> None:
        a = torch.empty(1_000_000)  # 4 MB
        b = torch.empty(2_000_000)  # 8 MB
        del a
        c = torch.empty(3_000_000)  # 12 MB: 20 MB alive with b
        del b, c
        d = torch.empty(1_000_000)
        del d

    assert bench.cpu_peak(run) == 20_000_000


def test_the_published_dit_and_the_goals(bench):
    Setup = bench.Setup
    full = bench.estimate_sao(Setup("full"))
    assert full["parameters (M)"] == pytest.approx(1056.9, abs=0.1)
    # fp32 weights, gradients and AdamW moments alone: 16 B per parameter, the "about 17 GB"
    assert full["weights"] + full["gradients"] + full["optimizer"] == pytest.approx(16 * 1056.9e6 / 1e9, rel=1e-3)
    assert bench.estimate_sao(Setup("full", "bf16-mixed", False, "adamw8bit"))["total"] <= 24
    assert bench.estimate_sao(Setup("lora"))["total"] <= 12
    lora = bench.estimate_sao(Setup("lora"))
    assert lora["trained (M)"] / lora["parameters (M)"] < 0.02
    # checkpointing keeps one [tokens, width] fp32 input per block plus one block's activations
    assert bench.estimate_sao(Setup("lora", checkpointing=True))["activations"] < lora["activations"] / 10
    assert bench.sao_denoiser(8, "meta").width == 768
