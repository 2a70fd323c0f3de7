"""Sampling-step time of the denoisers (one guided network call: batch 2 = conditional + unconditional).

    python bench/denoiser_step.py                      # CPU: U-Net and DiT at small sizes
    python bench/denoiser_step.py --sizes large --compare-diffusers   # GPU: Stable Audio Open's DiT shape

Prints a markdown table: model, parameters, latent frames, mode, ms per step, model FLOPs per step (counted once,
eagerly, with torch.utils.flop_counter) and the FLOP rate achieved. On a GPU each model runs eagerly in
bf16, under `torch.compile`, and compiled with the whole step captured in a CUDA graph and replayed ("graphs").
With --compare-diffusers, diffusers' StableAudioDiTModel at the same shape runs eagerly in bf16 in the same
process, so the ratio is measured side by side.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable

import torch

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers import DiT1d, UNet1d

TEXT_DIM, TEXT_TOKENS = 768, 64
SIZES: dict[str, list[tuple[str, Callable[[int], torch.nn.Module], list[int]]]] = {
    "small": [
        ("unet1d c64 patch4", lambda d: UNet1d(d, channels=64, patch=4, context_dim=TEXT_DIM), [256, 1024]),
        ("unet1d c128 patch2", lambda d: UNet1d(d, channels=128, patch=2, context_dim=TEXT_DIM), [256, 1024]),
        ("dit w256 d8 patch2", lambda d: DiT1d(d, width=256, depth=8, heads=4, patch=2, context_dim=TEXT_DIM),
         [256, 1024]),
    ],
}


def large_sizes(layers: int, frames: int) -> list[tuple[str, Callable[[int], torch.nn.Module], list[int]]]:
    """Stable Audio Open's transformer shape (width 1536, 24 heads of 64), `layers` deep."""
    return [(f"dit w1536 d{layers} (SAO shape)",
             lambda d: DiT1d(d, width=1536, depth=layers, heads=24, patch=1, context_dim=TEXT_DIM,
                             global_dim=TEXT_DIM), [frames])]


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def inputs(channels: int, frames: int, device: torch.device, dtype: torch.dtype) -> tuple:
    x = torch.randn(2, channels, frames, device=device, dtype=dtype)
    t = torch.rand(2, device=device, dtype=dtype)
    tokens = torch.randn(2, TEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype)
    cond = Conditioning(tokens, torch.ones(2, TEXT_TOKENS, dtype=torch.bool, device=device), None,
                        torch.randn(2, TEXT_DIM, device=device, dtype=dtype))
    return x, t, cond


def count_flops(net: torch.nn.Module, channels: int, frames: int, device: torch.device) -> int:
    """FLOPs of one forward pass (matrix products and attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, cond = inputs(channels, frames, device, next(net.parameters()).dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x, t, cond)
    return counter.get_total_flops()


def graphed(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture fn (static inputs) in a CUDA graph and return its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=["small", "large"], default="small")
    parser.add_argument("--layers", type=int, default=24, help="depth of the large DiT and of diffusers' model")
    parser.add_argument("--frames", type=int, default=1024, help="latent frames of the large comparison")
    parser.add_argument("--channels", type=int, default=64, help="latent channels")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compare-diffusers", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; batch 2 (guided step), "
          f"{TEXT_TOKENS} text tokens of width {TEXT_DIM}, {args.channels} latent channels")
    print("| model | params | frames | mode | ms/step | GFLOP/step | achieved TFLOP/s |\n|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    sizes = SIZES["small"] if args.sizes == "small" else large_sizes(args.layers, args.frames)
    for label, make, lengths in sizes:
        net = make(args.channels).to(device).eval()
        params = sum(p.numel() for p in net.parameters())
        for frames in lengths:
            flops = count_flops(net, args.channels, frames, device)
            modes: list[tuple[str, torch.dtype, Callable]] = [("eager fp32", torch.float32, lambda m: m)]
            if device.type == "cuda":
                modes = [("eager bf16", torch.bfloat16, lambda m: m),
                         ("compile bf16", torch.bfloat16, lambda m: torch.compile(m)),
                         ("compile+graphs bf16", torch.bfloat16, lambda m: torch.compile(m))]
            for mode, dtype, wrap in modes:
                model = wrap(net.to(dtype))
                x, t, cond = inputs(args.channels, frames, device, dtype)
                with torch.inference_mode():
                    fn = functools.partial(model, x, t, cond)
                    if "graphs" in mode:
                        fn = graphed(fn)
                    seconds = timed(fn, device, args.repeats)
                print(f"| {label} | {params / 1e6:.1f} M | {frames} | {mode} | {1e3 * seconds:.2f} | "
                      f"{flops / 1e9:.1f} | {flops / seconds / 1e12:.3f} |", flush=True)
        del net
    if args.compare_diffusers:
        compare_diffusers(args.channels, device, args.repeats, args.layers, args.frames)


def compare_diffusers(channels: int, device: torch.device, repeats: int, layers: int, frames: int) -> None:
    """diffusers' StableAudioDiTModel at Stable Audio Open's shape, eager, batch 2 (bf16 on GPU)."""
    from diffusers import StableAudioDiTModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = StableAudioDiTModel(in_channels=channels, out_channels=channels, num_layers=layers, attention_head_dim=64,
                                num_attention_heads=24, num_key_value_attention_heads=12, cross_attention_dim=768,
                                time_proj_dim=256, global_states_input_dim=1536,
                                cross_attention_input_dim=TEXT_DIM).to(device, dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(2, channels, frames, device=device, dtype=dtype)
    t = torch.rand(2, device=device, dtype=dtype) * 1000
    text = torch.randn(2, TEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype)
    glob = torch.randn(2, 1, 1536, device=device, dtype=dtype)
    # As StableAudioPipeline builds it: rotary over half of each head, for the latent frames plus the global token.
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    rotary = get_1d_rotary_pos_embed(32, frames + 1, use_real=True, repeat_interleave_real=False)
    rotary = tuple(r.to(device) for r in rotary)
    with torch.inference_mode():
        seconds = timed(lambda: model(x, t, encoder_hidden_states=text, global_hidden_states=glob,
                                      rotary_embedding=rotary, return_dict=False), device, repeats)
    mode = "eager bf16" if dtype == torch.bfloat16 else "eager fp32"
    print(f"| diffusers StableAudioDiTModel | {params / 1e6:.1f} M | {frames} | {mode} | {1e3 * seconds:.2f} |")


if __name__ == "__main__":
    main()
