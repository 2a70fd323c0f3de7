"""Stable Audio 3 converted into audiodiff against diffusers' StableAudio3Pipeline: same process, same (random)
weights, same settings; per denoiser step and end to end (prompt to waveform).

    python bench/stable_audio3.py                                     # published size, 10 s, 8 ping-pong steps
    python bench/stable_audio3.py size=small steps=4 batches=1,4      # a small model: runs in seconds on a CPU
    python bench/stable_audio3.py seconds=60 device=cuda compile=true
    python bench/stable_audio3.py kind=base steps=50 guidance=7       # the base model's Euler steps with CFG
    python bench/stable_audio3.py only=step repeats=1                 # the published DiT's step alone (no pipeline)

A random diffusers pipeline of the chosen size (published: SA3 Medium's DiT, SAME-S, T5Gemma-b's encoder shape) is
saved to a temporary folder, converted with `audiodiff.models.stable_audio3_convert.convert` and loaded with
`AudioDiffusionPipeline.from_pretrained`. Times are medians of `repeats` runs after one warm-up, ours and diffusers'
run alternately; the step is one DiT forward (on the doubled batch with guidance > 1).
"""

from __future__ import annotations

import math
import platform
import sys
import tempfile
from pathlib import Path

import torch
from stable_audio import _interleaved  # bench/stable_audio.py, beside this script

OPTIONS = {"size": "published", "seconds": "10", "steps": "8", "batches": "1", "repeats": "2", "device": "cpu",
           "compile": "false", "threads": "0", "kind": "distilled", "guidance": "1", "only": "all"}


def _tokenizer():
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<eos>", "<bos>", "<unk>", *"a dog barks in the rain with soft warm pad and loud drums".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                      unk_token="<unk>", model_max_length=256)


def reference_pipeline(size: str, kind: str):
    """A random diffusers StableAudio3Pipeline: the published configuration or a small one."""
    import diffusers
    import transformers as tf
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    if size == "published":
        dit, vae, duration = {}, {}, {}
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    num_key_value_heads=12, head_dim=64, query_pre_attn_scalar=64, vocab_size=256000)
    elif size == "small":
        dit = dict(io_channels=64, embed_dim=256, depth=4, num_heads=4, cond_token_dim=128, global_cond_dim=128,
                   local_add_cond_dim=65, num_memory_tokens=16)
        vae = dict(patch_size=64, encoder_channels=32, encoder_c_mults=[4], encoder_strides=[16],
                   encoder_transformer_depths=[2], latent_dim=64)
        duration = dict(output_dim=128)
        text = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, head_dim=32, query_pre_attn_scalar=32, vocab_size=32000)
    else:
        raise ValueError(f"size: expected 'published' or 'small', got {size!r}")
    if kind not in ("distilled", "base"):
        raise ValueError(f"kind: expected 'distilled' or 'base', got {kind!r}")
    torch.manual_seed(0)
    module = dict(text, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    config = tf.T5GemmaConfig(encoder=module, decoder=module, vocab_size=text["vocab_size"], is_encoder_decoder=False)
    return diffusers.StableAudio3Pipeline(
        transformer=diffusers.StableAudio3DiTModel(**dit), vae=diffusers.AutoencoderSAME(**vae),
        text_encoder=tf.T5GemmaEncoderModel(config).eval(), tokenizer=_tokenizer(),
        duration_embedder=StableAudio3DurationEmbedder(**duration),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1,
                                                            stochastic_sampling=kind == "distilled"))


def _time_batch(ours, reference, batch: int, seconds: float, steps: int, guidance: float, repeats: int,
                device: torch.device) -> tuple[float, ...]:
    """(our step, diffusers' step, our end to end, diffusers' end to end) in seconds for `batch` prompts, and the
    peak GPU memory of each end to end in GiB (nan on a CPU)."""
    from audiodiff.conditioning.types import Conditioning

    net, dit = ours.model.net, reference.transformer
    prompts = ["a dog barks in the rain"] * batch
    n = batch * (2 if guidance > 1 else 1)
    frames = math.ceil(seconds * ours.sample_rate / ours.model.representation.latent_hop)
    x = torch.randn(n, dit.config.io_channels, frames, device=device)
    t = torch.full((n,), 0.5, device=device)
    tokens = torch.randn(n, 257, dit.config.cond_token_dim, device=device)
    mask = torch.ones(n, 257, dtype=torch.bool, device=device)
    mask[:, 12:256] = False
    globals_ = torch.randn(n, dit.config.global_cond_dim, device=device)
    cond = Conditioning(tokens, mask, None, globals_)
    with torch.inference_mode():
        step_ours, step_ref, _, _ = _interleaved(
            lambda: net(x, t, cond),
            lambda: dit(x, t, encoder_hidden_states=tokens, global_hidden_states=globals_,
                        encoder_attention_mask=mask, return_dict=False), repeats, device)
        end_ours, end_ref, peak_ours, peak_ref = _interleaved(
            lambda: ours(prompts, duration=seconds, steps=steps, guidance=guidance),
            lambda: reference(prompts, duration=seconds, num_inference_steps=steps, guidance_scale=guidance),
            repeats, device)
    return step_ours, step_ref, end_ours, end_ref, peak_ours, peak_ref


