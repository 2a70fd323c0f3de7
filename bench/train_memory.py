"""Training memory: the denoiser of a recipe, or the converted Stable Audio Open DiT under LoRA and full fine-tuning.

    python bench/train_memory.py recipe=music_dit_1b_24gb           # estimate (any machine)
    python bench/train_memory.py recipe=music_dit_1b_24gb device=cuda steps=3   # and measure on a GPU
    python bench/train_memory.py model=stable_audio_open             # fine-tuning estimate at the published size,
                                                                     # and the 1/8-size check on this CPU
    python bench/train_memory.py model=stable_audio_open device=cuda # measured at the published size on a GPU

Recipe mode counts bytes per denoiser parameter: weights and gradients (4 B each under fp32 or bf16-mixed, 2 B
under bf16-true), optimizer moments (8 B for AdamW, 2 B for 8-bit AdamW), the EMA copy (4 B), plus the block
inputs kept by gradient checkpointing (batch · frames · width · 4 B per block). The measurement runs `steps`
optimizer steps of the real loss on random latents and text states (`bench/train_step.py`'s loop) and reports
`torch.cuda.max_memory_allocated`, which excludes the CUDA context (~0.5 GB) and allocator slack.

Stable Audio Open mode: see :func:`estimate_sao` (the model of what training holds) and :func:`measure_sao` (how the
peak is measured: on a GPU `torch.cuda.max_memory_allocated`; on a CPU the running sum of every CPU tensor
allocation and free that the torch profiler's memory events record, `profile_memory=True`).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.conditioning.types import Conditioning
from audiodiff.config import compose_config
from audiodiff.models.adapters import LoraSettings, add_lora, lora_parameter_count, target_modules

GB = 1e9
OPTIMIZER_BYTES = {"torch.optim.AdamW": 8, "torch.optim.Adam": 8, "bitsandbytes.optim.AdamW8bit": 2,
                   "bitsandbytes.optim.Adam8bit": 2}


def context_width(cfg) -> int:
    """Width of the text states the denoiser attends to: T5-base's 768 or MiniLM's 384 (no checkpoint is read)."""
    return 768 if "t5" in str(cfg.text_encoder.get("name_or_path", "")) else 384


def build_denoiser(cfg, device: str | torch.device) -> torch.nn.Module:
    """The recipe's denoiser on `device` (``meta``: no memory), with the widths the real model would have."""
    representation = instantiate(cfg.representation, vocoder=None)
    context = context_width(cfg)
    denoiser = OmegaConf.to_container(cfg.denoiser, resolve=True)
    pooled = denoiser.pop("pooled_text", True)
    with torch.device(device):
        return instantiate(denoiser, in_channels=representation.latent_channels, context_dim=context,
                           pooled_dim=context if pooled else None, global_dim=None)


def count_parameters(cfg) -> int:
    """Denoiser parameters, counted on the meta device."""
    return sum(p.numel() for p in build_denoiser(cfg, "meta").parameters())


def estimate(cfg) -> dict[str, float]:
    """Bytes (GB) of each part of training state for the composed config `cfg`."""
    params = count_parameters(cfg)
    precision = str(cfg.trainer.precision)
    weight_bytes = 2 if precision == "bf16-true" else 4
    optim_bytes = OPTIMIZER_BYTES.get(cfg.optim._target_, 8)
    frames = round(float(cfg.data.segment_seconds) * instantiate(cfg.representation, vocoder=None).frame_rate)
    width, depth = cfg.denoiser.get("width", cfg.denoiser.get("channels")), cfg.denoiser.get("depth", 1)
    tokens = frames // int(cfg.denoiser.get("patch", 1))
    activations = int(cfg.data.batch_size) * tokens * int(width) * 4 * int(depth)
    parts = {"parameters (M)": params / 1e6, "weights": params * weight_bytes / GB,
             "gradients": params * weight_bytes / GB, "optimizer": params * optim_bytes / GB,
             "ema": params * 4 / GB, "checkpointed activations": activations / GB}
    parts["total"] = sum(v for k, v in parts.items() if k != "parameters (M)")
    return parts


