"""What a denoiser makes of a clip it almost sees: its single estimate x̂0 from the clip's own latents, noised.

A model that loses a sound here (a square wave's harmonics, a siren's wail) cannot draw it either, whatever the
sampler: the last steps of every sampler are such estimates (recipes/sfx/diagnose_kinds.py, diagnose_trills.py).
"""

from __future__ import annotations

import numpy as np
import torch

from audiodiff.pipeline import AudioDiffusionPipeline


def round_trip(pipe: AudioDiffusionPipeline, wav: np.ndarray) -> np.ndarray:
    """`wav` [T] (mono float samples at the model's rate) through the model's representation and back, [T]: what
    any estimate of the model can at best return (whole frames only: a last partial frame comes back as zeros)."""
    rep = pipe.model.representation
    with torch.no_grad():
        decoded = rep.decode(rep.encode(torch.from_numpy(wav)[None, None])).reshape(-1)[:wav.size].numpy()
    return np.pad(decoded, (0, wav.size - decoded.size))


def one_step_estimates(pipe: AudioDiffusionPipeline, clips: list[np.ndarray], captions: list[str],
                       t: float) -> list[np.ndarray]:
    """Each clip's one-step estimate, decoded back to audio.

    Args:
        pipe: the model (its representation encodes and decodes, its objective denoises).
        clips: mono float samples [T] at the model's sample rate.
        captions: the text each estimate is conditioned on, one per clip.
        t: flow time in [0, 1]: clip i is encoded to latents z [1, D, L] and noised to x_t = (1 - t) z + t ε, with
            ε drawn from seed i.

    Returns:
        The decoded estimates, each [T] like its clip (the decoder gives whole frames: a last partial frame's samples
        come back as zeros).
    """
    if len(clips) != len(captions):
        raise ValueError(f"one_step_estimates: {len(clips)} clips but {len(captions)} captions")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"one_step_estimates: t must lie in [0, 1], got {t}")
    m, rep = pipe.model, pipe.model.representation
    multiple = getattr(m.net, "length_multiple", 1)
    out = []
    for i, (caption, wav) in enumerate(zip(captions, clips, strict=True)):
        with torch.no_grad():
            z = rep.encode(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None, None])
            length = z.shape[-1]
            z = torch.nn.functional.pad(z, (0, (-length) % multiple), mode="replicate")
            eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(i))
            x0 = m.objective.denoise(m.net, (1 - t) * z + t * eps, torch.full((1,), t),
                                     m.encode_text([caption]))[..., :length]
            decoded = rep.decode(x0).reshape(-1)[:wav.size].numpy()
            out.append(np.pad(decoded, (0, wav.size - decoded.size)))  # whole frames only: the tail padded
    return out
