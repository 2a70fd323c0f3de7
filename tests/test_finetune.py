"""Fine-tuning from an export (recipe=finetune init=MODEL): LoRA adapters through peft and full fine-tuning, the
adapter file, loading adapters at a strength, merging, and the refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from audiodiff.config import compose_config
from audiodiff.denoisers.dit import DiT1d
from audiodiff.models.adapters import (
    AdapterError,
    LoraSettings,
    adapter_state,
    add_lora,
    read_adapter,
    target_modules,
)
from audiodiff.models.build import build_model, model_config
from audiodiff.models.export_format import write_export
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.training.finetune import FinetuneError
from audiodiff.training.stages import run_stages

SR = 16000


def make_base(folder: Path, denoiser: str) -> Path:
    """A tiny exported model with random (not zero-initialised) denoiser weights and fitted latent statistics."""
    cfg = compose_config("train", ["recipe=debug", f"denoiser={denoiser}", "data.segment_seconds=0.5"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.net.parameters():
            if not p.any():  # zero-initialised output layers: a trained model's are not
                p.copy_(0.02 * torch.randn_like(p))
    levels = torch.logspace(-4, -0.5, 8)[:, None, None]  # noise from quiet to loud: every band varies
    model.representation.fit_statistics([levels * torch.randn(8, 1, SR // 2)])
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    return write_export(folder, state, model_config(cfg))


def clips(folder: Path, count: int = 8) -> Path:
    """A manifest of new sounds (rising chirps) without splits."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    t = np.arange(SR // 2) / SR
    for i in range(count):
        wav = 0.5 * np.sin(2 * np.pi * (300 + 200 * i) * t * (1 + t))
        sf.write(folder / f"chirp{i}.wav", wav.astype(np.float32), SR)
        lines.append(f'{{"audio": "chirp{i}.wav", "caption": "a rising chirp"}}\n')
    (folder / "manifest.jsonl").write_text("".join(lines))
    return folder / "manifest.jsonl"


def finetune(base: Path, manifest: Path, run_dir: Path, *extra: str) -> list[str]:
    overrides = ["recipe=finetune", f"init={base}", "data=manifest", f"data.manifest={manifest}",
                 "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=25", "trainer.val_check_interval=25",
                 "trainer.limit_val_batches=1", "task.warmup_steps=2",
                 "task.ema_decay=0.5", "checkpoint_every=25", "preview.prompts=[a rising chirp]", "preview.steps=2",
                 f"run_dir={run_dir}", *extra]
    run_stages(overrides)
    return overrides


def fixed_loss(pipe: AudioDiffusionPipeline, manifest: Path) -> float:
    """The objective's loss on the manifest's clips with fixed noise and times (lower: the clips fit better)."""
    from audiodiff.data.manifest import read_manifest

    rows = read_manifest(manifest)
    wav = torch.stack([torch.from_numpy(sf.read(r.audio, dtype="float32")[0])[None] for r in rows])
    model = pipe.model
    with torch.no_grad():
        z = model.representation.encode(wav)
        cond = model.encode_text([r.caption for r in rows])
        losses = [model.objective.loss(model.net, z, cond, generator=torch.Generator().manual_seed(s)).item()
                  for s in range(4)]
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("lora")
    base = make_base(root / "base", "unet1d_tiny")
    manifest = clips(root / "clips")
    finetune(base, manifest, root / "run", "finetune.rank=4", "optim.lr=3e-3")
    return base, manifest, root / "run"


