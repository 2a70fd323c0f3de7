"""What makes a resumed run continue exactly where it stopped: crash-safe checkpoint files and per-rank RNG state.

Lightning checkpoints hold the weights, optimizer, LR schedule, loop counters and the state of stateful data loaders
(`fit_loop.state_dict()["combined_loader"]`), but not the global random generators that draw training noise,
diffusion times and caption dropout; :class:`RandomState` adds them, one set per rank. Lightning's own writer
(`TorchCheckpointIO` → `_atomic_save`) stages the file in the system temp folder and moves it over the target without
an fsync, which is a copy, not a rename, when the temp folder is on another file system; :class:`AtomicCheckpointIO`
writes next to the target, fsyncs, and renames.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from audiodiff.models.registry import UnknownComponentError, resolve_component
from audiodiff.training.checkpoints import load_checkpoint
from audiodiff.utils.files import atomic_open

log = logging.getLogger(__name__)


def with_target_defaults(value: Any) -> Any:
    """A component config (`{"_target_": ..., ...}`) with the keyword defaults of its target filled in where it
    leaves them out, so that comparing the config a run was trained with against today's ignores a key added since
    with its default value. Other values, and targets that are not registered components (never imported:
    `audiodiff.models.registry.resolve_component`), are returned as they are."""
    if not isinstance(value, dict) or "_target_" not in value:
        return value
    try:
        parameters = inspect.signature(resolve_component(value["_target_"], "resume check")).parameters.values()
    except (UnknownComponentError, TypeError, ValueError):
        return value

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    defaults = {p.name: plain(p.default) for p in parameters
                if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {**defaults, **value}


def partial_path(path: str | Path) -> Path:
    """The file a checkpoint is written to before it is renamed to `path`: a hidden sibling, same file system."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into `.<name>.partial` beside the target, flush + fsync, `os.replace` onto the target, fsync the
    folder. A process killed at any moment leaves either the previous file or the new one under the target name,
    never a truncated one (POSIX rename is atomic within a file system); a stale `.partial` is overwritten by the next
    save. Remote (fsspec) paths fall back to Lightning's writer.

    The writer is :func:`audiodiff.utils.files.atomic_open` with its two checkpoint options: the fixed temporary
    name `.partial` (one process writes each checkpoint, and a crash must not leave a new full-size orphan each
    time) and the folder fsync after the rename.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint: storage_options are not supported, got "
                            f"{storage_options!r}")
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return
        target = Path(path)
        with atomic_open(target, "wb", temp=partial_path(target), fsync_dir=True) as f:
            torch.save(checkpoint, f)


# ---- random state -------------------------------------------------------------------------------------------------
RngState = dict[str, Any]


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A 32-bit seed for `rank` from the run's `seed` (NumPy SeedSequence mixing): every rank draws its own noise."""
    return int(np.random.SeedSequence([seed, rank, step, 0x5EED]).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng() -> RngState:
    """This process's global generators, in types a `weights_only` checkpoint load accepts (tensors, ints, tuples)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: RngState = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's device
    return state


def restore_rng(state: RngState) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RandomState(L.Callback):
    """Gives every rank its own random stream and carries all of them through checkpoints.

    At the start of training each rank's global generators (torch, CUDA, NumPy, Python) are seeded from
    :func:`rank_seed` (`seed`, rank), so ranks draw different noise, diffusion times and caption dropout while the
    model, built before under the shared seed, starts identical everywhere. Saving gathers every rank's generator
    state into the checkpoint (rank 0 writes it); resuming with the same world size gives each rank its state back at
    the start of training, so the next step draws what it would have drawn without the interruption. Resuming with
    another world size reseeds from (`seed`, rank, global step) and says so.

    Exactness also needs that nothing else draws from the global generators between a checkpoint and the next
    training step: the data loaders therefore carry generators of their own (see `audiodiff.data.datamodule`).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._loaded: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            seed_process(rank_seed(self.seed, rank))
        elif loaded["world_size"] == world:
            restore_rng(loaded["ranks"][rank])
        else:
            log.warning("resuming on %d processes a run saved on %d: random streams are reseeded, so the run "
                        "continues correctly but not bit for bit as it would have", world, loaded["world_size"])
            seed_process(rank_seed(self.seed, rank, trainer.global_step))

    def state_dict(self) -> dict[str, Any]:
        """Every rank's generator state. Called on all ranks while a checkpoint is assembled (a collective)."""
        state = capture_rng()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, state)
        else:
            ranks = [state]
        return {"world_size": len(ranks), "ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict


def start_run(cfg: DictConfig, run_dir: Path, last: Path,
              check_resume: Callable[[dict[str, Any], dict[str, Any], Path], None],
              recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set up a training run in `run_dir`: create it, refuse (through `check_resume(saved, current, last)`) to resume
    a checkpoint `last` trained with another configuration, write `config.yaml` on rank 0 and seed every generator.

    Returns the resolved configuration, with `recorded` added (facts about the inputs, such as the digest of a
    latent cache, that the checkpoint keeps and a resume compares)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    resolved.update(recorded or {})
    if last.exists():
        check_resume(load_checkpoint(last)["audiodiff"]["config"], resolved, last)
        log.info("resuming from %s", last)
    if rank_zero_only.rank == 0:  # launchers (torchrun, srun) start the run once per process
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)  # the same initial weights on every rank; RandomState then splits
    return resolved
