"""audiodiff.autoencoders: trainable VAEs whose latents serve as diffusion representations.

- :class:`~audiodiff.autoencoders.mel_vae.MelVAE`: the normalised log-mel compressed 4–8× in time, decoded back to a
  log-mel and voiced by the mel representation's vocoder;
- :class:`~audiodiff.autoencoders.waveform_vae.WaveformVAE`: Oobleck/DAC-style strided convolutions with snake
  activations straight from and back to the waveform.

Trained by :mod:`audiodiff.training.autoencoder.run`; used through
:class:`audiodiff.representations.autoencoder.AutoencoderRepresentation`.
"""

from audiodiff.autoencoders.base import DiagonalGaussian, VariationalAutoencoder
from audiodiff.autoencoders.mel_vae import MelVAE
from audiodiff.autoencoders.waveform_vae import Snake, WaveformVAE

__all__ = ["DiagonalGaussian", "MelVAE", "Snake", "VariationalAutoencoder", "WaveformVAE"]
