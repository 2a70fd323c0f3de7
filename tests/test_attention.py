"""Self- and cross-attention blocks: masking, float64 reference, identity at init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from audiodiff.nn.attention import CrossAttention1d, SelfAttention1d


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (the zero-initialised output projection included) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def _reference_attention(x: Tensor, norm: torch.nn.GroupNorm, wq: Tensor, bq: Tensor, k_in: Tensor,
                         wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor, heads: int,
                         key_mask: Tensor | None) -> Tensor:
    """Naive float64 multi-head attention with an explicit softmax; x: [B, C, L], k_in: [B, N, E]."""
    x = x.double()
    b, c, length = x.shape
    groups = norm.num_groups
    xg = x.view(b, groups, -1)
    mean = xg.mean(dim=-1, keepdim=True)
    var = xg.var(dim=-1, unbiased=False, keepdim=True)
    xn = ((xg - mean) / torch.sqrt(var + norm.eps)).view(b, c, length)
    xn = xn * norm.weight.double()[None, :, None] + norm.bias.double()[None, :, None]
    h = xn.transpose(1, 2)                                               # [B, L, C]
    d = c // heads
    q = h @ wq.double().T + bq.double()
    k = k_in.double() @ wk.double().T + bk.double()
    v = k_in.double() @ wv.double().T + bv.double()
    out = torch.zeros(b, length, c, dtype=torch.float64)
    for bi in range(b):
        for hi in range(heads):
            sl = slice(hi * d, (hi + 1) * d)
            scores = q[bi, :, sl] @ k[bi, :, sl].T / math.sqrt(d)       # [L, N]
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[bi][None, :], float("-inf"))
            weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
            weights = weights / weights.sum(dim=-1, keepdim=True)
            out[bi, :, sl] = weights @ v[bi, :, sl]
    out = out @ wo.double().T + bo.double()
    return x + out.transpose(1, 2)


def test_self_attention_matches_float64_reference() -> None:
    torch.manual_seed(0)
    attn = _randomize(SelfAttention1d(16, heads=4))
    x = torch.randn(2, 16, 11)
    key_mask = torch.tensor([[True] * 11, [True] * 7 + [False] * 4])
    c = 16
    w, bias = attn.qkv.weight, attn.qkv.bias
    for mask in (None, key_mask):
        h = attn.norm(x).transpose(1, 2)
        ref = _reference_attention(x, attn.norm, w[:c], bias[:c], h, w[c:2 * c], bias[c:2 * c], w[2 * c:],
                                   bias[2 * c:], attn.proj.weight, attn.proj.bias, 4, mask)
        got = attn(x, mask)
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_float64_reference() -> None:
    torch.manual_seed(1)
    attn = _randomize(CrossAttention1d(16, context_dim=12, heads=2))
    x = torch.randn(3, 16, 9)
    context = torch.randn(3, 5, 12)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False, True, False, True, False]])
    c = 16
    wkv, bkv = attn.kv.weight, attn.kv.bias
    ref = _reference_attention(x, attn.norm, attn.q.weight, attn.q.bias, context, wkv[:c], bkv[:c], wkv[c:],
                               bkv[c:], attn.proj.weight, attn.proj.bias, 2, mask)
    torch.testing.assert_close(attn(x, context, mask).double(), ref, atol=1e-5, rtol=1e-5)


def test_masked_tokens_do_not_influence_output() -> None:
    torch.manual_seed(2)
    attn = _randomize(CrossAttention1d(8, context_dim=6, heads=2))
    x = torch.randn(2, 8, 13)
    context = torch.randn(2, 7, 6)
    mask = torch.rand(2, 7) > 0.4
    mask[:, 0] = True
    perturbed = torch.where(mask[..., None], context, context * 100.0 + 5.0)
    base = attn(x, context, mask)
    torch.testing.assert_close(attn(x, perturbed, mask), base, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(attn(x, perturbed, torch.ones_like(mask)), base, atol=1e-3)


def test_masked_frames_do_not_influence_unmasked_frames_in_self_attention() -> None:
    torch.manual_seed(3)
    attn = _randomize(SelfAttention1d(8, heads=2))
    key_mask = torch.arange(10) < 6
    x = torch.randn(2, 8, 10)
    perturbed = x.clone()
    perturbed[..., 6:] = torch.randn(2, 8, 4) * 50.0
    # GroupNorm statistics span all frames, so compare with norm statistics held fixed: identity norm.
    attn.norm = torch.nn.Identity()  # type: ignore[assignment]
    torch.testing.assert_close(attn(perturbed, key_mask)[..., :6], attn(x, key_mask)[..., :6])


def test_fully_masked_rows_contribute_exactly_zero() -> None:
    torch.manual_seed(4)
    attn = _randomize(CrossAttention1d(8, context_dim=6, heads=2))
    x = torch.randn(3, 8, 5)
    context = torch.randn(3, 4, 6)
    mask = torch.tensor([[False] * 4, [True, True, False, False], [False] * 4])
    out = attn(x, context, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    # The row with tokens is the same as when attended alone.
    torch.testing.assert_close(out[1:2], attn(x[1:2], context[1:2], mask[1:2]))
    assert not torch.allclose(out[1], x[1])
    # An empty context (N = 0) is also the identity.
    assert torch.equal(attn(x, torch.zeros(3, 0, 6), torch.zeros(3, 0, dtype=torch.bool)), x)


def test_fresh_blocks_are_identity() -> None:
    x = torch.randn(2, 8, 6)
    assert torch.equal(SelfAttention1d(8, heads=2)(x), x)
    context, mask = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    assert torch.equal(CrossAttention1d(8, 4, heads=2)(x, context, mask), x)


def test_attention_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="heads must divide channels"):
        SelfAttention1d(10, heads=4)
    attn = CrossAttention1d(8, context_dim=6, heads=2)
    with pytest.raises(ValueError, match=r"context must be \[B=2, N, E=6\], got \(2, 3, 5\)"):
        attn(torch.randn(2, 8, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="mask must be"):
        attn(torch.randn(2, 8, 4), torch.randn(2, 3, 6), torch.ones(2, 4, dtype=torch.bool))


def test_self_attention_sees_order_only_with_rotary_positions() -> None:
    """Without positions self-attention is permutation-equivariant (it sees a set of frames); rotary positions
    make it depend on the order, and the same shift of every frame (no padding) leaves the scores unchanged."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 10)
    perm = torch.randperm(10)
    plain = _randomize(SelfAttention1d(16, heads=4))
    torch.testing.assert_close(plain(x[..., perm]), plain(x)[..., perm], atol=1e-5, rtol=1e-5)
    rotary = _randomize(SelfAttention1d(16, heads=4, rope_base=10000.0))
    assert (rotary(x[..., perm]) - rotary(x)[..., perm]).abs().max() > 1e-2
    rotary.load_state_dict(plain.state_dict())        # same weights: the positions are the only difference
    assert (rotary(x) - plain(x)).abs().max() > 1e-2


def test_rotary_self_attention_needs_even_head_size() -> None:
    with pytest.raises(ValueError, match="even head size, got channels=12, heads=4"):
        SelfAttention1d(12, heads=4, rope_base=10000.0)


def test_attention_under_cpu_autocast_runs_in_float32_and_returns_bf16() -> None:
    """Under CPU bf16 autocast, `attend` computes on the bf16 inputs in float32 (torch's bf16 CPU kernel has a slow
    backward pass) and hands back bf16: the result and the gradients are those of float32 attention on the same
    bf16-rounded inputs, not of bf16 attention."""
    from audiodiff.nn.attention import attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 63, 16).to(torch.bfloat16).requires_grad_() for _ in range(3))
    mask = torch.rand(2, 1, 1, 63) > 0.3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    ref_inputs = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_inputs, attn_mask=mask)
    ref.to(torch.bfloat16).float().square().sum().backward()
    torch.testing.assert_close(out, ref.to(torch.bfloat16), atol=0, rtol=0)
    for t, r in zip((q, k, v), ref_inputs, strict=True):
        torch.testing.assert_close(t.grad, r.grad.to(torch.bfloat16), atol=0, rtol=0)
