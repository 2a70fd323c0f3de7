"""audiodiff.evaluation.vocoder_quality: exact reconstructions score 0, worse ones more; librosa float64 agrees."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from audiodiff.audio.mel import MelSpectrogram
from audiodiff.evaluation.vocoder_quality import metric_mel_loss, vocoder_quality
from audiodiff.vocoders.griffinlim import GriffinLimVocoder

SR = 16000
N_FFT, HOP, N_MELS = 1024, 256, 64
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))  # Parallel WaveGAN's, the default


def _clips(n: int = 3, length: int = 8000) -> torch.Tensor:
    """Decaying tones and a noise burst, [n, length] in [-1, 1]."""
    t = torch.arange(length, dtype=torch.float64) / SR
    clips = [0.5 * torch.sin(2 * math.pi * (220.0 * (k + 1)) * t) * torch.exp(-3.0 * t) for k in range(n - 1)]
    noise = torch.randn(length, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    clips.append(0.2 * noise * (t < 0.2))
    return torch.stack(clips).float()


def _noisy(wavs: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(wavs.shape, generator=torch.Generator().manual_seed(seed))
    scale = wavs.pow(2).mean(-1, keepdim=True).sqrt() / noise.pow(2).mean(-1, keepdim=True).sqrt()
    return wavs + noise * scale * 10 ** (-snr_db / 20)


def _mel() -> MelSpectrogram:
    return MelSpectrogram(SR, N_FFT, HOP, n_mels=N_MELS, f_max=8000.0, power=1.0)


def _returns(outputs: torch.Tensor):
    """A stand-in vocoder that ignores the mel and returns `outputs` (all clips in one call)."""
    return lambda mel: outputs[: mel.shape[0]]


def _reference(wav_hat: np.ndarray, wav: np.ndarray) -> dict[str, float]:
    """The metrics per clip in float64 with librosa, averaged over clips."""
    sc, lm, mel_l1 = [], [], []
    for y_hat, y in zip(wav_hat.astype(np.float64), wav.astype(np.float64), strict=True):
        terms = []
        for n_fft, hop, win in RESOLUTIONS:
            def mag(x, n_fft=n_fft, hop=hop, win=win):
                spec = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True,
                                    pad_mode="reflect")
                return np.sqrt(np.maximum(spec.real**2 + spec.imag**2, 1e-7))

            s, s_hat = mag(y), mag(y_hat)
            terms.append((np.linalg.norm(s - s_hat) / np.linalg.norm(s), np.abs(np.log(s) - np.log(s_hat)).mean()))
        sc.append(np.mean([t[0] for t in terms]))
        lm.append(np.mean([t[1] for t in terms]))

        def log_mel(x):
            mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=N_FFT, hop_length=HOP, power=1.0, n_mels=N_MELS,
                                                 fmin=0.0, fmax=None, htk=False, norm="slaney", center=True,
                                                 pad_mode="reflect")
            return np.log(np.maximum(mel, 1e-5))

        mel_l1.append(np.abs(log_mel(y) - log_mel(y_hat)).mean())
    return {"spectral_convergence": float(np.mean(sc)), "log_stft_magnitude": float(np.mean(lm)),
            "stft_distance": float(np.mean(sc) + np.mean(lm)), "mel_l1": float(np.mean(mel_l1))}


def test_exact_reconstruction_scores_zero_and_longer_outputs_are_cropped() -> None:
    wavs = _clips()
    mel = _mel()(wavs)
    longer = torch.cat([wavs, torch.ones(wavs.shape[0], 300)], dim=-1)
    for outputs in (wavs, longer[:, None]):  # [N, T] or [N, 1, T'] with T' > T
        scores = vocoder_quality(_returns(outputs), wavs, mel, mel_loss=metric_mel_loss(_mel()))
        assert scores == {"stft_distance": 0.0, "spectral_convergence": 0.0, "log_stft_magnitude": 0.0,
                          "mel_l1": 0.0, "clips": 3}


def test_more_noise_scores_worse_on_every_metric() -> None:
    wavs = _clips()
    mel = _mel()(wavs)
    scores = [vocoder_quality(_returns(_noisy(wavs, snr)), wavs, mel, mel_loss=metric_mel_loss(_mel()))
              for snr in (30.0, 10.0, 0.0)]
    for key in ("stft_distance", "spectral_convergence", "log_stft_magnitude", "mel_l1"):
        values = [s[key] for s in scores]
        assert 0.0 < values[0] < values[1] < values[2], (key, values)


def test_values_match_librosa_and_do_not_depend_on_batching() -> None:
    wavs = _clips()
    noisy = _noisy(wavs, 10.0)
    mel = _mel()(wavs)
    calls = iter([noisy[:2], noisy[2:]])
    scores = vocoder_quality(lambda m: next(calls), wavs, mel, mel_loss=metric_mel_loss(_mel()), batch_size=2)
    expected = _reference(noisy.numpy(), wavs.numpy())
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, rel=2e-4), key
    whole = vocoder_quality(_returns(noisy), wavs, mel, mel_loss=metric_mel_loss(_mel()))
    for key in expected:
        assert whole[key] == pytest.approx(scores[key], rel=1e-5), key


def test_griffin_lim_ranks_between_the_original_and_noise() -> None:
    """A real vocoder through the default path (its own mel gives the mel L1): Griffin-Lim rebuilds the clips far
    better than noise of the same energy does, and not exactly."""
    wavs = _clips()
    griffinlim = GriffinLimVocoder(SR, N_FFT, HOP, n_mels=N_MELS, f_max=8000.0, power=1.0, n_iter=32)
    mel = griffinlim.mel(wavs)
    gl = vocoder_quality(griffinlim, wavs, mel)
    noise_like = _noisy(wavs, 0.0) - wavs  # white noise with each clip's energy
    noise = vocoder_quality(_returns(noise_like), wavs, mel, mel_loss=metric_mel_loss(griffinlim.mel))
    for key in ("stft_distance", "mel_l1"):
        assert 0.0 < gl[key] < 0.5 * noise[key], (key, gl[key], noise[key])


def test_bad_inputs_are_named() -> None:
    wavs = _clips()
    mel = _mel()(wavs)
    with pytest.raises(ValueError, match="has no `mel`"):
        vocoder_quality(_returns(wavs), wavs, mel)
    with pytest.raises(ValueError, match=r"mel must be \[N=3, n_mels, F\]"):
        vocoder_quality(_returns(wavs), wavs, mel[:2], mel_loss=metric_mel_loss(_mel()))
    with pytest.raises(ValueError, match="mono waveforms"):
        vocoder_quality(_returns(wavs), wavs[:, None].expand(3, 2, -1), mel, mel_loss=metric_mel_loss(_mel()))
