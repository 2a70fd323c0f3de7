"""Few-step students: `python -m audiodiff.train recipe=<...> stage=distill init=TEACHER` (conf/stage/distill.yaml).

The method is guidance-baked straight-path distillation, in two phases:

1. **Teacher sampling.** For `trajectories` training captions the teacher runs its deterministic ODE sampler
   (`teacher_sampler`, `teacher_steps` steps) with classifier-free guidance at `guidance` from seeded noise, and the
   pair (start x_T, guided endpoint x̂0) is kept (Luhman & Luhman 2021, "Knowledge Distillation in Iterative
   Generative Models": a student learns the teacher's noise → sample map).
2. **Student training.** The student, a copy of the teacher (same architecture, representation, text encoder and
   latent statistics, initialised with its weights), learns to map points of the straight path between the start
   and the endpoint back to the endpoint: with ε̂ = (x_T - (1 - t0) x̂0) / t0 the noise implied at the first time t0,
   its input at time t is x_t = (1 - t) x̂0 + t ε̂ (x_T itself at t0) and its target x̂0, in the objective's own
   `denoise` (so every objective is served the same way), MSE in latent space. The times are those of the k-step
   grids it is made for (`steps`, e.g. 1, 2, 4 and 8 on the same spacing): the student is a consistency function
   (Song et al. 2023, "Consistency Models") on the straightened path, which is the coupling of Reflow (Liu, Gong &
   Liu 2023, "Flow Straight and Fast"; InstaFlow, Liu et al. 2024, for text-to-image). Its text conditioning is the
   caption alone: the guidance is baked into the weights (Meng et al. 2023, "On Distillation of Guided Diffusion
   Models"), so it samples with guidance 1, one network call per step.

Why this method: the student's own k-step sampler (`flow_euler`, x̂0-prediction Euler = DDIM with the implied noise)
moves along exactly this straight path when its estimates are right, so what it meets at sampling time is what it
trained on; only starts and endpoints are stored (not whole trajectories), no second model is trained (unlike
adversarial or distribution-matching distillation) and no step relies on the student's own earlier estimates
(unlike progressive distillation), which makes short CPU runs stable.

The export is an ordinary model folder whose sampler is the student's (`flow_euler`, `default_steps` steps,
guidance 1, the training grid's spacing and shift), so `generate`, the web page and the evaluation scripts use it
as it was made; export.json and the model card record the teacher, its guidance and the step counts it serves.
Refused, naming the field: a teacher that is already a student, an objective without an x̂0 estimate, a stochastic
teacher sampler, and a student grid that starts at another noise level than the teacher's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor

from audiodiff.conditioning.types import Conditioning
from audiodiff.diffusion.objectives import EDM, FlowMatching, Objective, VDiffusion, VPDiffusion
from audiodiff.models.export_format import read_info
from audiodiff.models.model import DiffusionModel, SamplerSettings
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.ema import EMA
from audiodiff.training.finetune import init_folder
from audiodiff.utils.files import atomic_path

log = logging.getLogger(__name__)

# Objectives whose `denoise` returns x̂0 in canonical flow coordinates: the student regresses it.
DISTILLABLE_OBJECTIVES = (FlowMatching, VPDiffusion, EDM, VDiffusion)
# Samplers that follow the probability-flow ODE (no fresh noise): a start then has one endpoint.
DETERMINISTIC_SAMPLERS = ("flow_euler", "flow_heun", "ddim", "euler", "heun", "dpmpp_2m")
# The student's sampler: an x̂0-prediction Euler step moves along the straight path it was trained on.
STUDENT_SAMPLER = "flow_euler"
TEACHER_FILE = "teacher_samples.safetensors"
STATE_FILE = "checkpoints/distill_last.pt"  # the training state a rerun resumes from


class DistillError(ValueError):
    """A distillation that cannot start: no teacher, a teacher or setting the method cannot serve."""


@dataclass(frozen=True)
class DistillSettings:
    """What the distill stage does (conf/stage/distill.yaml documents each field)."""

    steps: tuple[int, ...] = (1, 2, 4, 8)
    default_steps: int = 4
    spacing: str = "uniform"
    shift: float = 1.0
    teacher_sampler: str = "flow_heun"
    teacher_steps: int = 16
    guidance: float = 3.0
    trajectories: int = 1024
    teacher_batch: int = 32
    batch_size: int = 32
    max_steps: int = 1000
    lr: float = 3.0e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    max_seconds: float = math.inf
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if not self.steps or any(k < 1 for k in self.steps):
            raise DistillError(f"distill.steps: expected positive step counts, got {list(self.steps)}")
        if self.default_steps not in self.steps:
            raise DistillError(f"distill.default_steps: {self.default_steps} is not one of distill.steps "
                               f"{list(self.steps)}")
        if self.teacher_sampler not in DETERMINISTIC_SAMPLERS:
            raise DistillError(f"distill.teacher_sampler: {self.teacher_sampler!r} draws fresh noise at its steps, so "
                               f"a start has no single endpoint to learn; use one of {list(DETERMINISTIC_SAMPLERS)}")
        if min(self.trajectories, self.teacher_batch, self.batch_size, self.max_steps) < 1:
            raise DistillError("distill: trajectories, teacher_batch, batch_size and max_steps must be positive")

    @classmethod
    def from_config(cls, node: DictConfig | dict[str, Any]) -> DistillSettings:
        """The settings of a `stage` node (its run_dir and text_cache are not settings)."""
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        values = {k: v for k, v in values.items() if k not in ("run_dir", "text_cache")}
        if "steps" in values:
            values["steps"] = tuple(int(k) for k in values["steps"])
        if values.get("max_seconds") is None:
            values["max_seconds"] = math.inf
        return cls(**values)


def check_teacher(model: DiffusionModel, info: dict[str, Any], source: str) -> None:
    """Refuse a teacher the method cannot serve, naming the field and its value: one that is a few-step student
    already (distil its teacher instead), one whose default sampler is ping-pong (a published few-step model), or
    one whose objective gives no x̂0 estimate."""
    if info.get("distilled"):
        raise DistillError(f"init={source}: export.json distilled={info['distilled']!r}: this is a few-step student "
                           f"already; distil from its many-step teacher ({info['distilled'].get('teacher')})")
    if model.sampler.name == "pingpong":
        raise DistillError(f"init={source}: sampler.name='pingpong': this model samples in a few stochastic steps "
                           f"already (a distilled model such as Stable Audio 3's published one); distil a many-step "
                           f"teacher")
    if not isinstance(model.objective, DISTILLABLE_OBJECTIVES):
        raise DistillError(f"diffusion._target_: {type(model.objective).__name__} is not one of "
                           f"{[c.__name__ for c in DISTILLABLE_OBJECTIVES]}, whose denoise gives the x̂0 estimate "
                           f"the student regresses")


def student_times(objective: Objective, steps: Sequence[int], spacing: str, shift: float) -> Tensor:
    """The distinct times t > 0 of the k-step grids (k in `steps`) a student samples on, decreasing, float64 [M]."""
    times: list[float] = []
    for k in steps:
        for t in objective.time_grid(int(k), spacing, shift)[:-1].tolist():
            if all(abs(t - u) > 1e-9 for u in times):
                times.append(t)
    return torch.tensor(sorted(times, reverse=True), dtype=torch.float64)


def straight_points(start: Tensor, x0: Tensor, t0: float, t: Tensor) -> Tensor:
    """Points x_t = (1 - t) x0 + t ε̂ of the straight path from `start` [B, D, L] at time t0 to `x0` [B, D, L], with
    ε̂ = (start - (1 - t0) x0) / t0 the noise it implies (start itself at t = t0; ε̂ = start for t0 = 1).
    t: [B] flow times in (0, t0]. Returns [B, D, L]."""
    eps = (start - (1 - t0) * x0) / t0
    tt = t.to(x0)[:, None, None]
    return (1 - tt) * x0 + tt * eps


def distillation_loss(model: DiffusionModel, net: torch.nn.Module, start: Tensor, x0: Tensor, t0: float, t: Tensor,
                      cond: Conditioning) -> Tensor:
    """Mean squared error between the student's x̂0 at the straight-path points (`straight_points`) and the
    teacher's guided endpoints x0 [B, D, L] (latent units)."""
    x_t = straight_points(start, x0, t0, t)
    return torch.mean((model.objective.denoise(net, x_t, t.to(x0), cond) - x0) ** 2)


