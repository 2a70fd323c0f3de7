"""audiodiff.vocoders: HiFi-GAN (trainable, SpeechT5HifiGan weights) and Griffin-Lim (no training)."""

from audiodiff.vocoders.griffinlim import GriffinLimVocoder
from audiodiff.vocoders.hifigan import HiFiGAN
from audiodiff.vocoders.vocos import Vocos

__all__ = ["GriffinLimVocoder", "HiFiGAN", "Vocos"]
