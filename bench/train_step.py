"""Training-step throughput of recipe models, without data loading or text encoding.

    python bench/train_step.py recipe=sfx_quick                       # one configuration
    python bench/train_step.py recipe=sfx_quick variants='|denoiser.patch=2|denoiser.patch=2;denoiser.channels=96'
    python bench/train_step.py recipe=sfx_quick variants='|task.compile=true|trainer.precision=bf16-mixed'

Also counts one step's FLOPs (forward and backward matrix products and attention, torch.utils.flop_counter) and the
rate achieved, beside the machine's peak: on a known GPU (or with `peak_tflops=`) the bf16 dense peak, on a CPU the
measured fp32 matrix-multiply rate (and bf16's where the CPU has AVX-512 BF16 or AMX), so that the fraction of peak
means the same on another machine.

`variants` lists override sets separated by `|` (overrides inside one set separated by `;`; an empty set is the
base), each applied on top of the base overrides. Prints a markdown table: parameters, latent shape, ms per
optimizer step, steps/s and samples/s, and the steps that fit in `budget_s` seconds. The batch is random data of
the representation's latent shape with random text states of the encoder's width, so the number measures the
denoiser, loss and optimizer (a real run adds data loading, mel encoding, EMA and logging: about 60 ms per step
for the sfx recipes on 2 CPU cores).
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiodiff.conditioning.types import Conditioning
from audiodiff.models.build import build_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def time_steps(cfg, steps: int, warmup: int, device: torch.device, tokens: int = 16) -> dict[str, float]:
    """Mean seconds per optimizer step of the configured denoiser on random data."""
    model = build_model(cfg)
    net = model.net.to(device).train()
    frames = round(float(cfg.data.segment_seconds) * model.representation.frame_rate)
    batch = int(cfg.data.batch_size)
    z = torch.randn(batch, model.representation.latent_channels, frames, device=device)
    dim = model.text_encoder.dim
    ctx = torch.randn(batch, tokens, dim, device=device)
    cond = Conditioning(ctx, torch.ones(batch, tokens, dtype=torch.bool, device=device), ctx.mean(1))
    if model.timing is not None:  # a timing-conditioned model: every clip the segment's full length, from its start
        seconds = torch.full((batch,), float(cfg.data.segment_seconds), device=device)
        cond = model.timing.condition(cond, torch.zeros_like(seconds), seconds)
    opt = instantiate(cfg.optim)(net.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in str(cfg.trainer.precision))

    def step() -> None:
        with autocast:
            loss = model.objective.loss(net, z, cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # one step, eagerly: matrix products and attention of forward and backward
        step()
    flops = counter.get_total_flops()
    if cfg.task.get("compile", False):  # after counting: FLOPs are those of the eager step
        net.compile()
        warmup += 2  # the first compiled steps pay the compilation (forward, then backward)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in net.parameters())
    return {"params": params, "shape": f"{batch}×{z.shape[1]}×{frames}", "s": seconds, "batch": batch,
            "flops": flops}


# Dense bf16 tensor-core peaks (TFLOP/s) by device name, for the model-FLOP utilisation column.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device, given: str | None) -> float | None:
    """The hardware's peak for the MFU column: `peak_tflops=` if given, else a known GPU's bf16 peak, else None."""
    if given:
        return float(given)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return None


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10, threads: int | None = None) -> float:
    """Measured TFLOP/s of a square n × n matrix product in `dtype` on the CPU (the best of `reps` timed products
    after one warm-up), with torch's current threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX-512 BF16 or AMX), per /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str]) -> None:
    own = ("variants=", "steps=", "budget_s=", "device=", "peak_tflops=")
    base = [a for a in argv if not a.startswith(own)]
    opts = dict(a.split("=", 1) for a in argv if a.startswith(own))
    variants = [v.strip() for v in opts.get("variants", "").split("|")]
    steps = int(opts.get("steps", 20))
    budget = float(opts.get("budget_s", 840))
    device = torch.device(opts.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    print(f"{cpu_name()}, torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; base "
          f"overrides: {' '.join(base) or '(none)'}")
    peak = peak_tflops(device, opts.get("peak_tflops"))
    if device.type == "cpu" and peak is None:
        peak = matmul_peak(torch.float32)
        line = f"measured fp32 matmul peak: {1e3 * peak:.0f} GFLOP/s"
        if cpu_has_bf16():
            line += f"; bf16: {1e3 * matmul_peak(torch.bfloat16):.0f} GFLOP/s (trainer.precision=bf16-mixed)"
        print(line + " (MFU below is against fp32)")
    print(f"| variant | params | batch×channels×frames | ms/step | steps/s | samples/s | steps in {budget:.0f} s "
          f"| GFLOP/step | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        extra = [o for o in variant.split(";") if o]
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose("train", overrides=[*base, *extra])
        OmegaConf.resolve(cfg)
        r = time_steps(cfg, steps, warmup=3, device=device)
        rate = r["flops"] / r["s"] / 1e12
        mfu = f"{100 * rate / peak:.1f}%" if peak else "—"
        print(f"| {variant or 'base'} | {r['params'] / 1e6:.2f} M | {r['shape']} | {1e3 * r['s']:.0f} | "
              f"{1 / r['s']:.2f} | {r['batch'] / r['s']:.0f} | {budget / r['s']:.0f} | {r['flops'] / 1e9:.1f} | "
              f"{rate:.3f} | {mfu} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