def test_lora_run_exports_the_adapter_alone_and_the_merged_model(lora_run):
    base, manifest, run = lora_run
    adapter = read_adapter(run / "export" / "adapter.safetensors")
    assert all(".lora_A." in k or ".lora_B." in k for k in adapter.state)
    assert adapter.settings.rank == 4 and adapter.info["global_step"] == 25
    plain = AudioDiffusionPipeline.from_pretrained(base)
    assert adapter.base_hash == plain.base_hash
    # Σ r · (d_in + d_out) over the targets, from the base network's module shapes.
    modules = dict(plain.model.net.named_modules())
    expected = 0
    for name in adapter.modules:
        m = modules[name]
        d_in, d_out = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else \
            (m.in_channels * m.kernel_size[0], m.out_channels)
        expected += 4 * (d_in + d_out)
    assert adapter.num_parameters == expected
    for part in ("self_attn.qkv", "cross_attn.kv", "res.0.conv1"):  # attention, cross-attention, convolutions
        assert any(part in name for name in adapter.modules), part


def test_lora_loss_falls_and_the_result_loads_and_generates(lora_run):
    base, manifest, run = lora_run
    plain = AudioDiffusionPipeline.from_pretrained(base)
    before = fixed_loss(plain, manifest)
    tuned = AudioDiffusionPipeline.from_pretrained(base)
    tuned.load_adapter(run / "export" / "adapter.safetensors")
    after = fixed_loss(tuned, manifest)
    assert after < 0.9 * before, (before, after)
    merged = AudioDiffusionPipeline.from_pretrained(run / "export")
    assert fixed_loss(merged, manifest) == pytest.approx(after, rel=1e-4)
    tuned.watermark = merged.watermark = None  # their marks differ: the merged weights are another model's id
    a = tuned(["a rising chirp"], duration=0.5, steps=2, seed=3).audio
    b = merged(["a rising chirp"], duration=0.5, steps=2, seed=3).audio
    assert a.shape == (1, 1, SR // 2) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_adapter_strengths_add_up_and_zero_is_the_base(lora_run):
    base, manifest, run = lora_run
    path = run / "export" / "adapter.safetensors"
    plain = AudioDiffusionPipeline.from_pretrained(base)
    off = AudioDiffusionPipeline.from_pretrained(base)
    off.load_adapter(path, strength=0.0)
    assert fixed_loss(off, manifest) == pytest.approx(fixed_loss(plain, manifest), rel=1e-5)
    one = AudioDiffusionPipeline.from_pretrained(base)
    one.load_adapter(path, strength=0.8)
    two = AudioDiffusionPipeline.from_pretrained(base)
    assert two.load_adapter(path, strength=0.5) != two.load_adapter(path, strength=0.3)  # two adapters, own names
    assert two.adapters == {"adapter0": 0.5, "adapter1": 0.3}
    assert fixed_loss(two, manifest) == pytest.approx(fixed_loss(one, manifest), rel=1e-4)
    # Merging two adapters into a new export gives the same model.
    merged = AudioDiffusionPipeline.from_pretrained(two.save_pretrained(run / "merged"))
    assert fixed_loss(merged, manifest) == pytest.approx(fixed_loss(one, manifest), rel=1e-4)


def test_an_adapter_for_another_base_is_refused_naming_both_hashes(lora_run, tmp_path):
    base, manifest, run = lora_run
    other = AudioDiffusionPipeline.from_pretrained(run / "export")  # the merged weights: another base
    adapter = read_adapter(run / "export")
    with pytest.raises(AdapterError, match=f"{adapter.base_hash}.*{other.base_hash}"):
        other.load_adapter(run / "export")
    other.load_adapter(run / "export", force=True)  # same modules: applies
    dit = AudioDiffusionPipeline.from_pretrained(make_base(tmp_path / "dit", "dit_tiny"))
    with pytest.raises(AdapterError, match="does not have"):
        dit.load_adapter(run / "export", force=True)
    (tmp_path / "fake.safetensors").write_bytes(b"import os; os.system('echo hi')")
    with pytest.raises(AdapterError, match="not a safetensors adapter"):
        dit.load_adapter(tmp_path / "fake.safetensors")


def test_full_finetuning_of_a_dit(tmp_path):
    base = make_base(tmp_path / "base", "dit_tiny")
    manifest = clips(tmp_path / "clips")
    finetune(base, manifest, tmp_path / "run", "finetune=full", "optim.lr=3e-3")
    assert not (tmp_path / "run" / "export" / "adapter.safetensors").exists()
    before = fixed_loss(AudioDiffusionPipeline.from_pretrained(base), manifest)
    tuned = AudioDiffusionPipeline.from_pretrained(tmp_path / "run")
    assert fixed_loss(tuned, manifest) < 0.9 * before
    assert torch.isfinite(tuned(["a rising chirp"], duration=0.5, steps=2).audio).all()


def test_settings_that_init_decides_are_refused(tmp_path):
    base = make_base(tmp_path / "base", "unet1d_tiny")
    with pytest.raises(FinetuneError, match="denoiser.channels"):
        run_stages(["recipe=finetune", f"init={base}", "denoiser.channels=8"])
    with pytest.raises(FinetuneError, match="text_encoder"):
        run_stages(["recipe=finetune", f"init={base}", "text_encoder=t5"])
    with pytest.raises(FinetuneError, match="give init="):
        run_stages(["recipe=finetune", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(FinetuneError, match="not a model export folder"):
        run_stages(["recipe=finetune", f"init={tmp_path}", f"run_dir={tmp_path / 'run'}"])


def test_lora_on_a_transformer_is_at_most_two_percent_and_counts_exactly():
    net = DiT1d(in_channels=64, width=256, depth=2, heads=4, context_dim=384, pooled_dim=384)
    base = sum(p.numel() for p in net.parameters())
    settings = LoraSettings(rank=4, alpha=4)
    modules = target_modules(net, settings)
    assert modules == [f"blocks.{i}.{m}" for i in range(2)
                       for m in ("qkv", "attn_out", "cross_q", "cross_kv", "cross_out", "mlp.0", "mlp.2")]
    add_lora(net, settings, modules)
    count = sum(v.numel() for v in adapter_state(net).values())
    per_block = 4 * ((256 + 768) + (256 + 256) + (256 + 256) + (256 + 512) + (256 + 256) + (256 + 1024) * 2)
    assert count == 2 * per_block and count <= 0.02 * base
    assert count == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_bad_targets_and_ranks_are_named():
    net = DiT1d(in_channels=8, width=16, depth=1, heads=2, context_dim=12)
    with pytest.raises(AdapterError, match=r"'blocks\.0\.nope' matches no Linear or Conv1d.*blocks\.0\.qkv"):
        target_modules(net, LoraSettings(rank=2, targets=("attention", "blocks.0.nope")))
    with pytest.raises(AdapterError, match=r"rank=32 is larger than module 'blocks\.0\.qkv'.*16 → 48"):
        target_modules(net, LoraSettings(rank=32, targets=("attention",)))
    with pytest.raises(AdapterError, match="select no module"):
        target_modules(net, LoraSettings(rank=2, targets=("conv",)))


def test_generate_takes_adapters_with_strengths(lora_run, tmp_path, capsys):
    import json

    from audiodiff import cli, generate

    base, manifest, run = lora_run
    adapter = run / "export" / "adapter.safetensors"
    argv = [f"model={base}", "prompt=a rising chirp", "steps=2", "duration=0.5", f"out={tmp_path / 'out'}"]
    assert cli.run("audiodiff.generate", "generate", generate.main, "", [*argv, f"adapter={adapter}:0.8"]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["adapters"] == [{"path": str(adapter), "strength": 0.8}]
    assert generate.adapter_specs(["a.safetensors", "b:0.5", "c:d"]) == [("a.safetensors", 1.0), ("b", 0.5),
                                                                         ("c:d", 1.0)]
    merged = run / "export"
    assert cli.run("audiodiff.generate", "generate", generate.main, "",
                   [f"model={merged}", *argv[1:], f"adapter={adapter}"]) == 1
    err = capsys.readouterr().err
    assert "trained on base model" in err and "force_adapter=true" in err


def test_the_ema_of_a_lora_net_shares_the_frozen_base():
    from audiodiff.training.ema import EMA

    net = DiT1d(in_channels=8, width=16, depth=1, heads=2, context_dim=12)
    settings = LoraSettings(rank=2, targets=("attention",))
    add_lora(net, settings, target_modules(net, settings))
    ema = EMA(net, decay=0.5)
    shared = {n for n, p in net.named_parameters() if any(p is q for q in ema.average.parameters())}
    assert shared == {n for n, p in net.named_parameters() if not p.requires_grad} and shared
    lora = [p for p in net.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in lora:
            p.add_(1.0)
    ema.update(net, step=100)
    averaged = dict(ema.average.named_parameters())
    for name, p in net.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(averaged[name], p - 0.5)  # halfway from the old value to the new
        else:
            assert averaged[name] is p


def _samples(wav_bytes: bytes) -> np.ndarray:
    """The float samples of a WAV file's bytes."""
    return sf.read(io.BytesIO(wav_bytes), dtype="float32")[0]


def test_the_web_page_sets_each_adapters_strength(lora_run):
    from audiodiff.web.server import BadRequest, Studio

    base, manifest, run = lora_run
    adapter = run / "export" / "adapter.safetensors"
    pipe = AudioDiffusionPipeline.from_pretrained(base)
    pipe.load_adapter(adapter, 0.8)
    studio = Studio(pipe)
    assert studio.info()["adapters"] == [{"name": "adapter0", "strength": 0.8, "source": str(adapter)}]
    request = {"prompt": "a rising chirp", "duration": "0.5", "steps": "2", "seed": "1"}
    off = studio.generate({**request, "adapters": {"adapter0": "0"}})
    assert off["meta"]["adapters"] == {str(adapter): 0.0}
    plain_studio = Studio(AudioDiffusionPipeline.from_pretrained(base))
    plain = plain_studio.generate(request)
    assert "adapters" not in plain["meta"] and plain_studio.info()["adapters"] == []
    # strength 0 is the base model: the same samples (not the same file bytes: the file's tags hold the time it was
    # made, which differs when the two clips straddle a second)
    off_wav, plain_wav = _samples(studio.result(off["id"]).wav), _samples(plain_studio.result(plain["id"]).wav)
    on_wav = _samples(studio.result(studio.generate(request)["id"]).wav)
    assert np.array_equal(off_wav, plain_wav)
    assert np.abs(on_wav - plain_wav).max() > 10 * 4 / 32768  # strength 0.8 changes the clip
    assert pipe.adapters == {"adapter0": 0.8}  # a request without strengths gets the loaded ones
    with pytest.raises(BadRequest, match="not loaded"):
        studio.generate({**request, "adapters": {"other": 1}})


def test_targets_follow_names_and_types_of_other_denoisers():
    """Module names of a stable-audio-tools style DiT get the kinds their names say."""
    from audiodiff.models.adapters import module_kind

    linear, conv = nn.Linear(4, 4), nn.Conv1d(4, 4, 1)
    expected = {
        "transformer.layers.0.self_attn.to_qkv": "attention", "transformer.layers.0.self_attn.to_out": "attention",
        "transformer.layers.0.cross_attn.to_q": "cross_attention",
        "transformer.layers.0.cross_attn.to_kv": "cross_attention",
        "transformer.layers.0.ff.ff.0.proj": "feedforward", "transformer.layers.0.ff.ff.2": "feedforward",
        "to_timestep_embed.0": None, "to_cond_embed.2": None, "transformer.project_in": None,
        "transformer.layers.0.to_scale_shift_gate.1": None,
    }
    for name, kind in expected.items():
        assert module_kind(name, linear) == kind, name
    assert module_kind("preprocess_conv", conv) == "conv"
