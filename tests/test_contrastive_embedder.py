"""The contrastive audio–text embedder: loss against float64 references, learning on a fixed batch, a tiny training
run through the real entry point (checkpoint, export, load, resume), and the retrieval numbers on known inputs."""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiodiff import cli
from audiodiff.audio.io import load_audio
from audiodiff.benchmarks import ensure_corpus
from audiodiff.conditioning.text import TextEncoder
from audiodiff.config import compose_config
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.embedders.contrastive import evaluate as evaluate_module
from audiodiff.evaluation.embedders.contrastive import load_embedder
from audiodiff.evaluation.embedders.contrastive.evaluate import label_accuracy, retrieval_scores
from audiodiff.evaluation.embedders.contrastive.model import ContrastiveConfig, ContrastiveModel, info_nce
from audiodiff.export import load_checkpoint
from audiodiff.training.diffusion.run import ResumeMismatchError
from audiodiff.training.embedder.run import train_embedder
from audiodiff.training.embedder.task import model_state

TINY = ["model.channels=[16,16]", "model.embed_dim=32", "model.text_hidden=32", "data.batch_size=8",
        "data.num_workers=0", "data.segment_seconds=1.0", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "+trainer.enable_model_summary=false",
        "checkpoint_every=2", "task.warmup_steps=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    return root


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder("minilm")


def overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={corpus}", f"run_dir={run_dir}", *TINY, *extra]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train_embedder(compose_config("embedder", overrides(corpus, run_dir, "max_steps=4")))
    return run_dir


def clips(corpus: Path, split: str, n: int) -> tuple[list[torch.Tensor], list[str]]:
    rows = read_manifest(corpus / "sfx" / "manifest.jsonl", split)[:n]
    return [load_audio(r.audio, sample_rate=16000)[0] for r in rows], [r.captions[0] for r in rows]


# ---- the loss -------------------------------------------------------------------------------------------------
def test_info_nce_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=-1)
    logits = 7.5 * a.numpy() @ t.numpy().T
    row = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=1)))
    col = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=0)))
    assert info_nce(a, t, 7.5).item() == pytest.approx(0.5 * (row + col), rel=1e-12)
    # Perfectly aligned orthonormal pairs: each row has logit s on the diagonal and 0 elsewhere.
    eye = torch.eye(4, dtype=torch.float64)
    assert info_nce(eye, eye, 3.0).item() == pytest.approx(math.log(1 + 3 * math.exp(-3.0)), rel=1e-12)


def test_loss_decreases_on_a_fixed_batch(corpus, text_encoder):
    torch.manual_seed(0)
    wavs, captions = clips(corpus, "train", 8)
    wav = torch.stack([F.pad(w[0], (0, 16000 - w.shape[-1]))[:16000] for w in wavs])  # [8, 1 s]
    pooled = text_encoder(captions).pooled
    config = ContrastiveConfig(segment_seconds=1.0, channels=(16, 16), embed_dim=32, text_hidden=32)
    model = ContrastiveModel(config, text_encoder.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = info_nce(*model(wav, pooled), model.scale())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(8), abs=0.5)  # near chance at the start
    assert losses[-1] < 0.25 * losses[0]


# ---- a training run -------------------------------------------------------------------------------------------
def test_run_writes_checkpoint_with_config_and_export(run):
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert ckpt["audiodiff"]["kind"] == "contrastive_embedder"
    assert ckpt["audiodiff"]["config"]["model"]["channels"] == [16, 16]
    assert not any(k.startswith("text_encoder.") for k in ckpt["state_dict"])  # frozen, loaded from its source
    assert {p.name for p in (run / "export").iterdir()} == {"model.safetensors", "config.yaml", "export.json"}
    assert (run / "text_pooled.safetensors").is_file()


def test_export_and_checkpoint_give_identical_embeddings(run, corpus):
    embedder = load_embedder(run / "export")
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    config = ContrastiveConfig.from_dict(ckpt["audiodiff"]["config"]["model"])
    model = ContrastiveModel(config, embedder.text_encoder.dim)
    model.load_state_dict(model_state(ckpt["state_dict"]))
    model.eval()
    wavs, captions = clips(corpus, "test", 3)
    wavs = [w[:, :12000] for w in wavs]  # shorter than a segment: zero-padded to it, as in training
    with torch.no_grad():
        padded = torch.stack([F.pad(w[0], (0, config.segment_samples - w.shape[-1])) for w in wavs])
        expected_audio = model.audio(padded)
        expected_text = model.text(embedder.text_encoder(captions).pooled)
    torch.testing.assert_close(embedder.embed(wavs, 16000), expected_audio, rtol=0, atol=1e-6)
    torch.testing.assert_close(embedder.embed_text(captions), expected_text, rtol=0, atol=0)
    digest = hashlib.sha256((run / "export" / "model.safetensors").read_bytes()).hexdigest()
    assert embedder.id.startswith("contrastive-embedder_sfx(") and embedder.id.endswith(digest[:16])


