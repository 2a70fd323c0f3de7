"""How closely a vocoder rebuilds known waveforms from their mels: multi-resolution STFT distance and mel L1.

Both are reconstruction errors against the original clips (0 for a perfect reconstruction), averaged per clip so that
the value does not depend on how clips are batched:

- ``stft_distance``: spectral convergence + log STFT magnitude distance, each averaged over the Parallel WaveGAN
  resolutions (Yamamoto, Song & Kim 2020, Eq. 1-5; :class:`audiodiff.vocoders.losses.MultiResolutionSTFTLoss`);
  ``spectral_convergence`` and ``log_stft_magnitude`` are its two terms;
- ``mel_l1``: mean absolute difference of natural-log mels over the full band, HiFi-GAN's "Mel-Spec. Error"
  (Kong, Kim & Bae 2020, Table 1; :class:`audiodiff.vocoders.losses.MelL1Loss`), in nepers.

:class:`audiodiff.training.vocoder.task.VocoderTask` validates with :func:`reconstruction_errors`, so its
``val/*`` curves and :func:`vocoder_quality` on the same clips agree. Comparing a trained HiFi-GAN with
Griffin-Lim on held-out clips::

    wavs = ...                                   # [N, T] held-out clips at the vocoders' sample rate
    mel = hifigan.mel(wavs)                      # both vocoders take the representation's magnitude mel
    for name, vocoder in {"hifigan": hifigan, "griffinlim": griffinlim}.items():
        print(name, vocoder_quality(vocoder, wavs, mel))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from audiodiff.audio.mel import DEFAULT_MEL, MelSpectrogram
from audiodiff.vocoders.losses import MelL1Loss, MultiResolutionSTFTLoss

Vocoder = Callable[[Tensor], Tensor]


def metric_mel_loss(mel: MelSpectrogram, log_floor: float = 1e-5) -> MelL1Loss:
    """The mel L1 of a vocoder whose input mel is ``mel``: same STFT and bands, but over the full band
    (``f_max = sample_rate / 2``), as HiFi-GAN measures it even when its input mel stops lower."""
    return MelL1Loss(mel.sample_rate, n_fft=mel.n_fft, hop_length=mel.hop_length, win_length=mel.win_length,
                     n_mels=mel.n_mels, f_min=mel.f_min, f_max=None, scale=mel.scale, log_floor=log_floor)


def waveform_mel_loss(sample_rate: int) -> MelL1Loss:
    """The waveform mel L1 every autoencoder is measured with: natural-log magnitude mel of 64 Slaney bands over the
    full band, 1024-point FFT, hop 256 (at 16 kHz, HiFi-GAN's metric for the default mel representation), so mel VAE,
    waveform VAE and a vocoder alone compare on the same clips."""
    return MelL1Loss(sample_rate, n_fft=DEFAULT_MEL.n_fft, hop_length=DEFAULT_MEL.hop_length, n_mels=DEFAULT_MEL.n_mels,
                     f_min=0.0, f_max=None)


def _mono(wav: Tensor, name: str) -> Tensor:
    """``[B, T]`` or ``[B, 1, T]`` -> ``[B, T]``."""
    if wav.ndim == 3 and wav.shape[1] == 1:
        return wav[:, 0]
    if wav.ndim == 2:
        return wav
    raise ValueError(f"{name}: expected mono waveforms [B, T] or [B, 1, T], got shape {tuple(wav.shape)}")


def fit_length(wav: Tensor, length: int) -> Tensor:
    """``wav [B, T']`` cropped, or zero-padded on the right, to ``[B, length]``: a missing tail counts as silence."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def reconstruction_errors(wav_hat: Tensor, wav: Tensor, mel_loss: MelL1Loss,
                          stft_loss: MultiResolutionSTFTLoss) -> dict[str, Tensor]:
    """Per-clip errors of ``wav_hat`` against ``wav`` (both ``[B, T]`` or ``[B, 1, T]``, same shape), averaged over
    the ``B`` clips: scalars ``stft_distance``, ``spectral_convergence``, ``log_stft_magnitude``, ``mel_l1``.

    Spectral convergence normalises by the reference's energy, so it is taken clip by clip (Parallel WaveGAN's loss
    pools the whole batch instead); the mean of clip values is what a different batching would give too.
    """
    wav_hat, wav = _mono(wav_hat, "reconstruction_errors: wav_hat"), _mono(wav, "reconstruction_errors: wav")
    if wav_hat.shape != wav.shape:
        raise ValueError(f"reconstruction_errors: wav_hat {tuple(wav_hat.shape)} and wav {tuple(wav.shape)} differ")
    convergence, log_magnitude, mel_l1 = [], [], []
    for clip_hat, clip in zip(wav_hat.split(1), wav.split(1), strict=True):
        terms = stft_loss(clip_hat, clip)
        convergence.append(terms.spectral_convergence)
        log_magnitude.append(terms.log_magnitude)
        mel_l1.append(mel_loss(clip_hat, clip))
    sc, lm = torch.stack(convergence).mean(), torch.stack(log_magnitude).mean()
    return {"stft_distance": sc + lm, "spectral_convergence": sc, "log_stft_magnitude": lm,
            "mel_l1": torch.stack(mel_l1).mean()}


@torch.no_grad()
def vocoder_quality(vocoder: Vocoder, wavs: Tensor, mel: Tensor, *, mel_loss: MelL1Loss | None = None,
                    stft_loss: MultiResolutionSTFTLoss | None = None, batch_size: int = 16) -> dict[str, float]:
    """Reconstruction errors of ``vocoder(mel)`` against the original clips ``wavs`` (lower is better, 0 is exact).

    Args:
        vocoder: maps a mel ``[b, n_mels, F]`` to waveforms ``[b, T']`` or ``[b, 1, T']`` at the clips' rate, e.g. a
            :class:`~audiodiff.vocoders.hifigan.HiFiGAN` or :class:`~audiodiff.vocoders.griffinlim.GriffinLimVocoder`.
            Outputs are cropped, or zero-padded on the right, to ``T`` samples.
        wavs: the originals, ``[N, T]`` or ``[N, 1, T]``, ``T`` more than half the largest STFT size (1024).
        mel: the vocoder's input for each clip, ``[N, n_mels, F]`` (the mel of ``wavs``, or a generated one).
        mel_loss: the mel of the mel L1; by default :func:`metric_mel_loss` of ``vocoder.mel``.
        stft_loss: the STFT resolutions; by default Parallel WaveGAN's (1024/120/600, 2048/240/1200, 512/50/240).
        batch_size: clips per vocoder call.

    Returns:
        ``{"stft_distance", "spectral_convergence", "log_stft_magnitude", "mel_l1"}`` as floats, means over clips,
        and ``"clips"``: N.
    """
    wavs = _mono(wavs, "vocoder_quality: wavs")
    if mel.ndim != 3 or mel.shape[0] != wavs.shape[0]:
        raise ValueError(f"vocoder_quality: mel must be [N={wavs.shape[0]}, n_mels, F], got {tuple(mel.shape)}")
    if batch_size < 1:
        raise ValueError(f"vocoder_quality: batch_size must be >= 1, got {batch_size}")
    if mel_loss is None:
        own = getattr(vocoder, "mel", None)
        if not isinstance(own, MelSpectrogram):
            raise ValueError(f"vocoder_quality: {type(vocoder).__name__} has no `mel` (MelSpectrogram) to measure "
                             f"the mel L1 with; pass mel_loss=metric_mel_loss(<the representation's mel>)")
        mel_loss = metric_mel_loss(own, float(getattr(vocoder, "log_floor", 1e-5)))
    mel_loss = mel_loss.to(wavs.device)
    stft_loss = (stft_loss or MultiResolutionSTFTLoss()).to(wavs.device)
    sums: dict[str, float] = {}
    for start in range(0, wavs.shape[0], batch_size):
        clips = wavs[start : start + batch_size]
        rebuilt = _mono(vocoder(mel[start : start + batch_size]), "vocoder_quality: vocoder output")
        errors = reconstruction_errors(fit_length(rebuilt.to(clips.dtype), clips.shape[-1]), clips, mel_loss,
                                       stft_loss)
        for key, value in errors.items():
            sums[key] = sums.get(key, 0.0) + float(value) * clips.shape[0]
    count = wavs.shape[0]
    return {**{key: value / count for key, value in sums.items()}, "clips": count}