@torch.no_grad()
def teacher_samples(model: DiffusionModel, captions: list[str], frames: int, seeds: list[int],
                    settings: SamplerSettings, batch: int, times: Tensor) -> tuple[Tensor, Tensor]:
    """(start [N, D, frames], guided endpoint [N, D, frames]) of the teacher's deterministic sampler for caption i
    from seed i; `times` is the student's first-step grid (its first time is where the start lies)."""
    starts, ends = [], []
    t0 = float(times[0])
    for i in range(0, len(captions), batch):
        seeds_i = seeds[i:i + batch]
        shape = (model.representation.latent_channels, frames)
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds_i])
        ends.append(model.sample_latents(captions[i:i + batch], frames, seeds_i, settings).float().cpu())
        starts.append(noise * math.sqrt((1 - t0) ** 2 + t0**2))  # samplers.initial_latents, as sample_latents starts
        log.info("teacher samples: %d of %d", min(i + batch, len(captions)), len(captions))
    return torch.cat(starts), torch.cat(ends)


def conditioner(model: DiffusionModel, captions: list[str], text_cache: str | None) -> Callable[[Tensor], Conditioning]:
    """A function from caption indices [B] to the model's conditioning of those captions (timing for the whole
    window included), with each distinct caption encoded once (read from `text_cache`, the text-state file of an
    encode stage, where it has them; the file is not changed) when the text encoder can encode captions apart."""
    device = next(model.net.parameters()).device
    encoder = model.text_encoder
    if hasattr(encoder, "encode_unique"):
        from audiodiff.conditioning.cache import encoder_signature, load_text_cache
        from audiodiff.conditioning.text import collate_states

        states = (load_text_cache(text_cache, encoder_signature(encoder)) or {}) if text_cache else {}
        missing = [c for c in dict.fromkeys(captions) if c not in states]
        log.info("caption states: %d from %s, %d encoded", len(set(captions)) - len(missing), text_cache, len(missing))
        if missing:  # encoded here, not written into the teacher's cache
            states.update(encoder.encode_unique(missing, dtype=torch.float16))

        def text(idx: list[int]) -> Conditioning:
            return collate_states([states[captions[i]] for i in idx]).to(device)
    else:
        def text(idx: list[int]) -> Conditioning:
            return model.encode_text([captions[i] for i in idx])

    @torch.no_grad()
    def condition(idx: Tensor) -> Conditioning:
        rows = idx.tolist()
        cond = text(rows)
        if model.timing is None:
            return cond
        start, total = torch.zeros(len(rows)), torch.full((len(rows),), float(model.duration))
        return model.timing.condition(cond, start, total).to(device)

    return condition


