"""Training: one Lightning task and one run function per stage (`diffusion/`, `vocoder/`, `autoencoder/`,
`embedder/`, `encode`), and what the stages share: the fit–resume–export loop's checkpoints, resume checks, EMA,
signals, callbacks, the GAN base and the stage registry (`stages`). The only layer that may import Lightning's
trainer, Hydra and OmegaConf besides the entry points and model building.

Nothing is imported here, so importing one stage does not import the others.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# Names of the former module `audiodiff.training`, now in `audiodiff.training.diffusion.run`.
TRAINING_NAMES = ("train", "is_current", "check_resume", "trainer_plugins", "ResumeMismatchError")


def __getattr__(name: str) -> Any:
    """The names of the former module `audiodiff.training` (now `audiodiff.training.diffusion.run`), for one
    release, with a DeprecationWarning."""
    if name in TRAINING_NAMES:
        warnings.warn(f"audiodiff.training.{name} moved to audiodiff.training.diffusion.run.{name}; the old name is "
                      f"removed in audiodiff 0.3", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("audiodiff.training.diffusion.run"), name)
    raise AttributeError(f"module 'audiodiff.training' has no attribute {name!r}")
