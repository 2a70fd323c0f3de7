"""AudioSeal (San Roman et al. (2024), "Proactive detection of voice cloning with localized watermarking") as an
optional method: used only when the `audioseal` package and its weights are present (`pip install audioseal`;
the weights come from its model cards). Its marks and the built-in spectral marks do not detect each other."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from audiodiff.watermark.types import Detection, WatermarkError, check_bits

RATE = 16_000  # Hz: AudioSeal's models work at 16 kHz
MESSAGE_BITS = 16


def _load() -> Any:
    try:
        import audioseal
    except ImportError:
        raise WatermarkError("watermark method 'audioseal' needs the audioseal package and its weights "
                             "(pip install audioseal); the built-in method is 'spectral'") from None
    return audioseal


class AudioSealWatermark:
    """AudioSeal's 16-bit generator and detector. `alpha`: the detection probability's complement below which a
    clip counts as marked (AudioSeal reports a probability, not a calibrated p-value; 1 - probability is shown)."""

    name = "audioseal"
    bits = MESSAGE_BITS

    def __init__(self, generator: str = "audioseal_wm_16bits", detector: str = "audioseal_detector_16bits",
                 alpha: float = 0.5) -> None:
        module = _load()
        try:
            self.generator = module.AudioSeal.load_generator(generator).eval()
            self.detector = module.AudioSeal.load_detector(detector).eval()
        except Exception as err:  # missing weights, no network to fetch them
            raise WatermarkError(f"watermark method 'audioseal': cannot load its weights ({err})") from None
        self.alpha = alpha
        self.key_id = generator

    def embed(self, wav: Tensor, sample_rate: int, bits: Sequence[int] = (0,) * MESSAGE_BITS) -> Tensor:
        """wav [C, T] or [B, C, T] at sample_rate Hz → marked, same shape; each channel marked at 16 kHz."""
        from audiodiff.audio.transforms import resample

        message = torch.tensor([check_bits(bits, MESSAGE_BITS)])
        flat = wav.detach().float().cpu().reshape(-1, 1, wav.shape[-1])
        low = resample(flat, sample_rate, RATE)
        with torch.no_grad():
            mark = self.generator.get_watermark(low, RATE, message=message.expand(flat.shape[0], -1))
        mark = resample(mark, RATE, sample_rate)[..., : wav.shape[-1]]
        mark = torch.nn.functional.pad(mark, (0, wav.shape[-1] - mark.shape[-1]))
        return (flat + mark).reshape(wav.shape).to(wav.dtype)

    def detect(self, wav: Tensor, sample_rate: int) -> Detection:
        """wav [T] or [C, T] (mixed to mono) at sample_rate Hz → AudioSeal's verdict."""
        from audiodiff.audio.transforms import resample

        mono = wav.detach().float().cpu().reshape(-1, wav.shape[-1]).mean(0).view(1, 1, -1)
        with torch.no_grad():
            probability, message = self.detector.detect_watermark(resample(mono, sample_rate, RATE), RATE)
        probability = float(probability)
        marked = 1.0 - probability < self.alpha
        bits = tuple(int(b) for b in message[0].tolist()) if marked else None
        return Detection(self.name, marked, probability, max(0.0, 1.0 - probability) if math.isfinite(probability)
                         else 1.0, bits, note="p-value = 1 - AudioSeal's probability (not calibrated)")
