"""Fine-tuning a converted Stable Audio Open model (tiny, random weights) on mono clips: LoRA and full fine-tuning
lower the loss on the clips, and each result is a self-contained stereo export that loads and generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("diffusers")
pytest.importorskip("torchsde")

import stable_audio_tiny as tiny  # noqa: E402

from audiodiff.models.stable_audio_convert import convert  # noqa: E402
from audiodiff.pipeline import AudioDiffusionPipeline  # noqa: E402
from audiodiff.training.stages import run_stages  # noqa: E402

CAPTION = "a rising chirp"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sao_ft")
    tiny.save_diffusers_pipeline(root / "src")
    return convert(root / "src", root / "base")


def clips(folder: Path, sample_rate: int, seconds: float, count: int = 8) -> Path:
    """Mono rising chirps without splits (a stereo model reads them with the channel duplicated)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    lines = []
    for i in range(count):
        wav = 0.5 * np.sin(2 * np.pi * (50 + 20 * i) * t * (1 + 2 * t))
        sf.write(folder / f"chirp{i}.wav", wav.astype(np.float32), sample_rate)
        lines.append(f'{{"audio": "chirp{i}.wav", "caption": "{CAPTION}"}}\n')
    (folder / "manifest.jsonl").write_text("".join(lines))
    return folder / "manifest.jsonl"


def fixed_loss(pipe: AudioDiffusionPipeline, manifest: Path) -> float:
    """The objective's loss on the clips (both channels the mono clip) with fixed noise and times."""
    model = pipe.model
    files = sorted(manifest.parent.glob("chirp*.wav"))
    wav = torch.stack([torch.from_numpy(sf.read(f, dtype="float32")[0])[None].repeat(2, 1) for f in files])
    seconds = torch.full((len(files),), wav.shape[-1] / model.sample_rate)
    with torch.no_grad():
        z = model.representation.encode(wav)
        cond = model.timing.condition(model.encode_text([CAPTION] * len(files)), torch.zeros_like(seconds), seconds)
        losses = [model.objective.loss(model.net, z, cond, generator=torch.Generator().manual_seed(s)).item()
                  for s in range(4)]
    return float(np.mean(losses))


@pytest.mark.parametrize(("method", "text"), [("lora", False), ("full", False), ("lora", True)])
def test_a_converted_stable_audio_model_fine_tunes_and_exports_on_its_own(base, tmp_path, method, text):
    plain = AudioDiffusionPipeline.from_pretrained(base)
    manifest = clips(tmp_path / "clips", plain.sample_rate, plain.model.duration)
    run_stages(["recipe=finetune", f"init={base}", "data=manifest", f"data.manifest={manifest}",
                "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=30", "trainer.val_check_interval=30",
                "trainer.limit_val_batches=1", "task.warmup_steps=2", "task.ema_decay=0.5", "checkpoint_every=30",
                "preview.prompts=[]", "optim.lr=3e-3", f"finetune={method}",
                *(["finetune.rank=4"] if method == "lora" else []), f"finetune.train_text_encoder={text}",
                f"run_dir={tmp_path / 'run'}"])
    export = tmp_path / "run" / "export"
    assert (export / "adapter.safetensors").exists() == (method == "lora")
    assert sorted(p.name for p in (export / "text_encoder").iterdir()) == \
        sorted(p.name for p in (base / "text_encoder").iterdir())  # the T5 travels with the model

    moved = base.with_name("base_moved")  # loads and generates without the model it started from
    shutil.move(base, moved)
    try:
        tuned = AudioDiffusionPipeline.from_pretrained(export)
        assert tuned.model.text_encoder is not None
        out = tuned([CAPTION], duration=0.1, steps=2)
    finally:
        shutil.move(moved, base)
    assert out.audio.shape[:2] == (1, 2) and torch.isfinite(out.audio).all()
    before, after = fixed_loss(plain, manifest), fixed_loss(tuned, manifest)
    print(f"{method}: loss on the clips {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before
    # a trained T5 goes into the export's weights (the copied T5 folder stays the source's)
    assert tuned.trained_text_encoder == text
    with torch.no_grad():
        tuned_states = tuned.model.encode_text([CAPTION]).tokens
        plain_states = plain.model.encode_text([CAPTION]).tokens
    assert torch.equal(tuned_states, plain_states) != text


def test_gradient_checkpointing_of_the_stable_audio_dit_gives_the_same_gradients():
    from audiodiff.conditioning.types import Conditioning
    from audiodiff.denoisers.stable_audio_dit import StableAudioDiT

    torch.manual_seed(0)
    net = StableAudioDiT(in_channels=8, width=32, depth=3, heads=4, kv_heads=2, context_dim=12, global_dim=6)
    x, tau = torch.randn(2, 8, 10), torch.rand(2)
    cond = Conditioning(torch.randn(2, 5, 12), torch.ones(2, 5, dtype=torch.bool), None, torch.randn(2, 6))
    grads = []
    for checkpointing in (False, True):
        net.gradient_checkpointing = checkpointing
        net.zero_grad()
        out = net.train()(x, tau, cond)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-5, atol=1e-7, msg=name)
