"""Both denoiser families (UNet1d, DiT1d) and their building blocks: shapes, gradient flow, conditioning paths,
invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers import DiT1d, UNet1d
from audiodiff.nn.attention import apply_rotary, rotary_tables
from audiodiff.nn.blocks import Downsample1d, ResBlock1d, Upsample1d
from audiodiff.nn.embeddings import SinusoidalEmbedding, TimestepEmbedding

TINY = dict(channels=16, channel_mults=(1, 2), blocks_per_level=1, attn_levels=(1,), heads=2, context_dim=8)
TINY_DIT = dict(width=16, depth=2, heads=2, context_dim=8, time_features=16)
TINY_ROTARY = dict(TINY, attn_levels=(0, 1), rotary=True)   # the U-Net with rotary self-attention at every level


def tiny(family: str = "unet", **overrides: object) -> UNet1d | DiT1d:
    torch.manual_seed(0)
    if family == "dit":
        return DiT1d(4, **{**TINY_DIT, **overrides})  # type: ignore[arg-type]
    if family == "unet_rotary":
        return UNet1d(4, **{**TINY_ROTARY, **overrides})  # type: ignore[arg-type]
    return UNet1d(4, **{**TINY, **overrides})  # type: ignore[arg-type]


@pytest.fixture(params=["unet", "unet_rotary", "dit"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def perturb(model: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> torch.nn.Module:
    """Add small noise to every parameter so zero-initialised layers pass signal and gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def make_cond(batch: int = 3, n: int = 5, e: int = 8, pooled: int | None = None, globals_: int | None = None,
              seed: int = 2) -> Conditioning:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[0, 3:] = False
    return Conditioning(
        tokens=torch.randn(batch, n, e, generator=gen),
        mask=mask,
        pooled=None if pooled is None else torch.randn(batch, pooled, generator=gen),
        globals_=None if globals_ is None else torch.rand(batch, globals_, generator=gen),
    )


@pytest.mark.parametrize("patch", [1, 2])
@pytest.mark.parametrize("length", [1, 7, 64, 250])
def test_output_shape_equals_input_for_any_length(family: str, length: int, patch: int) -> None:
    model = perturb(tiny(family, patch=patch))
    x = torch.randn(2, 4, length)
    out = model(x, torch.rand(2), make_cond(batch=2))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_out_channels_can_differ_from_in_channels(family: str) -> None:
    model = tiny(family, out_channels=8, patch=2)
    assert model(torch.randn(2, 4, 9), torch.rand(2), make_cond(batch=2)).shape == (2, 8, 9)


def test_fresh_model_outputs_zero(family: str) -> None:
    model = tiny(family)
    assert torch.equal(model(torch.randn(2, 4, 10), torch.rand(2), make_cond(batch=2)), torch.zeros(2, 4, 10))


def test_gradients_reach_every_parameter(family: str) -> None:
    model = perturb(tiny(family, pooled_dim=8, global_dim=2, patch=2))
    cond = make_cond(pooled=8, globals_=2)
    x, target = torch.randn(3, 4, 13), torch.randn(3, 4, 13)
    loss = (model(x, torch.rand(3), cond) - target).square().mean()
    loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_fully_masked_context_equals_no_cross_attention(family: str) -> None:
    model = perturb(tiny(family))
    plain = tiny(family, cross_attention=False)
    state = model.state_dict()
    missing = set(plain.state_dict()) - set(state)
    assert missing == set()
    plain.load_state_dict({k: v for k, v in state.items() if k in plain.state_dict()})
    x, t = torch.randn(3, 4, 12), torch.rand(3)
    cond = make_cond()
    masked = cond.with_mask(torch.zeros_like(cond.mask))
    empty = Conditioning(tokens=torch.zeros(3, 0, 8), mask=torch.zeros(3, 0, dtype=torch.bool))
    reference = plain(x, t, None)
    assert torch.equal(model(x, t, masked), reference)
    assert torch.equal(model(x, t, empty), reference)
    assert not torch.allclose(model(x, t, cond), reference, atol=1e-4)


