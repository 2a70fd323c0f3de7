"""A debug-recipe model with its weights nudged off their initialisation, so that outputs depend on the prompt and
the seed (tests of generation, serving, provenance, watermarking, prompt policy and the near-copy guard)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from audiodiff.config import compose_config
from audiodiff.models.build import build_model, model_config
from audiodiff.models.export_format import write_export


def debug_model_parts(overrides: Sequence[str] = (), seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict without the text encoder, model config) of `recipe=debug` plus `overrides`, seeded by `seed`."""
    cfg = compose_config("train", ["recipe=debug", *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.net.parameters():  # zero-initialised output layers would make every estimate 0
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    return state, model_config(cfg)


def debug_export(folder: Path, overrides: Sequence[str] = (), seed: int = 0) -> Path:
    """`debug_model_parts` written as an export into `folder`; returns the folder."""
    return write_export(folder, *debug_model_parts(overrides, seed))
