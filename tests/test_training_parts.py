"""EMA, learning-rate schedule and resume checks of the training task."""

import math

import pytest
import torch

from audiodiff.training.diffusion.run import ResumeMismatchError, check_resume
from audiodiff.training.diffusion.task import warmup_cosine
from audiodiff.training.ema import EMA


def test_ema_follows_the_closed_form():
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    expected = torch.zeros(1, 2)
    for step in range(30):
        net.weight.data.fill_(float(step + 1))
        ema.update(net, step)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * net.weight.data
    torch.testing.assert_close(ema.average.weight, expected)
    assert not any(p.requires_grad for p in ema.average.parameters())


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(1, 1), decay=1.0)


def test_warmup_then_cosine():
    f = warmup_cosine(10, 110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_resume_check_names_changed_keys(tmp_path):
    saved = {"denoiser": {"channels": 128}, "data": {"batch_size": 32}, "seed": 0, "trainer": {"max_steps": 10}}
    check_resume(saved, {**saved, "trainer": {"max_steps": 20}}, tmp_path / "last.ckpt")  # longer run: fine
    with pytest.raises(ResumeMismatchError, match=r"denoiser: was \{'channels': 128\}, now \{'channels': 64\}"):
        check_resume(saved, {**saved, "denoiser": {"channels": 64}}, tmp_path / "last.ckpt")


def test_caption_cache_matches_the_encoder_and_encodes_each_caption_once(monkeypatch):
    from audiodiff.config import compose_config
    from audiodiff.models.build import build_model
    from audiodiff.training.diffusion.task import DiffusionTask

    model = build_model(compose_config("train", ["recipe=debug"]))
    task = DiffusionTask(model, optimizer=torch.optim.AdamW)
    captions = ["three loud beeps", "", "a quiet hiss that fades", "three loud beeps"]
    seen: list[str] = []
    encode_unique = model.text_encoder.encode_unique
    monkeypatch.setattr(model.text_encoder, "encode_unique", lambda c, **kw: seen.extend(c) or encode_unique(c, **kw))
    cached = task.encode_captions(captions)
    task.encode_captions(captions[:2])
    assert seen == ["three loud beeps", "", "a quiet hiss that fades"]
    direct = model.text_encoder(captions)
    assert torch.equal(cached.mask, direct.mask)
    torch.testing.assert_close(cached.tokens, direct.tokens, atol=5e-3, rtol=0)  # float16 storage
    torch.testing.assert_close(cached.pooled, direct.pooled, atol=5e-3, rtol=0)
