"""Audio-to-audio, inpainting, continuation and long-form generation: the latent-level rules every sampler must
keep, and the pipeline's lengths, determinism and error messages (a randomly initialised debug model)."""

import math
import re

import numpy as np
import pytest
import torch

from audiodiff.audio.errors import AudioError
from audiodiff.config import compose_config
from audiodiff.diffusion.editing import keep_known, keep_mask, start_latents, strength_times
from audiodiff.diffusion.objectives import FlowMatching, VPDiffusion
from audiodiff.diffusion.samplers import SAMPLERS, get_sampler
from audiodiff.evaluation.seams import seam_score
from audiodiff.models.build import build_model
from audiodiff.pipeline import AudioDiffusionPipeline


def test_strength_keeps_the_tail_of_the_grid():
    times = torch.linspace(1, 0, 11)
    assert torch.allclose(strength_times(times, 0.3), torch.tensor([0.3, 0.2, 0.1, 0.0]))
    assert torch.equal(strength_times(times, 1.0), times)
    assert len(strength_times(times, 0.01)) == 2  # at least one step
    with pytest.raises(ValueError, match=r"strength: expected a number in \(0, 1\], got 0"):
        strength_times(times, 0.0)


def test_keep_mask_is_zero_on_the_range_and_ramps_on_the_kept_side():
    assert keep_mask(6, [(2, 4)]).tolist() == [1, 1, 0, 0, 1, 1]
    ramped = keep_mask(8, [(3, 5)], crossfade=2)
    assert ramped.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match=r"range \[4, 9\) does not lie inside 0..8 frames"):
        keep_mask(8, [(4, 9)])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("objective", [FlowMatching(), VPDiffusion(prediction="v", schedule="cosine")],
                         ids=["flow", "vp"])
def test_every_sampler_returns_the_known_latents_where_kept(name, objective):
    torch.manual_seed(0)
    known = torch.randn(2, 3, 10)
    keep = keep_mask(10, [(4, 7)], crossfade=1)
    times = objective.time_grid(6)
    # A stand-in network that pulls everything towards 0.5: where nothing is kept the result must move there.
    denoise = keep_known(lambda x, t: torch.full_like(x, 0.5), known, keep)
    x = start_latents(known, torch.randn(2, 3, 10), float(times[0]))
    out = get_sampler(name)(denoise, x, times, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    hard = keep == 1
    assert torch.allclose(out[..., hard], known[..., hard], atol=1e-4)
    assert torch.allclose(out[..., 4:7], torch.full((2, 3, 3), 0.5), atol=1e-4)
    blend = keep[3]
    assert torch.allclose(out[..., 3], blend * known[..., 3] + (1 - blend) * 0.5, atol=1e-4)


def test_keep_known_names_a_mask_that_does_not_fit():
    with pytest.raises(ValueError, match="keep mask covers 5 frames but the known latents have 4"):
        keep_known(lambda x, t: x, torch.zeros(1, 2, 4), torch.ones(5))


@pytest.fixture(scope="module")
def pipe() -> AudioDiffusionPipeline:
    torch.manual_seed(0)
    model = build_model(compose_config("train", ["recipe=debug"]))  # random weights: behaviour, not quality
    with torch.no_grad():
        for p in model.net.parameters():  # zero-initialised output layers would make every estimate 0
            p.add_(0.05 * torch.randn_like(p))
    return AudioDiffusionPipeline(model)


def _tone(seconds: float, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * math.pi * 440 * t)).unsqueeze(0)


def test_variation_stays_near_the_input_at_low_strength(pipe, monkeypatch):
    model = pipe.model
    init = torch.randn(1, model.representation.latent_channels, 40, generator=torch.Generator().manual_seed(1))
    settings = pipe.settings(steps=20, guidance=1.0)
    # The exact denoiser of unit Gaussian data: E[x0 | x_t] = (1 - t) x_t / ((1 - t)² + t²). Low strength must
    # return (nearly) the input, strength 1 an independent sample.
    monkeypatch.setattr(model.objective, "denoise",
                        lambda net, x, t, c: x * ((1 - t) / ((1 - t) ** 2 + t**2)).view(-1, 1, 1))
    distance = {}
    for strength in (0.05, 0.5, 1.0):
        z = model.sample_latents(["a tone"], init.shape[-1], [0], settings, init=init, strength=strength)
        distance[strength] = float((z - init).pow(2).mean())
    assert distance[0.05] < 0.2 * distance[0.5] < 0.2 * distance[1.0]
    assert distance[1.0] == pytest.approx(2.0, rel=0.2)  # E|x - y|² of independent unit Gaussians
    monkeypatch.undo()
    out = pipe.variation(_tone(1.0), ["a tone", "a click"], strength=0.5, steps=4, seed=3)
    again = pipe.variation(_tone(1.0), ["a tone", "a click"], strength=0.5, steps=4, seed=3)
    assert out.audio.shape == (2, 1, 16000) and out.seeds == [3, 4]
    assert torch.equal(out.audio, again.audio)


