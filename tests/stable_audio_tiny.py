"""Tiny Stable Audio Open components with random weights, built from their config classes (never downloaded): a
diffusers StableAudioPipeline, and the same parts one by one. Shared by the Stable Audio tests."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers, processors

WORDS = ["<pad>", "</s>", "<unk>", "a", "dog", "barks", "rain", "on", "the", "roof", "soft", "bird", "sings", "far",
         "away", "loud", "noise", "low", "quality", "warm", "pad"]
TEXT_TOKENS = 128
SAMPLE_RATE = 1000  # Hz: 16 latent frames × hop 8 = 0.128 s per window
DIT = dict(sample_size=16, in_channels=8, num_layers=2, attention_head_dim=8, num_attention_heads=4,
           num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=24, time_proj_dim=16,
           global_states_input_dim=48, cross_attention_input_dim=24)
VAE = dict(encoder_hidden_size=16, downsampling_ratios=[2, 4], channel_multiples=[1, 2], decoder_channels=8,
           decoder_input_channels=8, audio_channels=2, sampling_rate=SAMPLE_RATE)
PROJECTION = dict(text_encoder_dim=16, conditioning_dim=24, min_value=0, max_value=512)
T5 = dict(vocab_size=len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, pad_token_id=0,
          eos_token_id=1, decoder_start_token_id=0)


def tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level T5-style tokenizer (</s> appended, <pad> = 0) padding to 128 tokens."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                      model_max_length=TEXT_TOKENS)


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Every parameter and float buffer plus Gaussian noise (seeded by the caller), so norms and biases matter."""
    with torch.no_grad():
        for p in [*module.parameters(), *module.buffers()]:
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * scale)
    return module


# Heads of 64 dimensions: stable-audio-tools rotates max(head / 2, 32) dimensions, half a head only from 64 up.
DIT_64 = dict(DIT, attention_head_dim=64, num_attention_heads=2, num_key_value_attention_heads=1,
              cross_attention_dim=64, cross_attention_input_dim=64, time_proj_dim=256, global_states_input_dim=128)
PROJECTION_64 = dict(PROJECTION, conditioning_dim=64)


def diffusers_pipeline(seed: int = 0, dit: dict | None = None, projection: dict | None = None, vae: dict | None = None):
    """A tiny random diffusers StableAudioPipeline (published scheduler settings); dit / projection / vae: other
    sizes."""
    import diffusers

    torch.manual_seed(seed)
    transformer = perturb(diffusers.StableAudioDiTModel(**(dit or DIT)))
    vae = perturb(diffusers.AutoencoderOobleck(**(vae or VAE)))
    projection = perturb(diffusers.pipelines.stable_audio.StableAudioProjectionModel(**(projection or PROJECTION)))
    text_encoder = tf.T5EncoderModel(tf.T5Config(**T5)).eval()
    scheduler = diffusers.CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
        sigma_schedule="exponential")
    pipe = diffusers.StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection,
                                         tokenizer=tokenizer(), transformer=transformer, scheduler=scheduler)
    return pipe


def save_diffusers_pipeline(folder: Path, seed: int = 0, **sizes):
    pipe = diffusers_pipeline(seed, **sizes)
    pipe.save_pretrained(folder)
    return pipe


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |Δ| / max |reference|."""
    return float((ours.double() - reference.double()).abs().max() / reference.double().abs().max())
