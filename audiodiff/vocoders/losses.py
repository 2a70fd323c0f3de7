"""Reconstruction losses of vocoders and autoencoders (the GAN terms are in :mod:`audiodiff.adversarial.losses`).

HiFi-GAN (Kong, Kim & Bae 2020, Eq. 1-6) trains the generator ``G`` against discriminators ``D_k`` with

    L_G = sum_k L_adv(G; D_k) + lambda_fm * L_fm + lambda_mel * L_mel,    lambda_fm = 2, lambda_mel = 45
    L_D = sum_k L_adv(D_k; G)

using :func:`~audiodiff.adversarial.losses.generator_adversarial_loss`,
:func:`~audiodiff.adversarial.losses.feature_matching_loss` and :class:`MelL1Loss`, and
:func:`~audiodiff.adversarial.losses.discriminator_loss` for ``L_D``. :class:`MultiResolutionSTFTLoss` (Yamamoto,
Song & Kim 2020, "Parallel WaveGAN", Eq. 1-5) is the auxiliary spectral loss of Parallel WaveGAN-style recipes.

One training step, with ``G`` a :class:`audiodiff.vocoders.hifigan.HiFiGAN`, ``D`` a
:class:`audiodiff.adversarial.discriminators.CombinedDiscriminator` and ``wav: [B, T]``::

    wav_hat = G(G.mel(wav))[..., : wav.shape[-1]]
    real, _ = D(wav); fake, _ = D(wav_hat.detach())
    loss_d = discriminator_loss(real, fake)                                  # step D
    real, real_fmaps = D(wav); fake, fake_fmaps = D(wav_hat)
    loss_g = (generator_adversarial_loss(fake) + 2 * feature_matching_loss(real_fmaps, fake_fmaps)
              + 45 * mel_loss(wav_hat, wav))                                 # step G
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from audiodiff.audio.mel import MelScale, MelSpectrogram, log_compress


class MelL1Loss(nn.Module):
    """Mean absolute difference of natural-log mel spectrograms (HiFi-GAN Eq. 3, ``lambda_mel = 45``):
    ``mean |log(max(M(y), floor)) - log(max(M(y_hat), floor))|`` with ``M`` a magnitude mel
    (:class:`audiodiff.audio.mel.MelSpectrogram`, ``power=1``, centred frames).

    HiFi-GAN computes it over the full band (``f_max = None``) even when the generator's input mel stops lower.

    Args:
        sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, scale: the loss's mel.
        log_floor: clamp before the log.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        scale: MelScale = "slaney",
        log_floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, power=1.0,
                                  scale=scale, norm="slaney")  # fmt: skip
        self.log_floor = log_floor

    def forward(self, wav_hat: Tensor, wav: Tensor) -> Tensor:
        """``wav_hat``, ``wav``: ``[B, T]`` or ``[B, 1, T]``, same shape -> scalar."""
        if wav_hat.shape != wav.shape:
            raise ValueError(f"MelL1Loss: wav_hat {tuple(wav_hat.shape)} and wav {tuple(wav.shape)} differ in shape")
        log_hat = log_compress(self.mel(wav_hat), self.log_floor)
        log_ref = log_compress(self.mel(wav), self.log_floor)
        return (log_hat - log_ref).abs().mean()


class STFTLossTerms(NamedTuple):
    """The two terms of :class:`MultiResolutionSTFTLoss`, each averaged over resolutions; add them for the loss."""

    spectral_convergence: Tensor
    log_magnitude: Tensor

    @property
    def total(self) -> Tensor:
        """``spectral_convergence + log_magnitude`` (Yamamoto et al. 2020, Eq. 5 with one resolution set)."""
        return self.spectral_convergence + self.log_magnitude


