"""Tiny Stable Audio 3 components with random weights, built from their config classes (never downloaded): a
diffusers StableAudio3Pipeline (T5Gemma, AutoencoderSAME, StableAudio3DiTModel, duration embedder, flow-matching
Euler scheduler), and the sizes of its parts. Shared by the Stable Audio 3 tests."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from tests.stable_audio_tiny import perturb, relative_error  # noqa: F401 (shared with the SA3 tests)

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "dog", "barks", "rain", "on", "the", "roof", "soft", "bird",
         "sings", "far", "away", "loud", "noise", "low", "quality", "warm", "pad", "piano", "drums"]
SAMPLE_RATE = 160  # Hz: hop 4 × 4 = 16 samples per latent frame, 10 frames per second
DIT = dict(io_channels=8, embed_dim=64, depth=2, num_heads=4, cond_token_dim=32, global_cond_dim=32,
           local_add_cond_dim=9, timestep_features_dim=16, num_memory_tokens=3)
VAE = dict(audio_channels=2, patch_size=4, encoder_channels=8, encoder_c_mults=[2], encoder_strides=[4],
           encoder_transformer_depths=[2], latent_dim=8, dim_heads=8, ff_mult=2, encoder_sinusoidal_blocks=[0],
           decoder_sinusoidal_blocks=[2], sampling_rate=SAMPLE_RATE)
DURATION = dict(output_dim=32, fourier_dim=16, min_val=0.0, max_val=30.0)
T5GEMMA = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
               num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
               pad_token_id=0, eos_token_id=1, bos_token_id=2, sliding_window=16)


def tokenizer(max_length: int = 512) -> tf.PreTrainedTokenizerFast:
    """A word-level Gemma-style tokenizer (<bos> prepended, <pad> = 0), longer than the 256 tokens SA3 keeps."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                      unk_token="<unk>", model_max_length=max_length)


def text_encoder() -> tf.T5GemmaEncoderModel:
    config = tf.T5GemmaConfig(encoder=dict(T5GEMMA), decoder=dict(T5GEMMA), vocab_size=len(WORDS),
                              is_encoder_decoder=False)
    model = tf.T5GemmaEncoderModel(config).eval()
    with torch.no_grad():  # parameters only: its buffers (rotary frequencies, embedding scale) are not saved
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def diffusers_pipeline(seed: int = 0, stochastic: bool = True, num_train_timesteps: int = 1, vae: dict | None = None):
    """A tiny random diffusers StableAudio3Pipeline; stochastic: the distilled model's ping-pong sampling (else the
    base model's Euler steps); vae: other autoencoder settings."""
    import diffusers
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    torch.manual_seed(seed)
    transformer = perturb(diffusers.StableAudio3DiTModel(**DIT))
    vae = diffusers.AutoencoderSAME(**(vae or VAE))
    rotary = {name: buffer.clone() for name, buffer in vae.named_buffers() if name.endswith("inv_freq")}
    perturb(vae)
    with torch.no_grad():
        vae.bottleneck.running_std.fill_(1.7)
        for name, buffer in vae.named_buffers():  # derived, not saved: the rotary frequencies stay exact
            if name in rotary:
                buffer.copy_(rotary[name])
    duration = perturb(StableAudio3DurationEmbedder(**DURATION))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps,
                                                          stochastic_sampling=stochastic)
    return diffusers.StableAudio3Pipeline(vae=vae, text_encoder=text_encoder(), tokenizer=tokenizer(),
                                          duration_embedder=duration, transformer=transformer, scheduler=scheduler)


def save_diffusers_pipeline(folder: Path, seed: int = 0, **options):
    pipe = diffusers_pipeline(seed, **options)
    pipe.save_pretrained(folder)
    return pipe