def test_dropped_rows_match_the_no_cross_attention_model_within_a_mixed_batch(family: str) -> None:
    model = perturb(tiny(family))
    plain = tiny(family, cross_attention=False)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    x, t, cond = torch.randn(3, 4, 12), torch.rand(3), make_cond()
    cond = cond.with_mask(cond.mask.clone().index_fill_(0, torch.tensor([1]), False))
    torch.testing.assert_close(model(x, t, cond)[1], plain(x, t)[1])


def test_forward_is_deterministic(family: str) -> None:
    x, t, cond = torch.randn(3, 4, 20), torch.rand(3), make_cond(pooled=8)
    a, b = perturb(tiny(family, pooled_dim=8)), perturb(tiny(family, pooled_dim=8))
    assert torch.equal(a(x, t, cond), a(x, t, cond))
    assert torch.equal(a(x, t, cond), b(x, t, cond))


def test_pooled_and_global_features_change_the_output(family: str) -> None:
    model = perturb(tiny(family, pooled_dim=8, global_dim=2))
    x, t = torch.randn(3, 4, 10), torch.rand(3)
    cond = make_cond(pooled=8, globals_=2)
    base = model(x, t, cond)
    other_pooled = Conditioning(cond.tokens, cond.mask, cond.pooled + 1.0, cond.globals_)  # type: ignore[operator]
    other_globals = Conditioning(cond.tokens, cond.mask, cond.pooled, cond.globals_ + 1.0)  # type: ignore[operator]
    assert (model(x, t, other_pooled) - base).abs().max() > 1e-4
    assert (model(x, t, other_globals) - base).abs().max() > 1e-4
    assert (model(x, t + 0.5, cond) - base).abs().max() > 1e-4