def measure(cfg, steps: int) -> float:
    """Peak GB allocated on the GPU over `steps` optimizer steps of the real objective on random data."""
    representation = instantiate(cfg.representation, vocoder=None)
    net = build_denoiser(cfg, "cuda").train()
    objective = instantiate(cfg.diffusion)
    ema = [p.detach().clone().float() for p in net.parameters()]
    frames = round(float(cfg.data.segment_seconds) * representation.frame_rate)
    batch = int(cfg.data.batch_size)
    z = torch.randn(batch, representation.latent_channels, frames, device="cuda")
    ctx = torch.randn(batch, 64, context_width(cfg), device="cuda")
    cond = Conditioning(ctx, torch.ones(batch, 64, dtype=torch.bool, device="cuda"), ctx.mean(1))
    opt = instantiate(cfg.optim)(net.parameters())
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective.loss(net, z, cond)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(ema, net.parameters(), strict=True):
                e.lerp_(p.float(), 0.001)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GB


# ---- Stable Audio Open's DiT under fine-tuning -------------------------------------------------------------------
SAO_FRAMES = 1024  # latent frames of 47.55 s: 2,097,152 samples at 44.1 kHz / the autoencoder's 2048 hop
SAO_CONTEXT = (130, 768)  # cross-attention tokens: 128 T5-base states + the 2 seconds tokens, each 768 wide
SAO_GLOBAL = 1536  # the two seconds embeddings side by side
LORA_RANK = 16  # conf/finetune/lora.yaml's default, on its default targets
EIGHT_BIT_STATE = 2 + 2 * 4 / 256  # bytes per parameter of 8-bit AdamW: two 1-byte moments + a float absmax per 256


@dataclass(frozen=True)
class Setup:
    """One way of fine-tuning: LoRA or full, fp32 or bf16-mixed, with or without gradient checkpointing, AdamW or
    8-bit AdamW (bitsandbytes)."""

    method: Literal["lora", "full"]
    precision: Literal["32", "bf16-mixed"] = "32"
    checkpointing: bool = False
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"

    @property
    def name(self) -> str:
        return (f"{self.method}, {'fp32' if self.precision == '32' else 'bf16-mixed'}, "
                f"{'checkpointing' if self.checkpointing else 'no checkpointing'}, "
                f"{'8-bit AdamW' if self.optimizer == 'adamw8bit' else 'AdamW'}")


