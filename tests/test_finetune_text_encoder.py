"""Fine-tuning with the text encoder unfrozen (finetune.train_text_encoder=true): its weights train (LoRA on its
attention, or all of them), no cached text states are used, and the export carries the trained text encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audiodiff.models.adapters import read_adapter
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.checkpoints import load_checkpoint
from tests.test_finetune import clips, finetune, fixed_loss, make_base

PROMPT = "a rising chirp"


def text_states(pipe: AudioDiffusionPipeline) -> torch.Tensor:
    with torch.no_grad():
        return pipe.model.encode_text([PROMPT, "a falling chirp"]).tokens


def generate(pipe: AudioDiffusionPipeline) -> torch.Tensor:
    """Unmarked audio (pipelines load with watermark=False): the mark carries the model's hash."""
    return pipe([PROMPT], duration=0.5, steps=2, seed=3, guidance=3.0).audio


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    base = make_base(root / "base", "unet1d_tiny")
    manifest = clips(root / "clips")
    finetune(base, manifest, root / "lora", "finetune.rank=4", "optim.lr=3e-3", "finetune.train_text_encoder=true")
    finetune(base, manifest, root / "full", "finetune=full", "optim.lr=1e-3", "finetune.train_text_encoder=true")
    return {"base": base, "manifest": manifest, "lora": root / "lora", "full": root / "full"}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_text_encoder_trains_and_the_loss_falls(runs, method):
    plain = AudioDiffusionPipeline.from_pretrained(runs["base"], watermark=False)
    source = plain.model.text_encoder.state_dict()
    exported = {k[len("text_encoder."):]: v for k, v in load_file(runs[method] / "export" / "model.safetensors").items()
                if k.startswith("text_encoder.")}
    assert set(exported) == set(source)  # every weight, under the names the model has
    changed = {k for k in source if not torch.equal(source[k], exported[k])}
    query = "model.encoder.layer.0.attention.self.query.weight"
    assert query in changed
    if method == "lora":  # only the attention projections carry LoRA updates: the feed-forwards are the source's
        assert changed and all(".attention." in k for k in changed)
        assert "model.encoder.layer.0.intermediate.dense.weight" not in changed
    else:
        assert "model.encoder.layer.0.intermediate.dense.weight" in changed
    tuned = AudioDiffusionPipeline.from_pretrained(runs[method], watermark=False)
    assert tuned.trained_text_encoder
    assert not torch.allclose(text_states(tuned), text_states(plain), atol=1e-4)
    assert fixed_loss(tuned, runs["manifest"]) < 0.9 * fixed_loss(plain, runs["manifest"])


def test_the_lora_adapter_holds_the_text_encoder_and_equals_the_merged_export(runs):
    adapter = read_adapter(runs["lora"] / "export" / "adapter.safetensors")
    assert adapter.text_modules and all(".attention." in m for m in adapter.text_modules)
    text_keys = {k for k in adapter.state if k.startswith("text_encoder.")}
    assert text_keys == {f"text_encoder.{m}.lora_{ab}.weight" for m in adapter.text_modules for ab in "AB"}
    # the base with the adapter as unmerged peft layers, text part included
    in_memory = AudioDiffusionPipeline.from_pretrained(runs["base"], watermark=False)
    in_memory.load_adapter(runs["lora"] / "export" / "adapter.safetensors")
    merged = AudioDiffusionPipeline.from_pretrained(runs["lora"] / "export", watermark=False)
    torch.testing.assert_close(text_states(in_memory), text_states(merged), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(generate(in_memory), generate(merged), atol=1e-4, rtol=1e-3)
    # strength 0 turns the text part off too: the base model's text states
    in_memory.set_adapter_strength("adapter0", 0.0)
    plain = AudioDiffusionPipeline.from_pretrained(runs["base"], watermark=False)
    torch.testing.assert_close(text_states(in_memory), text_states(plain))


def test_the_full_export_reloads_as_the_trained_weights_and_saves_again(runs, tmp_path):
    ckpt = load_checkpoint(runs["full"] / "checkpoints" / "last.ckpt")["state_dict"]
    # the in-memory model: the base with the run's EMA weights (denoiser and text encoder) put in place
    in_memory = AudioDiffusionPipeline.from_pretrained(runs["base"], watermark=False)
    in_memory.model.net.load_state_dict({k[len("ema.average."):]: v for k, v in ckpt.items()
                                         if k.startswith("ema.average.")})
    text = {k[len("text_ema.average."):]: v for k, v in ckpt.items() if k.startswith("text_ema.average.")}
    assert text, "the checkpoint keeps the text encoder's EMA weights"
    in_memory.model.text_encoder.model.load_state_dict(text)
    exported = AudioDiffusionPipeline.from_pretrained(runs["full"], watermark=False)
    assert torch.equal(text_states(in_memory), text_states(exported))
    assert torch.equal(generate(in_memory), generate(exported))
    again = AudioDiffusionPipeline.from_pretrained(exported.save_pretrained(tmp_path / "again"), watermark=False)
    assert torch.equal(generate(again), generate(exported))


def test_cached_text_states_are_refused_while_the_text_encoder_trains(runs, tmp_path):
    with pytest.raises(ValueError, match="cached text states cannot be used while the text encoder trains"):
        finetune(runs["base"], runs["manifest"], tmp_path / "run", "finetune.train_text_encoder=true",
                 f"task.text_cache_file={tmp_path / 'text.pt'}", "trainer.max_steps=1")