def student_sampler(settings: DistillSettings) -> dict[str, Any]:
    """The exported model's `sampler` node: the student's sampler, default steps, guidance 1 and training grid."""
    return {"name": STUDENT_SAMPLER, "steps": settings.default_steps, "guidance": 1.0, "shift": settings.shift,
            "spacing": settings.spacing}


def training_captions(data: DictConfig) -> list[str]:
    """Captions of the train split of the run's data: the built-in corpus's, or the manifest's rows marked train
    or unmarked."""
    from audiodiff.data.manifest import read_manifest

    if data.get("corpus"):
        from audiodiff.benchmarks import ensure_corpus

        rows = read_manifest(ensure_corpus(data.corpus, data.root))
    else:
        rows = read_manifest(data.manifest)
    captions = [r.caption for r in rows if r.split in (None, "train") and r.caption]
    if not captions:
        raise DistillError(f"data: no training captions in {data.get('manifest') or data.get('corpus')}")
    return captions


def distill(pipe: AudioDiffusionPipeline, captions: list[str], settings: DistillSettings, run_dir: Path,
            seed: int = 0, text_cache: str | None = None) -> dict[str, Any]:
    """Train `pipe.model`'s denoiser in place into a few-step student of itself (module docstring). The teacher
    samples and, every `checkpoint_every` steps and at the end, the training state are kept in `run_dir`: a rerun
    reuses the samples and goes on from the saved step (`max_seconds` counts each run's own time). Returns what the
    export records (steps trained, seconds)."""
    started = time.monotonic()
    model = pipe.model
    times = student_times(model.objective, settings.steps, settings.spacing, settings.shift)
    t0 = float(times[0])
    frames = model.representation.num_frames(model.duration)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randint(len(captions), (settings.trajectories,), generator=generator)
    chosen = [captions[i] for i in picked.tolist()]
    run_dir.mkdir(parents=True, exist_ok=True)
    samples_file = run_dir / TEACHER_FILE
    if samples_file.is_file():
        saved = load_file(samples_file)
        start, end = saved["start"], saved["end"]
        teacher_seconds = float(saved["seconds"])
        log.info("teacher samples: %d read from %s", len(start), samples_file)
    else:
        teacher = replace(model.sampler, name=settings.teacher_sampler, steps=settings.teacher_steps,
                          guidance=settings.guidance, eta=None, s_churn=0.0, noise="gaussian")
        teacher_t0 = float(model.objective.time_grid(teacher.steps, teacher.spacing, teacher.shift)[0])
        if abs(teacher_t0 - t0) > 1e-6:  # the starts would lie at another noise level than the student's
            raise DistillError(f"distill.spacing: {settings.spacing!r} starts the student at t = {t0:.6f}, the "
                               f"teacher's grid ({teacher.spacing!r}) at t = {teacher_t0:.6f}; choose a spacing "
                               f"that starts where the teacher's does")
        seeds = [seed * 1_000_003 + i for i in range(settings.trajectories)]
        model.eval()
        start, end = teacher_samples(model, chosen, frames, seeds, teacher, settings.teacher_batch, times)
        teacher_seconds = time.monotonic() - started
        with atomic_path(samples_file) as tmp:
            save_file({"start": start, "end": end, "seconds": torch.tensor(teacher_seconds)}, str(tmp))
        log.info("teacher samples: %d in %.0f s (%s, %d steps, guidance %g)", len(start), teacher_seconds,
                 settings.teacher_sampler, settings.teacher_steps, settings.guidance)
    condition = conditioner(model, chosen, text_cache)
    net = model.net
    net.train().requires_grad_(True)
    ema = EMA(net, settings.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    from audiodiff.training.diffusion.task import warmup_cosine

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.max_steps))
    device = next(net.parameters()).device
    step, losses = 0, []
    state_file = run_dir / STATE_FILE
    parts = {"net": net, "ema": ema, "optimizer": optimizer, "schedule": schedule}

    def save_state() -> None:
        with atomic_path(state_file) as tmp:
            torch.save({"step": step, "losses": losses[-50:], "generator": generator.get_state(),
                        **{k: v.state_dict() for k, v in parts.items()}}, tmp)

    if state_file.is_file():  # a rerun goes on from the last saved step, with the same batches to come
        saved = torch.load(state_file, map_location=device, weights_only=True)
        for key, part in parts.items():
            part.load_state_dict(saved[key])
        step, losses = int(saved["step"]), list(saved["losses"])
        generator.set_state(saved["generator"])
        log.info("distill: resumed at step %d from %s", step, state_file)
    while step < settings.max_steps and time.monotonic() - started < settings.max_seconds:
        idx = torch.randint(len(start), (settings.batch_size,), generator=generator)
        t = times[torch.randint(len(times), (settings.batch_size,), generator=generator)]
        loss = distillation_loss(model, net, start[idx].to(device), end[idx].to(device), t0, t.to(device),
                                 condition(idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        ema.update(net, step)
        losses.append(float(loss.detach()))
        if step % settings.checkpoint_every == 0:
            save_state()
        if step % 50 == 0 or step == 1:
            log.info("distill step %d: loss %.4f (%.0f s)", step, sum(losses[-50:]) / len(losses[-50:]),
                     time.monotonic() - started)
    save_state()
    net.load_state_dict(ema.average.state_dict())
    net.eval().requires_grad_(False)
    if step < settings.max_steps:
        log.info("distill: stopped by max_seconds at step %d of %d", step, settings.max_steps)
    return {"global_step": step, "max_steps": settings.max_steps, "teacher_seconds": round(teacher_seconds, 1),
            "seconds": round(time.monotonic() - started, 1),
            "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5)}


def encode_text_cache(folder: Path) -> Path | None:
    """The text-state file of the encode stage beside a run's export (`<run>/encode/cache/text_states.safetensors`),
    or None."""
    path = folder.parent / "encode" / "cache" / "text_states.safetensors"
    return path if path.is_file() else None


def is_current(cfg: DictConfig) -> bool:
    """Whether the exported student of `cfg`'s stage trained all its `max_steps`: one that `max_seconds` stopped
    earlier is unfinished, and the same command goes on from its saved state (as a trainer's max_time stop)."""
    info = read_info(Path(cfg.stage.run_dir) / "export")
    done = int(info.get("global_step", 0)) >= int(cfg.stage.max_steps)
    if not done:
        log.info("distill stopped at step %s of %s (max_seconds): unfinished", info.get("global_step"),
                 cfg.stage.max_steps)
    return done


def train_distill(cfg: DictConfig) -> Path:
    """The distill stage: the few-step student of the `init` export, exported to `<stage.run_dir>/export`."""
    if not cfg.get("init"):
        raise DistillError(f"recipe {cfg.get('name')!r} distils a model: give init=<teacher export folder or run dir>")
    settings = DistillSettings.from_config(cfg.stage)
    folder = init_folder(cfg.init)
    info = read_info(folder)
    pipe = AudioDiffusionPipeline.from_pretrained(folder, watermark=False)
    check_teacher(pipe.model, info, str(folder))
    run_dir = Path(cfg.stage.run_dir)
    torch.manual_seed(int(cfg.seed))
    text_cache = cfg.stage.get("text_cache") or encode_text_cache(folder)
    record = distill(pipe, training_captions(cfg.data), settings, run_dir, int(cfg.seed),
                     str(text_cache) if text_cache else None)
    pipe.config = {**pipe.config, "sampler": student_sampler(settings)}
    distilled = {"teacher": str(folder), "method": "straight-path distillation (audiodiff.training.distill)",
                 "guidance": settings.guidance, "steps": list(settings.steps), "teacher_sampler":
                 settings.teacher_sampler, "teacher_steps": settings.teacher_steps,
                 "trajectories": settings.trajectories}
    pipe.model_id = str(folder)
    out = pipe.save_pretrained(run_dir / "export", card={"recipe": cfg.get("name"), "distilled": distilled,
                                                         **record})
    log.info("exported the %s-step student %s", settings.default_steps, out)
    return run_dir