def sao_denoiser(scale: int, device: str | torch.device) -> torch.nn.Module:
    """Stable Audio Open's DiT (conf/denoiser/stable_audio_dit.yaml) at 1/`scale` of its parameters: scale 1 is the
    published 1.06 B; scale 8 halves width and depth (768 wide, 12 blocks, 12 heads of 64, 6 key/value heads)."""
    from audiodiff.denoisers.stable_audio_dit import StableAudioDiT

    shrink = {1: 1, 8: 2}[scale]
    with torch.device(device):
        return StableAudioDiT(in_channels=64, width=1536 // shrink, depth=24 // shrink, heads=24 // shrink,
                              kv_heads=12 // shrink, context_dim=SAO_CONTEXT[1], global_dim=SAO_GLOBAL)


def lora_modules(net: torch.nn.Module) -> tuple[LoraSettings, list[str]]:
    """The default LoRA settings (rank `LORA_RANK`) and the modules they target in `net`."""
    settings = LoraSettings(rank=LORA_RANK, alpha=float(LORA_RANK))
    return settings, target_modules(net, settings)


def activation_bytes(width: int, tokens: int, precision: str, lora_modules_per_block: int) -> float:
    """Bytes one StableAudioBlock keeps for its backward pass, per batch item: `tokens` positions (latent frames + the
    global token). Counted from the block's operations (units: one [tokens, width] tensor):

    - fp32: the three LayerNorm inputs (3), their outputs (3, each read by the next linear layers), self-attention's
      rotated queries and keys and its values (3), attention output and its merged heads (2), cross-attention's
      queries, output and merged heads (3), the SwiGLU's input projection (8, its halves read by SiLU and the
      product), SiLU output (4) and product (4): 31 · 4 B;
    - bf16-mixed: the LayerNorm inputs stay fp32 (3 · 4 B, the residual stream); each linear layer keeps its own bf16
      cast of its input (3 for q, k, v; 1 each for cross-attention's query and the SwiGLU), attention inputs and
      outputs in bf16 as above, the SwiGLU's 16: (5 + 5 + 3 + 16) · 2 B + 12 B = 70 B;
    - LoRA: each target also keeps its rank-r intermediate (r values per position) in the same dtype.
    """
    per_token = 31 * 4 if precision == "32" else 70
    element = 4 if precision == "32" else 2
    return tokens * (width * per_token + lora_modules_per_block * LORA_RANK * element)


def estimate_sao(setup: Setup, scale: int = 1, frames: int = SAO_FRAMES) -> dict[str, float]:
    """The peak (GB) of a training step of the DiT at 1/`scale` size, batch 1, `frames` latent frames, as parts.

    Fixed for the whole step: the weights (fp32, the frozen base too), the trainable parameters' AdamW moments (8 B,
    or `EIGHT_BIT_STATE`) and EMA copy (4 B; the EMA of a LoRA run shares the frozen base). On top, the larger of
    what the forward pass leaves for the backward pass and what the backward pass builds while it frees that: the
    activations (all blocks, :func:`activation_bytes`; with checkpointing each block's input [tokens, width] fp32
    and one block's activations recomputed), under bf16-mixed the bf16 copies autocast makes of the weights (2 B per
    parameter: each linear layer keeps its weight's copy for the gradient of its input, frozen or not; with
    checkpointing, a LoRA run keeps one block's, while full fine-tuning's autocast cache holds every trainable
    weight's copy until the forward pass ends), plus the backward pass's working gradients (16 · [tokens, width]
    fp32: the SwiGLU's); or the gradients of every trainable parameter (fp32), complete when the last activations
    are freed.
    """
    net = sao_denoiser(scale, "meta")
    total = sum(p.numel() for p in net.parameters())
    width, depth, tokens = net.width, len(net.blocks), frames + 1
    if setup.method == "lora":
        settings, modules = lora_modules(net)
        trained = lora_parameter_count(net, modules, settings.rank)
        per_block = sum(1 for m in modules if m.startswith("blocks.0."))
    else:
        trained, per_block = total, 0
    state = EIGHT_BIT_STATE if setup.optimizer == "adamw8bit" else 8
    block = activation_bytes(width, tokens, setup.precision, per_block)
    if setup.checkpointing:
        activations = depth * tokens * width * 4 + block
    else:
        activations = depth * block
    workspace = 16 * tokens * width * 4
    copied = total if setup.method == "full" or not setup.checkpointing else \
        sum(p.numel() for p in net.blocks[0].parameters() if p.dim() == 2)
    parts = {"parameters (M)": total / 1e6, "trained (M)": trained / 1e6, "weights": total * 4 / GB,
             "optimizer": trained * state / GB, "ema": trained * 4 / GB,
             "autocast weight copies": (copied * 2 if setup.precision == "bf16-mixed" else 0) / GB,
             "activations": activations / GB, "backward workspace": workspace / GB, "gradients": trained * 4 / GB}
    fixed = parts["weights"] + parts["optimizer"] + parts["ema"]
    saved = parts["activations"] + parts["autocast weight copies"] + parts["backward workspace"]
    parts["total"] = fixed + max(saved, parts["gradients"])
    return parts


def cpu_peak(run: Callable[[], None]) -> float:
    """Peak bytes of CPU tensor memory that `run` allocates (and has not freed) at any moment: the running sum of the
    allocation and free events the torch profiler records with `profile_memory=True` (every allocation through
    torch's CPU allocator during the call, its size and the matching free), over the call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    memory = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in memory:
        running += nbytes
        peak = max(peak, running)
    return float(peak)


def training_run(setup: Setup, scale: int, frames: int, steps: int, device: str) -> Callable[[], None]:
    """A callable that builds the DiT at 1/`scale` size on `device` and runs `steps` fine-tuning steps as
    `audiodiff.training` does (LoRA through peft or every weight, gradient checkpointing, autocast, AdamW, the EMA
    update), batch 1, random latents and conditioning, the v-diffusion loss."""
    from audiodiff.diffusion.objectives import VDiffusion
    from audiodiff.training.ema import EMA

    def run() -> None:
        torch.manual_seed(0)
        net = sao_denoiser(scale, device).train()
        net.gradient_checkpointing = setup.checkpointing
        if setup.method == "lora":
            settings, modules = lora_modules(net)
            add_lora(net, settings, modules)
        else:
            net.requires_grad_(True)
        params = [p for p in net.parameters() if p.requires_grad]
        if setup.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            optimizer = bnb.optim.AdamW8bit(params, lr=1e-5)
        else:
            optimizer = torch.optim.AdamW(params, lr=1e-5)
        ema = EMA(net, 0.999)
        objective = VDiffusion()
        z = torch.randn(1, 64, frames, device=device)
        tokens = torch.randn(1, *SAO_CONTEXT, device=device)
        cond = Conditioning(tokens, torch.ones(1, SAO_CONTEXT[0], dtype=torch.bool, device=device), None,
                            torch.randn(1, SAO_GLOBAL, device=device))
        kind = torch.device(device).type
        for step in range(steps):
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=setup.precision == "bf16-mixed"):
                loss = objective.loss(net, z, cond)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(net, step)
        del net, optimizer, ema

    return run


def measure_sao(setup: Setup, scale: int, frames: int = SAO_FRAMES, steps: int = 2, device: str = "cpu") -> float:
    """Measured peak GB of `steps` fine-tuning steps (two: the second runs with the optimizer's moments in place)."""
    run = training_run(setup, scale, frames, steps, device)
    gc.collect()
    if device == "cpu":
        return cpu_peak(run) / GB
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / GB


SAO_SETUPS = (Setup("lora"), Setup("lora", checkpointing=True), Setup("lora", "bf16-mixed"),
              Setup("full"), Setup("full", checkpointing=True), Setup("full", "bf16-mixed"),
              Setup("lora", "bf16-mixed", True), Setup("full", "bf16-mixed", False, "adamw8bit"),
              Setup("full", "bf16-mixed", True, "adamw8bit"))


def sao_main(args: dict[str, str]) -> None:
    """Estimates at the published size; measured peaks at 1/8 size on the CPU (or the published size on a GPU)."""
    device = args.get("device", "cpu")
    steps = int(args.get("steps", 2))
    only = args.get("only")
    threads = int(args.get("threads", 1))
    torch.set_num_threads(threads)
    print(f"Stable Audio Open DiT, batch 1, {SAO_FRAMES} latent frames (47.55 s), {SAO_CONTEXT[0]} context tokens; "
          f"LoRA rank {LORA_RANK} on the default targets; the EMA kept as in training\n")
    print("| setup | trained (M) | weights | optimizer | EMA | autocast copies | activations | gradients | "
          "estimate GB (published) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setup in SAO_SETUPS:
        e = estimate_sao(setup)
        print(f"| {setup.name} | {e['trained (M)']:.1f} | {e['weights']:.2f} | {e['optimizer']:.2f} | "
              f"{e['ema']:.2f} | {e['autocast weight copies']:.2f} | "
              f"{e['activations'] + e['backward workspace']:.2f} | {e['gradients']:.2f} | **{e['total']:.2f}** |")
    measurable = [s for s in SAO_SETUPS if s.optimizer == "adamw" or device != "cpu"]
    if only:
        measurable = [s for s in measurable if only in s.name]
    scale = 1 if device != "cpu" else 8
    where = torch.cuda.get_device_name() if device != "cpu" else f"CPU, {threads} thread(s)"
    print(f"\nMeasured ({where}), DiT at 1/{scale} size "
          f"({sum(p.numel() for p in sao_denoiser(scale, 'meta').parameters()) / 1e6:.1f} M parameters), "
          f"{steps} steps:\n")
    print("| setup | estimate GB | measured peak GB | estimate / measured | seconds |")
    print("|---|---|---|---|---|")
    for setup in measurable:
        start = time.time()
        measured = measure_sao(setup, scale, steps=steps, device=device)
        estimated = estimate_sao(setup, scale)["total"]
        print(f"| {setup.name} | {estimated:.3f} | {measured:.3f} | {estimated / measured:.3f} | "
              f"{time.time() - start:.0f} |", flush=True)


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if args.pop("model", None) == "stable_audio_open":
        sao_main(args)
        return
    device, steps = args.pop("device", "cpu"), int(args.pop("steps", 3))
    cfg = compose_config("train", [f"{k}={v}" for k, v in args.items()])
    parts = estimate(cfg)
    print(f"`{' '.join(argv)}`: {cfg.optim._target_}, precision {cfg.trainer.precision}, batch "
          f"{cfg.data.batch_size}, {cfg.data.segment_seconds} s segments\n")
    print("| part | GB |\n|---|---|")
    for name, value in parts.items():
        print(f"| {name} | {value:.2f} |" if name != "parameters (M)" else f"| {name} | {value:.1f} |")
    if device == "cuda":
        print(f"| measured peak allocated ({torch.cuda.get_device_name()}) | {measure(cfg, steps):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
