"""Inference from export folders: prompts → waveforms, and the edits (variation, inpainting, continuation, long form).

    pipe = AudioDiffusionPipeline.from_pretrained("runs/sfx/seed0/export")
    out = pipe(["three short high beeps"], duration=3.0, steps=25, guidance=3.0, seed=0)
    out.audio  # [B, C, T] float32 at out.sample_rate Hz

Nothing here imports training code: a training checkpoint becomes an export folder through `audiodiff.export`.
"""

from audiodiff.pipeline.near_copy import CopyVerdict, NearCopyRefused, OutputGuard
from audiodiff.pipeline.pipeline import (
    AudioDiffusionPipeline,
    AudioInput,
    GenerationOutput,
    ModelLoadError,
    describe,
    load_inference_state,
)

__all__ = ["AudioDiffusionPipeline", "AudioInput", "CopyVerdict", "GenerationOutput", "ModelLoadError",
           "NearCopyRefused", "OutputGuard", "describe", "load_inference_state"]