def _decoded_latents(pipe, monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    decode = pipe.model.representation.decode
    monkeypatch.setattr(pipe.model.representation, "decode", lambda z: seen.append(z.clone()) or decode(z))
    return seen


def test_inpainting_regenerates_only_the_range(pipe, monkeypatch):
    seen = _decoded_latents(pipe, monkeypatch)
    audio = _tone(1.0)
    out = pipe.inpaint(audio, "a click", 0.25, 0.5, crossfade=0.0, steps=3)
    z, init = seen[0], pipe.model.representation.encode(audio.unsqueeze(0))
    rate = pipe.model.representation.frame_rate
    first, last = int(0.25 * rate), math.ceil(0.5 * rate)
    assert out.audio.shape == (1, 1, 16000)
    assert torch.allclose(z[..., :first], init[..., :first], atol=1e-5)
    assert torch.allclose(z[..., last:], init[..., last:], atol=1e-5)
    assert not torch.allclose(z[..., first:last], init[..., first:last], atol=1e-2)


def test_continuation_keeps_the_clip_and_adds_the_seconds(pipe, monkeypatch):
    seen = _decoded_latents(pipe, monkeypatch)
    audio = _tone(0.75)
    out = pipe.continuation(audio, "a tone", 1.5, context=0.5, crossfade=0.0, steps=2)
    prefix = pipe.model.representation.encode(audio.unsqueeze(0))
    assert out.audio.shape == (1, 1, int(2.25 * 16000)) and out.duration == 2.25
    assert torch.allclose(seen[0][..., : prefix.shape[-1]], prefix, atol=1e-5)
    assert out.joins and out.joins[0] == pytest.approx(prefix.shape[-1] / pipe.model.representation.frame_rate)


def test_long_form_joins_windows_and_is_deterministic(pipe, monkeypatch):
    seen = _decoded_latents(pipe, monkeypatch)
    out = pipe.long_form(["a tone", "two beeps"], 3.2, context=0.5, steps=2, seed=5)
    again = pipe.long_form(["a tone", "two beeps"], 3.2, context=0.5, steps=2, seed=5)
    first = pipe.model.sample_latents(["a tone", "two beeps"], pipe.model.representation.num_frames(1.0), [5, 6],
                                      pipe.settings(steps=2))
    window = first.shape[-1]
    assert out.audio.shape == (2, 1, int(3.2 * 16000)) and torch.equal(out.audio, again.audio)
    rate = pipe.model.representation.frame_rate
    kept, fade = round(0.5 * rate), round(0.1 * rate)
    # The first window survives up to where the second one's cross-fade begins.
    assert torch.allclose(seen[0][..., :window - fade], first[..., :window - fade], atol=1e-5)
    assert not torch.allclose(seen[0][..., :window], first, atol=1e-3)
    assert out.joins == pytest.approx([(window + k * (window - kept)) / rate for k in range(len(out.joins))])
    assert len(out.joins) == math.ceil((pipe.model.representation.num_frames(3.2) + 1 - window) / (window - kept))


@pytest.mark.parametrize("call, message", [
    (lambda p: p.inpaint(_tone(1.0), "x", 0.5, 1.5), r"inpaint range: expected 0 <= start < end <= 1.000 s"),
    (lambda p: p.variation(_tone(1.0), "x", strength=1.5), r"strength: expected a number in \(0, 1\]"),
    (lambda p: p.variation(_tone(31.0), "x"), "31.00 s is longer than this model's maximum of 30.0 s"),
    (lambda p: p.variation(torch.zeros(2, 16000), "x"), r"this model takes 1 channel\(s\), got 2"),
    (lambda p: p.variation(torch.zeros(1, 100), "x"), "is too short; expected at least 0.1 s"),
    (lambda p: p.variation(torch.zeros(3, 1, 16000), ["a", "b"]), r"B = 1 or 2 \(one per prompt\), got shape"),
    (lambda p: p.long_form("x", 5.0, context=1.0), "context: expected more than 0 and less than the model's window"),
    (lambda p: p.long_form("x", 5.0, context=0.5, crossfade=0.6), "crossfade: expected 0 <= crossfade < context"),
    (lambda p: p.continuation(_tone(1.0), "x", 0.0), "seconds: expected a positive length to add, got 0.0"),
    (lambda p: p.variation("missing.wav", "x"), "missing.wav"),
])
def test_bad_edit_requests_are_named(pipe, call, message):
    with pytest.raises((ValueError, AudioError)) as err:
        call(pipe)
    assert re.search(message, str(err.value))


def test_seam_score_finds_a_discontinuity_and_not_a_steady_join():
    rate = 16000
    t = np.arange(4 * rate) / rate
    steady = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    seam = steady.copy()
    seam[2 * rate:] = 0.6 * np.sin(2 * np.pi * 660 * t[2 * rate:] + 1.0)  # louder, higher, phase jump at 2 s
    assert seam_score(seam, rate, [2.0])["ratio"] > 3
    assert seam_score(seam, rate, [2.0])["percentile"] == 100.0
    assert seam_score(steady, rate, [2.0])["ratio"] == pytest.approx(1.0, abs=0.3)
    with pytest.raises(ValueError, match="from the clip's ends"):
        seam_score(steady, rate, [3.99])


def test_the_dit_inpaints_and_continues_like_the_unet(monkeypatch):
    torch.manual_seed(0)
    model = build_model(compose_config("train", ["recipe=debug", "denoiser=dit_tiny"]))
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe = AudioDiffusionPipeline(model)
    seen = _decoded_latents(pipe, monkeypatch)
    audio = _tone(1.0)
    pipe.inpaint(audio, "a click", 0.25, 0.5, crossfade=0.0, steps=2)
    init, rate = model.representation.encode(audio.unsqueeze(0)), model.representation.frame_rate
    assert torch.allclose(seen[0][..., : int(0.25 * rate)], init[..., : int(0.25 * rate)], atol=1e-5)
    assert not torch.allclose(seen[0], init, atol=1e-2)
    out = pipe.continuation(audio, "a tone", 0.5, context=0.5, steps=2)
    assert out.audio.shape == (1, 1, 24000) and out.joins