def test_gradient_checkpointing_gives_same_output_and_gradients(family: str) -> None:
    a, b = perturb(tiny(family)), perturb(tiny(family, gradient_checkpointing=True))
    x, t, cond = torch.randn(2, 4, 16), torch.rand(2), make_cond(batch=2)
    out_a, out_b = a(x, t, cond), b(x, t, cond)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_a_few_steps_fit_a_fixed_batch(family: str) -> None:
    model = tiny(family, pooled_dim=8)
    x, t, cond = torch.randn(4, 4, 16), torch.rand(4), make_cond(batch=4, pooled=8)
    target = torch.sin(torch.linspace(0, 6, 16)).expand(4, 4, 16) * torch.arange(1, 5).view(4, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = (model(x, t, cond) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_sizes() -> None:
    assert tiny(pooled_dim=8, global_dim=2).num_parameters() < 100_000
    default = UNet1d(64)
    assert 4e6 < default.num_parameters() < 9e6
    assert default.num_parameters(trainable_only=True) == default.num_parameters()
    assert default.length_multiple == 4 and UNet1d(64, patch=2).length_multiple == 8


@pytest.mark.parametrize("family", ["unet", "dit"])
def test_bad_inputs_raise_clear_errors(family: str) -> None:
    model = tiny(family, pooled_dim=8)
    x, t, cond = torch.randn(3, 4, 10), torch.rand(3), make_cond(pooled=8)
    with pytest.raises(ValueError, match=r"x must be \[B, in_channels=4, L\], got \(3, 5, 10\)"):
        model(torch.randn(3, 5, 10), t, cond)
    with pytest.raises(ValueError, match=r"noise_level must have shape \[B\] = \(3,\), got \(\)"):
        model(x, torch.tensor(0.5), cond)
    with pytest.raises(ValueError, match="pooled_dim=8 needs cond.pooled"):
        model(x, t, make_cond())
    with pytest.raises(ValueError, match=r"cond.tokens must be \[B=3, N, E=8\], got \(3, 5, 6\)"):
        model(x, t, make_cond(e=6, pooled=8))
    with pytest.raises(ValueError, match="cross_attention=True needs cond"):
        tiny(family)(x, t, None)
    if family != "dit":
        with pytest.raises(ValueError, match=r"attn_levels must lie in \[0, 1\]"):
            tiny(attn_levels=(2,))
    else:
        with pytest.raises(ValueError, match="heads must divide width into even head sizes"):
            tiny("dit", width=18, heads=4)


def test_dit_sizes() -> None:
    assert tiny("dit", pooled_dim=8, global_dim=2).num_parameters() < 50_000
    assert 10e6 < DiT1d(64).num_parameters() < 14e6
    with torch.device("meta"):  # Stable Audio Open's shape, without allocating it
        large = DiT1d(64, width=1536, depth=24, heads=24, context_dim=768, pooled_dim=768, global_dim=2)
    assert 1.0e9 < large.num_parameters() < 1.3e9


def test_rotary_positions_make_attention_depend_on_offsets_only() -> None:
    """q·k after rotation depends on the distance between positions, not on where they sit."""
    cos, sin = rotary_tables(12, 8, 10000.0, torch.device("cpu"))
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 12, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 12, 8)
    scores = apply_rotary(q, cos, sin)[0, 0] @ apply_rotary(k, cos, sin)[0, 0].T  # [12, 12]
    torch.testing.assert_close(torch.diagonal(scores, 3), torch.full((9,), float(scores[0, 3])), atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(torch.diagonal(scores), torch.full((12,), float(scores[0, 0])), atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="even head dimension"):
        rotary_tables(4, 7, 10000.0, torch.device("cpu"))


def test_dit_patching_is_local_in_time() -> None:
    """With its only block at identity (gates 0), the DiT maps each patch of `patch` frames on its own:
    changing one frame changes the outputs of its own patch and of no other."""
    model = perturb(tiny("dit", patch=4, cross_attention=False, depth=1))
    with torch.no_grad():
        model.blocks[0].ada[1].weight.zero_()
        model.blocks[0].ada[1].bias.zero_()  # gates = 0: the block is the identity; only the patch maps remain
    x = torch.randn(1, 4, 16)
    y = x.clone()
    y[..., 5] += 1.0  # frame 5 lies in patch 1 (frames 4-7)
    base = model(x, torch.tensor([0.3]), None)
    changed = (model(y, torch.tensor([0.3]), None) - base).abs().amax(dim=1)[0]
    assert changed[4:8].max() > 0 and changed[:4].max() == 0 and changed[8:].max() == 0


def test_sinusoidal_embedding_matches_formula() -> None:
    t = np.array([0.0, 0.25, 1.0, 0.731])
    dim, scale = 10, 1000.0
    freqs = np.exp(-math.log(10000.0) * np.arange(dim // 2) / (dim // 2))
    args = (t * scale)[:, None] * freqs[None, :]
    expected = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    got = SinusoidalEmbedding(dim, scale)(torch.tensor(t, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    odd = SinusoidalEmbedding(7)(torch.tensor(t, dtype=torch.float32))
    assert odd.shape == (4, 7) and torch.equal(odd[:, -1], torch.zeros(4))
    assert TimestepEmbedding(16, 32)(torch.rand(5)).shape == (5, 32)
    with pytest.raises(ValueError, match=r"expected t of shape \[B\]"):
        SinusoidalEmbedding(8)(torch.rand(2, 1))


def test_resblock_and_resampling_shapes() -> None:
    block = ResBlock1d(6, 10, emb_dim=4, kernel=5)
    x = torch.randn(2, 6, 9)
    skip_only = block.skip(x)
    assert torch.equal(block(x, torch.randn(2, 4)), skip_only)           # zero-init last conv
    assert ResBlock1d(6, 6, emb_dim=4)(x, torch.randn(2, 4)).shape == (2, 6, 9)
    assert Downsample1d(6)(x).shape == (2, 6, 5)
    assert Upsample1d(6, 3)(x).shape == (2, 3, 18)
    with pytest.raises(ValueError, match="kernel must be odd"):
        ResBlock1d(6, 6, emb_dim=4, kernel=4)
