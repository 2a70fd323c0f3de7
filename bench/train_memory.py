"""Training memory of a recipe's denoiser: an estimate from parameter counts, and on a GPU the measured peak.

    python bench/train_memory.py recipe=music_dit_1b_24gb           # estimate (any machine)
    python bench/train_memory.py recipe=music_dit_1b_24gb device=cuda steps=3   # and measure on a GPU

The estimate counts bytes per denoiser parameter: weights and gradients (4 B each under fp32 or bf16-mixed, 2 B
under bf16-true), optimizer moments (8 B for AdamW, 2 B for 8-bit AdamW), the EMA copy (4 B), plus the block
inputs kept by gradient checkpointing (batch · frames · width · 4 B per block). The measurement runs `steps`
optimizer steps of the real loss on random latents and text states (`bench/train_step.py`'s loop) and reports
`torch.cuda.max_memory_allocated`, which excludes the CUDA context (~0.5 GB) and allocator slack.
"""

from __future__ import annotations

import sys

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.conditioning.types import Conditioning
from audiodiff.config import compose_config

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


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
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
