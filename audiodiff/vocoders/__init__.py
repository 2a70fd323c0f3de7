"""audiodiff.vocoders: HiFi-GAN (trainable, SpeechT5HifiGan weights) and Griffin-Lim (no training)."""

from audiodiff.vocoders.griffinlim import GriffinLimVocoder
from audiodiff.vocoders.hifigan import HiFiGAN

__all__ = ["GriffinLimVocoder", "HiFiGAN"]