def test_embeddings_are_unit_norm_deterministic_and_batch_independent(run, corpus):
    embedder = load_embedder(run / "export")
    wavs, captions = clips(corpus, "test", 3)
    batch = torch.stack([F.pad(w, (0, 16000 - w.shape[-1]))[:, :16000] for w in wavs])  # [3, 1, 1 s]
    audio = embedder.embed_audio(batch)
    text = embedder.embed_text(captions)
    assert audio.shape == text.shape == (3, 32)
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-6)
    assert torch.equal(load_embedder(run / "export").embed_audio(batch), audio)
    torch.testing.assert_close(embedder.embed_audio(batch[1:2]), audio[1:2], rtol=0, atol=1e-5)
    stereo = batch.repeat(1, 2, 1)  # channels are averaged: a duplicated mono clip embeds like the clip
    torch.testing.assert_close(embedder.embed_audio(stereo), audio, rtol=0, atol=1e-6)
    expected = (audio.double().numpy() * text.double().numpy()).sum(axis=1)
    np.testing.assert_allclose(embedder.score(batch, captions).numpy(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one prompt per clip"):
        embedder.score(batch, captions[:2])


def test_long_audio_is_the_length_weighted_mean_of_its_segments(run):
    embedder = load_embedder(run / "export")
    wav = torch.randn(1, 1, 16000 + 6000, generator=torch.Generator().manual_seed(3)) * 0.1  # 1.375 segments
    first = embedder.embed_audio(wav[..., :16000]).double()
    second = embedder.embed_audio(wav[..., 16000:]).double()  # zero-padded to one segment
    expected = F.normalize(16000 * first + 6000 * second, dim=-1).float()
    torch.testing.assert_close(embedder.embed_audio(wav), expected, rtol=0, atol=1e-6)


def test_rerun_resumes_and_refuses_a_changed_model(run, corpus):
    train_embedder(compose_config("embedder", overrides(corpus, run, "max_steps=6")))
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert '"global_step": 6' in (run / "export" / "export.json").read_text()
    with pytest.raises(ResumeMismatchError, match="model"):
        train_embedder(compose_config("embedder", overrides(corpus, run, "max_steps=8", "model.embed_dim=16")))


def test_missing_export_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedder export folder"):
        load_embedder(tmp_path)


# ---- retrieval numbers ----------------------------------------------------------------------------------------
def test_retrieval_scores_on_known_embeddings():
    audio = np.eye(4)  # clip i points along axis i
    # Queries 0-2 point at their own clip; query 3 belongs to clip 3 but points at clip 0, with clip 3 second.
    text = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0.1], [1, 0, 0, 0.5]], dtype=float)
    attributes = [{"kind": "a"}, {"kind": "b"}, {"kind": "c"}, {"kind": "a"}]
    out = retrieval_scores(text, audio, [0, 1, 2, 3], ks=(1, 2), attributes=attributes)
    assert out["recall@1"] == 0.75 and out["recall@2"] == 1.0
    assert out["attribute_recall@1"] == 1.0  # query 3's top clip (0) has clip 3's attributes
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    assert out["cos_matched"] == pytest.approx(np.mean(np.diag(unit)))
    assert out["cos_mismatched"] == pytest.approx((unit.sum() - np.trace(unit)) / 12)


def test_label_accuracy_leave_one_out():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.2]])
    out = label_accuracy(emb, ["x", "x", "y", "y", "y"])  # the last row's nearest other is an "x"
    assert out == {"accuracy": 0.8, "chance": 0.6}


def test_evaluate_command_help_and_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(argv: list[str]) -> int:
        return cli.run("audiodiff.evaluation.embedders.contrastive.evaluate", "contrastive_evaluate",
                       evaluate_module.main, evaluate_module.__doc__, argv)

    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m audiodiff.evaluation.embedders.contrastive.evaluate [key=value ...]" in out
    for setting in ("model: ???", "corpus: sfx", "manifest: null", "split: test", "'n': null", "label: kind",
                    "seed: 0", "out: null"):
        assert setting in out, out
    for argv, message in ([[f"root={tmp_path}"], "error: required setting(s) not given: model=..."],
                          [[f"model={tmp_path}", "n=abc"], "error: n: expected a whole number, got 'abc'"],
                          [[f"model={tmp_path}", f"manifest={tmp_path / 'none.jsonl'}"],
                           f"error: {tmp_path / 'none.jsonl'}: expected an existing manifest file"]):
        assert run(argv) == 1
        captured = capsys.readouterr()
        assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message), captured.err
        assert "Traceback" not in captured.err + captured.out
