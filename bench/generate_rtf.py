"""Generation speed of recipe models: real-time factor (seconds of audio per wall-clock second), prompt to waveform.

    python bench/generate_rtf.py                                   # the sfx and music recipes, batch 1 and 8
    python bench/generate_rtf.py recipes=sfx_quick,music batches=1,4 steps=25 device=cuda
    python bench/generate_rtf.py recipes=music text_encoder.name_or_path=/path/to/minilm   # + Hydra overrides

Each recipe's model is built from its configuration with random weights (speed does not depend on the values) and
runs the whole pipeline: text encoding, the recipe's default sampler and guidance (classifier-free guidance doubles
the batch), and decoding to audio. The table splits wall time into sampling and decoding, median of `repeats` runs
after one warm-up, and reports RTF = batch · clip seconds / wall seconds (above 1: faster than real time).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from audiodiff.config import compose_config
from audiodiff.models.build import build_model
from audiodiff.pipeline import AudioDiffusionPipeline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generation(pipe: AudioDiffusionPipeline, batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds of sampling, decoding and both for `batch` prompts of the model's clip length."""
    model, device = pipe.model, pipe.device
    prompts = [f"prompt number {i}" for i in range(batch)]
    frames = model.representation.num_frames(model.duration)
    settings = pipe.settings(steps=steps)
    sample, decode = [], []
    for run in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        z = model.sample_latents(prompts, frames, list(range(batch)), settings)
        _sync(device)
        middle = time.perf_counter()
        model.representation.decode(z)
        _sync(device)
        end = time.perf_counter()
        if run:  # the first run warms up
            sample.append(middle - start)
            decode.append(end - middle)
    s, d = statistics.median(sample), statistics.median(decode)
    return {"sample_s": s, "decode_s": d, "total_s": s + d, "rtf": batch * model.duration / (s + d)}


OPTIONS = ("recipes", "batches", "steps", "repeats", "device")


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in OPTIONS)
    overrides = [a for a in argv if a.split("=", 1)[0] not in OPTIONS]  # applied to every recipe
    recipes = args.get("recipes", "sfx_quick,sfx_long,sfx,music_quick,music").split(",")
    batches = [int(b) for b in args.get("batches", "1,8").split(",")]
    steps = int(args.get("steps", 25))
    repeats = int(args.get("repeats", 3))
    device = torch.device(args.get("device", "cpu"))
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}; {steps} sampler steps\n")
    print("| recipe | denoiser | params | sampler | vocoder | clip s | batch | sample s | decode s | RTF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for recipe in recipes:
        cfg = compose_config("train", [f"recipe={recipe}", *overrides])
        model = build_model(cfg).to(device).eval()
        pipe = AudioDiffusionPipeline(model, watermark=False)  # the model's speed; bench/watermark.py times the mark
        params = sum(p.numel() for p in model.net.parameters()) / 1e6
        denoiser = cfg.denoiser._target_.rsplit(".", 1)[-1]
        vocoder = cfg.vocoder._target_.rsplit(".", 1)[-1]
        for batch in batches:
            r = time_generation(pipe, batch, steps, repeats)
            sampler = f"{model.sampler.name}, guidance {model.sampler.guidance:g}"
            print(f"| {recipe} | {denoiser} | {params:.1f} M | {sampler} | {vocoder} | {model.duration:g} | {batch} "
                  f"| {r['sample_s']:.2f} | {r['decode_s']:.2f} | {r['rtf']:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
