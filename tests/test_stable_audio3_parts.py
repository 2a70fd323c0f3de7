"""Stable Audio 3's parts in audiodiff equal diffusers' at random weights (fp32, CPU, small configs): the DiT (memory
tokens, differential attention, RMS QK-norm, adaptive norm, padding embedding, the inpainting input), the SAME
autoencoder (encode and decode) and the conditioning (T5Gemma states capped at 256 tokens with their mask, the
duration embedding as global vector and as an extra token, the empty string as the null caption)."""

from __future__ import annotations

import pytest
import torch

from audiodiff.autoencoders.same import SAME
from audiodiff.conditioning.stable_audio3 import StableAudio3Conditioning
from audiodiff.conditioning.text import TextEncoder
from audiodiff.conditioning.types import Conditioning
from audiodiff.denoisers.stable_audio3_dit import StableAudio3DiT
from audiodiff.models.stable_audio3_keys import DIFFUSERS_DIT3, DIFFUSERS_DURATION, DIFFUSERS_SAME
from audiodiff.models.stable_audio_keys import fold_weight_norm, rename
from tests import stable_audio3_tiny as tiny

diffusers = pytest.importorskip("diffusers")
TOL = 1e-4


def our_dit(reference, time_scale: float = 1.0) -> StableAudio3DiT:
    c = reference.config
    net = StableAudio3DiT(in_channels=c.io_channels, width=c.embed_dim, depth=c.depth, heads=c.num_heads,
                          context_dim=c.cond_token_dim, global_dim=c.global_cond_dim,
                          time_features=c.timestep_features_dim, time_scale=time_scale,
                          memory_tokens=c.num_memory_tokens, differential=c.use_differential_attention,
                          ff_mult=c.ff_mult, local_dim=c.local_add_cond_dim)
    net.load_state_dict(rename(reference.state_dict(), DIFFUSERS_DIT3, "transformer"), strict=True)
    return net.eval()


def our_same(reference) -> SAME:
    c = reference.config
    same = SAME(c.audio_channels, c.patch_size, c.encoder_channels, c.encoder_c_mults, c.encoder_strides,
                c.encoder_transformer_depths, c.latent_dim, c.use_differential_attention, c.dim_heads, c.ff_mult,
                c.sliding_window, c.encoder_sinusoidal_blocks, c.decoder_sinusoidal_blocks, c.sampling_rate)
    state = fold_weight_norm(reference.state_dict(), "vae")
    same.load_state_dict(rename(state, DIFFUSERS_SAME, "vae"), strict=True)
    return same.eval()


@pytest.fixture(scope="module")
def pipe():
    return tiny.diffusers_pipeline(seed=3)


@pytest.mark.parametrize("time_scale", [1.0, 1000.0])
@pytest.mark.parametrize("with_local", [False, True])
def test_dit_equals_diffusers(pipe, time_scale, with_local):
    ref = pipe.transformer.eval()
    ours = our_dit(ref, time_scale)
    g = torch.Generator().manual_seed(1)
    b, length, d = 2, 10, ref.config.io_channels
    x = torch.randn(b, d, length, generator=g)
    t = torch.tensor([0.83, 0.21])
    tokens = torch.randn(b, 6, ref.config.cond_token_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    globals_ = torch.randn(b, ref.config.global_cond_dim, generator=g)
    local = torch.randn(b, ref.config.local_add_cond_dim, length, generator=g) if with_local else None
    with torch.no_grad():
        expected = ref(x, t * time_scale, encoder_hidden_states=tokens, global_hidden_states=globals_,
                       encoder_attention_mask=mask.long(), local_add_cond=local, return_dict=False)[0]
        got = ours(x, t, Conditioning(tokens, mask, None, globals_, local))
    assert tiny.relative_error(got, expected) < TOL


def test_same_encode_and_decode_equal_diffusers(pipe):
    ref = pipe.vae.eval()
    ours = our_same(ref)
    assert ours.latent_hop == ref.downsampling_ratio == 16
    wav = torch.randn(2, 2, 150, generator=torch.Generator().manual_seed(2)) * 0.3  # not a multiple of the hop
    with torch.no_grad():
        z_ref, z = ref.encode(wav).latents, ours.encode(wav)
        assert z.shape == z_ref.shape == (2, 8, 10)
        assert tiny.relative_error(z, z_ref) < TOL
        assert tiny.relative_error(ours.decode(z_ref), ref.decode(z_ref).sample) < TOL


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory, pipe):
    folder = tmp_path_factory.mktemp("t5gemma")
    pipe.text_encoder.save_pretrained(folder)
    pipe.tokenizer.save_pretrained(folder)
    return folder


def test_conditioning_equals_diffusers(pipe, encoder_folder):
    ref_duration = pipe.duration_embedder
    cond_module = StableAudio3Conditioning(text_dim=32, min_seconds=0.0, max_seconds=30.0, features=16)
    cond_module.load_state_dict(rename(ref_duration.state_dict(), DIFFUSERS_DURATION, "duration_embedder"))
    encoder = TextEncoder(str(encoder_folder), max_length=256, encode_empty=True)
    long = " ".join(["a dog barks on the roof"] * 60)  # 301 words: capped at 256 tokens
    captions = ["rain on the roof", "", long]
    with torch.no_grad():
        embeds, mask = pipe.encode_prompt(captions, torch.device("cpu"), 1)
        duration = pipe.encode_duration(7.5, torch.device("cpu"), 1, len(captions))
        tokens_ref, mask_ref = pipe.prepare_cross_attention(embeds, mask, duration)
        ours = cond_module.condition(encoder(captions), torch.zeros(3), torch.full((3,), 7.5))
    assert ours.tokens.shape == tokens_ref.shape == (3, 257, 32)
    assert torch.equal(ours.mask, mask_ref.bool())
    assert bool(ours.mask[1, 0]) and int(ours.mask[1].sum()) == 2  # "" is <bos> (+ the duration token), not null
    real = mask_ref.bool()
    assert tiny.relative_error(ours.tokens[real], tokens_ref[real]) < TOL
    assert tiny.relative_error(ours.globals_, duration) < TOL
    # the DiT sees the same thing: masked positions become its padding vector either way
    net = our_dit(pipe.transformer)
    x = torch.randn(3, 8, 5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = pipe.transformer(x, torch.full((3,), 0.5), encoder_hidden_states=tokens_ref,
                                    global_hidden_states=duration, encoder_attention_mask=mask_ref,
                                    return_dict=False)[0]
        got = net(x, torch.full((3,), 0.5), ours)
    assert tiny.relative_error(got, expected) < TOL


def test_dit_and_same_compile_as_one_graph(pipe):
    """No graph breaks (torch.compile fullgraph), so compiled and CUDA-graph runs on a GPU take the whole step."""
    net = our_dit(pipe.transformer)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(2, 8, 10, generator=g), torch.tensor([0.2, 0.9])
    cond = Conditioning(torch.randn(2, 5, 32, generator=g), torch.ones(2, 5, dtype=torch.bool), None,
                        torch.randn(2, 32, generator=g), torch.randn(2, 9, 10, generator=g))
    same = our_same(pipe.vae)
    decode = torch.compile(same.decode, fullgraph=True, backend="aot_eager")
    z = torch.randn(1, 8, 6, generator=g)
    with torch.no_grad():
        assert torch.allclose(compiled(x, t, cond), net(x, t, cond), atol=1e-6)
        assert torch.allclose(decode(z), same.decode(z), atol=1e-6)
