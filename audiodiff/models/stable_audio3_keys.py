"""Where each weight of a published Stable Audio 3 checkpoint (diffusers' layout) goes in audiodiff's modules.

Tables of (pattern, replacement) rules as in `audiodiff.models.stable_audio_keys`, applied by its `rename` (the
first rule matching a whole key renames it; unknown or colliding keys are refused naming the file and the key).
The SAME autoencoder's weight-normed 1×1 maps are folded first (`fold_weight_norm`).
"""

from __future__ import annotations

from audiodiff.models.stable_audio_keys import Rule

_BLOCK = r"transformer_blocks\.(\d+)\."

# diffusers' StableAudio3DiTModel (transformer/diffusion_pytorch_model.safetensors) → StableAudio3DiT.
DIFFUSERS_DIT3: list[Rule] = [
    (r"to_timestep_embed\.([02])\.(weight|bias)", r"time_proj.\1.\2"),
    (r"prompt_padding_embedding", "padding_token"),
    (r"to_cond_embed\.([02])\.weight", r"context_proj.\1.weight"),
    (r"to_global_embed\.([02])\.weight", r"global_proj.\1.weight"),
    (r"global_cond_embedder\.([02])\.(weight|bias)", r"modulation.\1.\2"),
    (r"preprocess_conv\.weight", "conv_in.weight"),
    (r"postprocess_conv\.weight", "conv_out.weight"),
    (r"proj_(in|out)\.weight", r"proj_\1.weight"),
    (r"memory_tokens", "memory"),
    (r"rotary_pos_emb\.inv_freq", "rotary_frequencies"),
    (_BLOCK + r"pre_norm\.gamma", r"blocks.\1.norm1.weight"),
    (_BLOCK + r"cross_attend_norm\.gamma", r"blocks.\1.norm2.weight"),
    (_BLOCK + r"ff_norm\.gamma", r"blocks.\1.norm3.weight"),
    (_BLOCK + r"self_attn\.to_qkv\.weight", r"blocks.\1.self_attn.qkv.weight"),
    (_BLOCK + r"(self|cross)_attn\.([qk])_norm\.gamma", r"blocks.\1.\2_attn.\3_norm.weight"),
    (_BLOCK + r"(self|cross)_attn\.to_out\.weight", r"blocks.\1.\2_attn.out.weight"),
    (_BLOCK + r"cross_attn\.to_(q|kv)\.weight", r"blocks.\1.cross_attn.\2.weight"),
    (_BLOCK + r"ff\.proj_(in|out)\.(weight|bias)", r"blocks.\1.ff.proj_\2.\3"),
    (_BLOCK + r"to_local_embed\.([02])\.(weight|bias)", r"blocks.\1.local_proj.\2.\3"),
    (_BLOCK + r"to_scale_shift_gate", r"blocks.\1.modulation"),
]

_DYT = {"alpha": "alpha", "gamma": "weight", "beta": "bias"}
_LAYER = r"(encoder|decoder)\.blocks\.(\d+)\.transformers\.(\d+)\."

# diffusers' AutoencoderSAME (vae/diffusion_pytorch_model.safetensors, weight norm folded) → SAME.
DIFFUSERS_SAME: list[Rule] = [
    (r"bottleneck\.(scale|bias|running_std)", r"\1"),
    (r"(encoder|decoder)\.proj\.(weight|bias)", r"\1_proj.\2"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.mapping\.(weight|bias)", r"\1.\2.mapping.\3"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.new_tokens", r"\1.\2.token"),
    (_LAYER + r"norm_attn\.(alpha|gamma|beta)", lambda m: f"{m[1]}.{m[2]}.layers.{m[3]}.norm1.{_DYT[m[4]]}"),
    (_LAYER + r"norm_ff\.(alpha|gamma|beta)", lambda m: f"{m[1]}.{m[2]}.layers.{m[3]}.norm2.{_DYT[m[4]]}"),
    (_LAYER + r"attn\.([qk])_norm\.(alpha|gamma|beta)",
     lambda m: f"{m[1]}.{m[2]}.layers.{m[3]}.attn.{m[4]}_norm.{_DYT[m[5]]}"),
    (_LAYER + r"attn\.to_qkv\.weight", r"\1.\2.layers.\3.attn.qkv.weight"),
    (_LAYER + r"attn\.to_out\.weight", r"\1.\2.layers.\3.attn.out.weight"),
    (_LAYER + r"ff\.proj_(in|out)\.(weight|bias)", r"\1.\2.layers.\3.ff.proj_\4.\5"),
]

# diffusers' StableAudio3DurationEmbedder (duration_embedder/diffusion_pytorch_model.safetensors) →
# StableAudio3Conditioning.
DIFFUSERS_DURATION: list[Rule] = [
    (r"freqs", "seconds_total.frequencies"),
    (r"linear\.(weight|bias)", r"seconds_total.proj.\1"),
]