def step_only(size: str, seconds: float, batches: list[int], repeats: int, device: torch.device) -> None:
    """One DiT forward of the chosen size, ours (weights through the converter's key map) against diffusers'."""
    import diffusers

    from audiodiff.denoisers.stable_audio3_dit import StableAudio3DiT
    from audiodiff.models.stable_audio3_keys import DIFFUSERS_DIT3
    from audiodiff.models.stable_audio_keys import rename

    torch.manual_seed(0)
    dit = diffusers.StableAudio3DiTModel(**({} if size == "published" else
                                            dict(io_channels=64, embed_dim=256, depth=4, num_heads=4,
                                                 cond_token_dim=128, global_cond_dim=128, local_add_cond_dim=65,
                                                 num_memory_tokens=16))).eval()
    c = dit.config
    net = StableAudio3DiT(c.io_channels, c.embed_dim, c.depth, c.num_heads, c.cond_token_dim, c.global_cond_dim,
                          c.timestep_features_dim, 1.0, c.num_memory_tokens, c.use_differential_attention, c.ff_mult,
                          c.local_add_cond_dim)
    net.load_state_dict(rename(dit.state_dict(), DIFFUSERS_DIT3, "transformer"))
    net, dit = net.eval().to(device), dit.to(device)
    frames = math.ceil(seconds * 44100 / 4096)
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}, eager fp32; {size} DiT "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, {frames} frames ({seconds} s)\n")
    print("| batch | step ours (s) | step diffusers (s) | speed-up |\n|---|---|---|---|")
    for batch in batches:
        ours, ref = _step_pair(net, dit, batch, frames, repeats, device)
        print(f"| {batch} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f}× |")


def _step_pair(net, dit, batch: int, frames: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of one forward of ours and of diffusers' DiT on the same inputs."""
    from audiodiff.conditioning.types import Conditioning

    c = dit.config
    x = torch.randn(batch, c.io_channels, frames, device=device)
    t = torch.full((batch,), 0.5, device=device)
    tokens = torch.randn(batch, 257, c.cond_token_dim, device=device)
    mask = torch.ones(batch, 257, dtype=torch.bool, device=device)
    globals_ = torch.randn(batch, c.global_cond_dim, device=device)
    with torch.inference_mode():
        ours, ref, _, _ = _interleaved(
            lambda: net(x, t, Conditioning(tokens, mask, None, globals_)),
            lambda: dit(x, t, encoder_hidden_states=tokens, global_hidden_states=globals_,
                        encoder_attention_mask=mask, return_dict=False), repeats, device)
    return ours, ref


def main(argv: list[str]) -> None:
    unknown = [a for a in argv if a.split("=", 1)[0] not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; expected key=value of {sorted(OPTIONS)}")
    args = {**OPTIONS, **dict(a.split("=", 1) for a in argv)}
    device = torch.device(args["device"])
    if int(args["threads"]):
        torch.set_num_threads(int(args["threads"]))
    seconds, steps, repeats, guidance = (float(args["seconds"]), int(args["steps"]), int(args["repeats"]),
                                         float(args["guidance"]))
    if args["only"] == "step":
        step_only(args["size"], seconds, [int(b) for b in args["batches"].split(",")], repeats, device)
        return
    from audiodiff.models.stable_audio3_convert import convert
    from audiodiff.pipeline import AudioDiffusionPipeline

    with tempfile.TemporaryDirectory(prefix="bench-sa3-") as tmp:
        reference = reference_pipeline(args["size"], args["kind"])
        reference.save_pretrained(Path(tmp) / "diffusers")
        ours = AudioDiffusionPipeline.from_pretrained(convert(Path(tmp) / "diffusers", Path(tmp) / "export"), device,
                                                      watermark=False)  # speed of the model alone
    reference.to(device)
    reference.set_progress_bar_config(disable=True)
    if args["compile"] == "true":
        ours.model.net = torch.compile(ours.model.net)
        reference.transformer = torch.compile(reference.transformer)
    params = sum(p.numel() for p in ours.model.net.parameters())

    rows = [(batch, *_time_batch(ours, reference, batch, seconds, steps, guidance, repeats, device))
            for batch in (int(b) for b in args["batches"].split(","))]
    mode = "compiled" if args["compile"] == "true" else "eager"
    sampler = f"{steps} {'ping-pong' if args['kind'] == 'distilled' else 'Euler'} steps, guidance {guidance:g}"
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}, {mode} fp32; {args['size']} size, DiT {params / 1e6:.1f} M "
          f"parameters, {seconds} s, {sampler}\n")
    memory = device.type == "cuda"
    print("| batch | step ours (s) | step diffusers (s) | end to end ours (s) | end to end diffusers (s) | speed-up |"
          + (" peak GiB ours | peak GiB diffusers |" if memory else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if memory else ""))
    for batch, so, sr, eo, er, po, pr in rows:
        print(f"| {batch} | {so:.3f} | {sr:.3f} | {eo:.2f} | {er:.2f} | {er / eo:.2f}× |"
              + (f" {po:.2f} | {pr:.2f} |" if memory else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