class MultiResolutionSTFTLoss(nn.Module):
    """Multi-resolution STFT loss (Yamamoto, Song & Kim 2020, "Parallel WaveGAN", Eq. 1-5).

    Per resolution, with ``S = |STFT(y)|`` and ``S_hat = |STFT(y_hat)|`` (centred, reflect-padded, periodic Hann
    window of ``win_length`` zero-padded to ``n_fft``; magnitudes ``sqrt(max(re^2 + im^2, eps))``):

    - spectral convergence ``||S - S_hat||_F / ||S||_F`` (Frobenius norms over the whole batch, as Parallel WaveGAN);
    - log magnitude ``mean |log S - log S_hat|``.

    Both are averaged over the resolutions. Defaults are the paper's ``(n_fft, hop_length, win_length)`` sets.
    """

    def __init__(
        self,
        resolutions: Sequence[Sequence[int]] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240)),
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionSTFTLoss: needs at least one (n_fft, hop_length, win_length)")
        for n_fft, hop, win in resolutions:
            if not 0 < win <= n_fft or hop < 1:
                raise ValueError(
                    f"MultiResolutionSTFTLoss: need 0 < win_length <= n_fft, hop_length >= 1; got ({n_fft}, {hop}, "
                    f"{win})"
                )
        self.resolutions = [(int(n), int(h), int(w)) for n, h, w in resolutions]
        self.eps = eps
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(win), persistent=False)

    def magnitude(self, wav: Tensor, resolution: int) -> Tensor:
        """``wav: [..., T]`` -> ``|STFT| [..., n_fft // 2 + 1, frames]`` at resolution index ``resolution``."""
        n_fft, hop, win = self.resolutions[resolution]
        window = getattr(self, f"window{resolution}").to(wav.dtype)
        flat = wav.reshape(-1, wav.shape[-1])
        spec = torch.stft(flat, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)
        magnitude = (spec.real.square() + spec.imag.square()).clamp_min(self.eps).sqrt()
        return magnitude.reshape(*wav.shape[:-1], *magnitude.shape[-2:])

    def forward(self, wav_hat: Tensor, wav: Tensor) -> STFTLossTerms:
        """``wav_hat``, ``wav``: ``[B, T]`` or ``[B, 1, T]``, same shape -> :class:`STFTLossTerms` of scalars."""
        if wav_hat.shape != wav.shape:
            raise ValueError(
                f"MultiResolutionSTFTLoss: wav_hat {tuple(wav_hat.shape)} and wav {tuple(wav.shape)} differ in shape"
            )
        convergence = wav.new_zeros(())
        log_magnitude = wav.new_zeros(())
        for i in range(len(self.resolutions)):
            mag_hat, mag = self.magnitude(wav_hat, i), self.magnitude(wav, i)
            convergence = convergence + torch.linalg.vector_norm(mag - mag_hat) / torch.linalg.vector_norm(mag)
            log_magnitude = log_magnitude + (mag.log() - mag_hat.log()).abs().mean()
        count = len(self.resolutions)
        return STFTLossTerms(convergence / count, log_magnitude / count)


def anti_wrap(x: Tensor) -> Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the distance of a phase difference to the nearest whole turn, in [0, pi]."""
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


class SpectrumTerms(NamedTuple):
    log_magnitude: Tensor  # mean |log|S_hat| - log|S||, nepers
    phase: Tensor          # instantaneous phase + group delay + instantaneous frequency errors, radians


def spectrum_loss(spectrum_hat: Tensor, spectrum: Tensor, floor: float = 1e-5) -> SpectrumTerms:
    """Direct losses on a generator's complex STFT ``spectrum_hat [B, K, F]`` against the clip's ``spectrum``
    (same STFT settings), for vocoders that predict the spectrum (:class:`audiodiff.vocoders.vocos.Vocos`).

    ``log_magnitude``: L1 of log magnitudes clamped at ``floor``. ``phase``: APNet's anti-wrapped phase losses (Ai &
    Ling 2023, Eq. 4-6): the instantaneous phase, its difference along frequency (group delay) and along time
    (instantaneous angular frequency), each an anti-wrapped absolute error. Each is averaged with the clip's
    magnitude as weight, so the phase of bins that hold no sound, which no mel determines, does not count.
    """
    if spectrum_hat.shape != spectrum.shape or not spectrum.is_complex():
        raise ValueError(f"spectrum_loss: expected complex spectra of one shape, got {tuple(spectrum_hat.shape)} "
                         f"and {tuple(spectrum.shape)}")
    magnitude_hat, magnitude = spectrum_hat.abs(), spectrum.abs()
    log_magnitude = (magnitude_hat.clamp_min(floor).log() - magnitude.clamp_min(floor).log()).abs().mean()
    phase_hat, phase = spectrum_hat.angle(), spectrum.angle()
    weight = magnitude.detach()

    def weighted(error: Tensor, w: Tensor) -> Tensor:
        return (error * w).sum() / w.sum().clamp_min(1e-8)

    delay = weighted(anti_wrap(phase_hat.diff(dim=1) - phase.diff(dim=1)), torch.minimum(weight[:, 1:], weight[:, :-1]))
    frequency = weighted(anti_wrap(phase_hat.diff(dim=2) - phase.diff(dim=2)),
                         torch.minimum(weight[..., 1:], weight[..., :-1]))
    return SpectrumTerms(log_magnitude, weighted(anti_wrap(phase_hat - phase), weight) + delay + frequency)
