"""Numeral features of the text encoder (`TextEncoder(numbers=True)`): which tokens get them, what they encode."""

from __future__ import annotations

import pytest
import torch

from audiodiff.conditioning.cache import encoder_signature
from audiodiff.conditioning.text import (
    NUMBER_PATTERN,
    TextEncoder,
    add_numeral_features,
    masked_mean,
    numeral_basis,
    numeral_features,
    pool_numeral_features,
    token_numbers,
)


@pytest.fixture(scope="module")
def encoders() -> tuple[TextEncoder, TextEncoder]:
    return TextEncoder("minilm"), TextEncoder("minilm", numbers=True)


@pytest.mark.parametrize(("text", "numbers"), [
    ("a rock song at 128 BPM.", ["128"]),
    ("a 440Hz tone for 0.5 s", ["440", "0.5"]),
    ("tempo 137, then 103", ["137", "103"]),
    ("a v2 model in 4/4", ["4", "4"]),
    ("no numbers here", []),
])
def test_number_pattern(text: str, numbers: list[str]) -> None:
    assert [m.group() for m in NUMBER_PATTERN.finditer(text)] == numbers


def test_features_are_unit_norm_and_close_for_close_values() -> None:
    f = numeral_features(torch.tensor([120.0, 120.5, 121.0, 128.0, 180.0, 240.0]))
    assert f.shape == (6, 32)
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(6))
    cosine = (f @ f[0]).tolist()
    assert cosine[1] > 0.85                                      # 0.4% apart: nearly the same direction
    assert cosine[1] > cosine[2] > cosine[3] > cosine[4] > cosine[5]   # farther values, less alike
    assert cosine[3] < 0.5 and cosine[5] < 0.2                   # 7% and an octave apart: other values


def test_basis_is_orthonormal_and_the_same_every_time() -> None:
    basis = numeral_basis(384)
    torch.testing.assert_close(basis.T @ basis, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.equal(basis, numeral_basis(384))
    with pytest.raises(ValueError, match="at least 32 wide, got 16"):
        numeral_basis(16)


def test_token_numbers_marks_every_piece_of_a_number(encoders: tuple[TextEncoder, TextEncoder]) -> None:
    tokenizer = encoders[1].tokenizer
    texts = ["a waltz at 96 BPM", "about 1234.5 Hz"]
    batch = tokenizer(texts, padding="longest", return_offsets_mapping=True, return_tensors="pt")
    values = token_numbers(texts, batch["offset_mapping"])
    pieces = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"].tolist()]
    for row, (tokens, expected) in enumerate(zip(pieces, [96.0, 1234.5], strict=True)):
        marked = [t for t, v in zip(tokens, values[row].tolist(), strict=True) if v == v]
        assert marked and all(v == expected for v in values[row].tolist() if v == v)
        assert "".join(t.removeprefix("##") for t in marked) == texts[row].split()[-2]


def test_only_number_tokens_change_and_they_encode_the_value(encoders: tuple[TextEncoder, TextEncoder]) -> None:
    plain, numeric = encoders
    captions = ["a rock song at 120 BPM", "a rock song at 160 BPM", "a slow ballad", ""]
    a, b = plain(captions), numeric(captions)
    assert torch.equal(a.mask, b.mask)
    changed = (a.tokens - b.tokens).abs().amax(dim=-1) > 0                       # [B, N]
    assert changed[0].sum() == 1 and changed[1].sum() == 1 and not changed[2:].any()
    assert torch.equal(b.tokens[3], torch.zeros_like(b.tokens[3]))               # the null caption stays zero
    # The value is linearly readable: projecting the change onto the basis gives the value's features.
    for row, bpm in ((0, 120.0), (1, 160.0)):
        delta = (b.tokens[row] - a.tokens[row])[changed[row]][0]
        read = numeric.number_basis.T @ delta / a.tokens[row][changed[row]][0].norm()
        torch.testing.assert_close(read, numeral_features(torch.tensor(bpm)), atol=1e-4, rtol=0)


def test_add_numeral_features_leaves_states_without_numbers_alone() -> None:
    states = torch.randn(2, 5, 64)
    out = add_numeral_features(states, torch.full((2, 5), float("nan")), numeral_basis(64))
    assert out is states


def test_the_option_is_part_of_the_cache_signature(encoders: tuple[TextEncoder, TextEncoder]) -> None:
    plain, numeric = encoders
    assert encoder_signature(plain)["numbers"] is False and encoder_signature(numeric)["numbers"] is True
    assert "numbers_pooled" not in encoder_signature(numeric)            # caches written before it still match
    assert encoder_signature(TextEncoder("minilm", numbers=True, numbers_pooled=True))["numbers_pooled"] is True


def test_pooled_numbers_put_the_value_in_the_pooled_vector(encoders: tuple[TextEncoder, TextEncoder]) -> None:
    numeric = encoders[1]
    pooled = TextEncoder("minilm", numbers=True, numbers_pooled=True)
    captions = ["a rock song at 120 BPM", "a rock song at 160 BPM", "a slow ballad", ""]
    a, b = numeric(captions), pooled(captions)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)     # only the pooled vector changes
    torch.testing.assert_close(a.pooled, masked_mean(a.tokens, a.mask))
    assert torch.equal(b.pooled[2:], a.pooled[2:])                              # no number, the null caption
    for row, bpm in ((0, 120.0), (1, 160.0)):
        delta = b.pooled[row] - a.pooled[row]
        torch.testing.assert_close(delta.norm(), a.pooled[row].norm())          # as long as the caption's vector
        read = pooled.number_basis.T @ delta / a.pooled[row].norm()
        torch.testing.assert_close(read, numeral_features(torch.tensor(bpm)), atol=1e-4, rtol=0)
    # 120 and 160 BPM: the pooled vectors differ several times more than the token mean alone tells them apart
    assert (b.pooled[0] - b.pooled[1]).norm() > 3 * (a.pooled[0] - a.pooled[1]).norm()   # measured: 4.3×
    with pytest.raises(ValueError, match="numbers_pooled=true needs numbers=true"):
        TextEncoder("minilm", numbers_pooled=True)


def test_pooled_numbers_average_several_numbers() -> None:
    basis, pooled = numeral_basis(64), torch.randn(2, 64)
    values = torch.full((2, 6), float("nan"))
    values[0, 1], values[0, 2], values[0, 4] = 120.0, 120.0, 3.0   # one number in two tokens, and another
    out = pool_numeral_features(pooled, values, basis)
    expected = (2 * numeral_features(torch.tensor(120.0)) + numeral_features(torch.tensor(3.0))) / 3
    torch.testing.assert_close(basis.T @ (out[0] - pooled[0]) / pooled[0].norm(), expected, atol=1e-5, rtol=0)
    assert torch.equal(out[1], pooled[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_numeral_features_on_cuda_match_cpu() -> None:
    states, basis = torch.randn(2, 5, 64), numeral_basis(64)
    values = torch.full((2, 5), float("nan"))
    values[0, 3], values[1, 1] = 128.0, 0.5
    cpu = add_numeral_features(states, values, basis)
    gpu = add_numeral_features(states.cuda(), values.cuda(), basis.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
