"""Stable Audio Open converted into audiodiff against diffusers' StableAudioPipeline: same process, same (random)
weights, same settings; per denoiser step and end to end (prompt to waveform).

    python bench/stable_audio.py                                    # published size, 4 s window, 10 steps, batch 1
    python bench/stable_audio.py size=small steps=10 batches=1,8    # a small model: checks the script quickly
    python bench/stable_audio.py seconds=47.55 steps=100 device=cuda compile=true

A random diffusers pipeline of the chosen size is saved to a temporary folder, converted with
`audiodiff.models.stable_audio_convert.convert` and loaded with `AudioDiffusionPipeline.from_pretrained`. The DiT's
window is `seconds` of latent frames (the published model always runs 1024 frames, 47.55 s, and trims; a 4 s window
is what a CPU can run in minutes). Both run guidance 7 without a negative prompt (a batch of 2B per step) and the
scheduler's DPM-Solver++(2M) SDE. Times are medians of `repeats` runs after one warm-up, ours and diffusers' run
alternately; the step is one DiT forward on the doubled batch.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

OPTIONS = {"size": "published", "seconds": "4", "steps": "10", "batches": "1", "repeats": "2", "device": "cpu",
           "compile": "false", "threads": "0"}
HOP, RATE = 2048, 44100


def _tokenizer():
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "</s>", "<unk>", *"a dog barks in the rain with soft warm pad and loud drums".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                      model_max_length=128)


def reference_pipeline(size: str, frames: int):
    """A random diffusers StableAudioPipeline: the published configuration (T5-base shape) or a small one."""
    import diffusers
    import transformers as tf
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    if size == "published":
        dit, vae, t5 = {}, {}, dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
        projection = dict(text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512)
    elif size == "small":
        dit = dict(num_layers=4, attention_head_dim=64, num_attention_heads=4, num_key_value_attention_heads=2,
                   cross_attention_dim=128, cross_attention_input_dim=128, global_states_input_dim=256)
        vae = dict(encoder_hidden_size=128, channel_multiples=[1, 1, 2, 2, 2], decoder_channels=32)
        t5 = dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
        projection = dict(text_encoder_dim=128, conditioning_dim=128, min_value=0, max_value=512)
    else:
        raise ValueError(f"size: expected 'published' or 'small', got {size!r}")
    torch.manual_seed(0)
    return diffusers.StableAudioPipeline(
        transformer=diffusers.StableAudioDiTModel(sample_size=frames, **dit),
        vae=diffusers.AutoencoderOobleck(**vae),
        text_encoder=tf.T5EncoderModel(tf.T5Config(vocab_size=32128, pad_token_id=0, eos_token_id=1,
                                                   decoder_start_token_id=0, **t5)).eval(),
        projection_model=StableAudioProjectionModel(**projection),
        tokenizer=_tokenizer(),
        scheduler=diffusers.CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500))


def _interleaved(ours: Callable[[], object], reference: Callable[[], object], repeats: int,
                 device: torch.device) -> tuple[float, float, float, float]:
    """(median seconds of `ours`, of `reference`, peak GiB of each on a GPU, else nan), the two run alternately
    (one warm-up each, then `repeats` pairs), so a machine whose load drifts (a shared CPU) slows both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    peaks = [math.nan, math.nan]
    for i in range(repeats + 1):
        for k, run in enumerate((ours, reference)):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[k] = max(0.0 if math.isnan(peaks[k]) else peaks[k], torch.cuda.max_memory_allocated() / 2**30)
            if i:  # the first pair warms up
                times[k].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), peaks[0], peaks[1]


def _time_batch(ours, reference, batch: int, frames: int, seconds: float, steps: int, repeats: int,
                device: torch.device) -> tuple[float, ...]:
    """(our step, diffusers' step, our end to end, diffusers' end to end) in seconds for `batch` prompts, and the
    peak GPU memory of each end to end in GiB (nan on a CPU)."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    from audiodiff.conditioning.types import Conditioning

    net, dit = ours.model.net, reference.transformer
    prompts = ["a dog barks in the rain"] * batch
    n = 2 * batch  # classifier-free guidance doubles the batch
    x = torch.randn(n, dit.config.in_channels, frames, device=device)
    tau = torch.full((n,), 0.5, device=device)
    tokens = torch.randn(n, 130, dit.config.cross_attention_dim, device=device)
    globals_ = torch.randn(n, dit.config.global_states_input_dim, device=device)
    cond = Conditioning(tokens, torch.ones(n, 130, dtype=torch.bool, device=device), None, globals_)
    rope = get_1d_rotary_pos_embed(dit.config.attention_head_dim // 2, frames + 1, use_real=True,
                                   repeat_interleave_real=False)
    with torch.inference_mode():
        step_ours, step_ref, _, _ = _interleaved(
            lambda: net(x, tau, cond),
            lambda: dit(x, tau, encoder_hidden_states=tokens, global_hidden_states=globals_[:, None],
                        rotary_embedding=rope, return_dict=False), repeats, device)
        end_ours, end_ref, peak_ours, peak_ref = _interleaved(
            lambda: ours(prompts, duration=seconds, steps=steps, guidance=7.0),
            lambda: reference(prompts, audio_end_in_s=seconds, num_inference_steps=steps, guidance_scale=7.0),
            repeats, device)
    return step_ours, step_ref, end_ours, end_ref, peak_ours, peak_ref


def main(argv: list[str]) -> None:
    unknown = [a for a in argv if a.split("=", 1)[0] not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; expected key=value of {sorted(OPTIONS)}")
    args = {**OPTIONS, **dict(a.split("=", 1) for a in argv)}
    device = torch.device(args["device"])
    if int(args["threads"]):
        torch.set_num_threads(int(args["threads"]))
    seconds, steps, repeats = float(args["seconds"]), int(args["steps"]), int(args["repeats"])
    frames = math.ceil(seconds * RATE / HOP)
    from audiodiff.models.stable_audio_convert import convert
    from audiodiff.pipeline import AudioDiffusionPipeline

    with tempfile.TemporaryDirectory(prefix="bench-sao-") as tmp:
        reference = reference_pipeline(args["size"], frames)
        reference.save_pretrained(Path(tmp) / "diffusers")
        ours = AudioDiffusionPipeline.from_pretrained(convert(Path(tmp) / "diffusers", Path(tmp) / "export"), device,
                                                      watermark=False)  # parity and speed of the model alone
    reference.to(device)
    if args["compile"] == "true":
        ours.model.net = torch.compile(ours.model.net)
        reference.transformer = torch.compile(reference.transformer)
    params = sum(p.numel() for p in ours.model.net.parameters())

    rows = [(batch, *_time_batch(ours, reference, batch, frames, seconds, steps, repeats, device))
            for batch in (int(b) for b in args["batches"].split(","))]
    mode = "compiled" if args["compile"] == "true" else "eager"
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}, {mode} fp32; DiT {params / 1e6:.1f} M parameters, {frames} frames "
          f"({seconds} s), {steps} steps, guidance 7\n")
    memory = device.type == "cuda"
    print("| batch | step ours (s) | step diffusers (s) | end to end ours (s) | end to end diffusers (s) | speed-up |"
          + (" peak GiB ours | peak GiB diffusers |" if memory else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if memory else ""))
    for batch, so, sr, eo, er, po, pr in rows:
        print(f"| {batch} | {so:.3f} | {sr:.3f} | {eo:.2f} | {er:.2f} | {er / eo:.2f}× |"
              + (f" {po:.2f} | {pr:.2f} |" if memory else ""))

if __name__ == "__main__":
    main(sys.argv[1:])
