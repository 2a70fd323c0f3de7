"""audiodiff.vocoders.griffinlim: mel inverse, fast Griffin-Lim and the vocoder module.

Settings follow the project's mel (16 kHz, n_fft 1024, hop 256, 64 bands). Spectral convergence is
``|| |STFT(y)| - S ||_F / ||S||_F`` (or the same on mels); the bounds below sit about 1.5x above the values
measured when they were written, so that a regression shows.
"""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.audio.mel import MelSpectrogram, mel_filterbank
from audiodiff.vocoders.griffinlim import GriffinLimVocoder, griffin_lim, mel_to_linear, window_lobe

SR = 16000
N_FFT = 1024
HOP = 256


def _sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


def _dominant_hz(wav: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wav * torch.hann_window(wav.shape[-1])).abs()
    return float(spectrum.argmax()) * SR / wav.shape[-1]


def _convergence(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float((estimate - target).norm() / target.norm())


# --- window lobe and mel inverse -------------------------------------------------------------------------


def test_window_lobe_of_hann() -> None:
    window = torch.hann_window(N_FFT)
    torch.testing.assert_close(
        window_lobe(window, N_FFT), torch.tensor([0.25, 1.0, 0.25], dtype=torch.float64)
    )
    torch.testing.assert_close(
        window_lobe(window, N_FFT, power=1.0), torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    )
    short = window_lobe(torch.hann_window(400), 512)  # zero-padded window: wider lobe
    assert short.shape[0] % 2 == 1 and short.shape[0] > 3
    assert float(short.max()) == 1.0 and int(short.argmax()) == short.shape[0] // 2
    torch.testing.assert_close(short, short.flip(0))


def test_mel_to_linear_fits_the_mel() -> None:
    mel = MelSpectrogram(SR, N_FFT, HOP, n_mels=64)
    spectrogram = mel(torch.randn(2, SR, generator=torch.Generator().manual_seed(0)))
    lobe = window_lobe(mel.window, N_FFT)
    linear = mel_to_linear(spectrogram, mel.filterbank, lobe=lobe)
    assert linear.shape == (2, N_FFT // 2 + 1, spectrogram.shape[-1]) and linear.dtype == torch.float32
    assert bool((linear >= 0).all())
    assert _convergence(mel.filterbank @ linear, spectrogram) < 1e-3  # measured 2e-5
    scaled = mel_to_linear(spectrogram * 1e-6, mel.filterbank, lobe=lobe)
    torch.testing.assert_close(scaled, linear * 1e-6, rtol=1e-4, atol=1e-12)
    assert bool((mel_to_linear(torch.zeros(1, 64, 5), mel.filterbank) == 0).all())


def test_mel_to_linear_leaves_uncovered_bins_empty() -> None:
    filterbank = mel_filterbank(SR, N_FFT, 40, f_min=100.0, f_max=4000.0)
    mel = filterbank.float() @ torch.rand(3, N_FFT // 2 + 1, 7, generator=torch.Generator().manual_seed(1))
    linear = mel_to_linear(mel, filterbank)
    covered = filterbank.sum(0) > 0
    assert bool((linear[:, ~covered] == 0).all()) and bool((linear[:, covered] > 0).any())


def test_mel_to_linear_keeps_a_tone_in_place() -> None:
    # A least-squares inverse moves 440 Hz to a band centre about 20 Hz away; this one stays within one bin.
    mel = MelSpectrogram(SR, N_FFT, HOP, n_mels=64).double()
    linear = mel_to_linear(mel(_sine(440.0).double()), mel.filterbank, lobe=window_lobe(mel.window, N_FFT))
    peak_hz = float(linear.mean(-1).argmax()) * SR / N_FFT
    assert abs(peak_hz - 440.0) <= SR / N_FFT


def test_mel_to_linear_rejects_bad_input() -> None:
    filterbank = mel_filterbank(SR, N_FFT, 64)
    with pytest.raises(ValueError, match=r"n_mels=64, F\] for this filterbank, got shape \(1, 80, 10\)"):
        mel_to_linear(torch.ones(1, 80, 10), filterbank)
    with pytest.raises(ValueError, match="nonnegative"):
        mel_to_linear(torch.full((1, 64, 10), -3.0), filterbank)


# --- Griffin-Lim -----------------------------------------------------------------------------------------


def _targets() -> tuple[torch.Tensor, MelSpectrogram]:
    t = torch.arange(SR) / SR
    chirp = 0.5 * torch.sin(2 * math.pi * (200 * t + 1500 * t**2))
    noise = 0.1 * torch.randn(SR, generator=torch.Generator().manual_seed(2))
    mel = MelSpectrogram(SR, N_FFT, HOP, n_mels=64)
    return mel.stft(torch.stack([chirp, noise])).abs(), mel


def test_griffin_lim_converges_and_momentum_helps() -> None:
    magnitude, mel = _targets()
    fast = griffin_lim(magnitude, N_FFT, HOP, generator=torch.Generator().manual_seed(0), length=SR)
    plain = griffin_lim(
        magnitude, N_FFT, HOP, momentum=0.0, generator=torch.Generator().manual_seed(0), length=SR
    )
    assert fast.shape == (2, SR)
    fast_sc = [_convergence(mel.stft(fast[i]).abs(), magnitude[i]) for i in range(2)]
    plain_sc = [_convergence(mel.stft(plain[i]).abs(), magnitude[i]) for i in range(2)]
    assert max(fast_sc) < 0.2  # measured 0.13 (chirp) and 0.14 (noise) after 32 iterations
    assert all(f < p for f, p in zip(fast_sc, plain_sc, strict=True))  # Perraudin et al.: faster than GL


def test_griffin_lim_is_deterministic() -> None:
    magnitude, _ = _targets()
    first = griffin_lim(magnitude, N_FFT, HOP, n_iter=8, generator=torch.Generator().manual_seed(7))
    again = griffin_lim(magnitude, N_FFT, HOP, n_iter=8, generator=torch.Generator().manual_seed(7))
    other = griffin_lim(magnitude, N_FFT, HOP, n_iter=8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    zero_phase = griffin_lim(magnitude, N_FFT, HOP, n_iter=8)
    assert torch.equal(zero_phase, griffin_lim(magnitude, N_FFT, HOP, n_iter=8))
    assert first.shape == (2, HOP * (magnitude.shape[-1] - 1))


def test_griffin_lim_is_differentiable_with_the_same_output() -> None:
    """A magnitude that requires grad gets the waveform the in-place iterations give, and finite gradients even
    where bins are silent, with every choice of ``grad_iters`` (how many of the last iterations pass them)."""
    magnitude, _ = _targets()
    magnitude = magnitude.clone()
    magnitude[:, 300:] = 0.0  # silent bins: |c| = 0 there
    reference = griffin_lim(magnitude, N_FFT, HOP, n_iter=6)
    probe = torch.randn_like(reference)
    for grad_iters in (None, 0, 2):
        leaf = magnitude.clone().requires_grad_()
        out = griffin_lim(leaf, N_FFT, HOP, n_iter=6, grad_iters=grad_iters)
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
        (out * probe).sum().backward()
        assert leaf.grad is not None and bool(torch.isfinite(leaf.grad).all()) and float(leaf.grad.abs().sum()) > 0
        if grad_iters in (None, 0):
            # Griffin-Lim from zero phase is homogeneous of degree 1 in the magnitude (scaling it scales the output),
            # and so is its phase-held-fixed last step: Euler's identity grad . m = probe . out checks the gradient.
            assert float((leaf.grad * magnitude).sum()) == pytest.approx(float((probe * reference).sum()), rel=1e-3)


def test_griffin_lim_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"magnitude must be \[B, K=513, F\] for n_fft=1024"):
        griffin_lim(torch.ones(1, 257, 10), N_FFT, HOP)
    with pytest.raises(ValueError, match="momentum"):
        griffin_lim(torch.ones(1, 513, 10), N_FFT, HOP, momentum=1.5)
    with pytest.raises(ValueError, match="nonnegative"):
        griffin_lim(-torch.ones(1, 513, 10), N_FFT, HOP)


# --- vocoder ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("power", "bound"), [(1.0, 0.15), (2.0, 0.25)])  # measured 0.10 and 0.16
def test_vocoder_renders_a_sine_at_its_pitch(power: float, bound: float) -> None:
    mel = MelSpectrogram(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, power=power)
    vocoder = GriffinLimVocoder.from_mel_spectrogram(mel)
    target = mel(_sine(440.0)[None])
    wav = vocoder(target, generator=torch.Generator().manual_seed(0), length=SR)
    assert wav.shape == (1, SR) and wav.dtype == torch.float32 and bool(torch.isfinite(wav).all())
    assert abs(_dominant_hz(wav[0]) - 440.0) <= 10.0
    assert _convergence(mel(wav), target) < bound
    again = vocoder(target, generator=torch.Generator().manual_seed(0), length=SR)
    assert torch.equal(wav, again)


def test_vocoder_batch_matches_single_clips() -> None:
    vocoder = GriffinLimVocoder(SR, N_FFT, HOP, n_mels=64, n_iter=8)
    clips = torch.stack([_sine(440.0, 0.5), _sine(1000.0, 0.5)])
    mels = vocoder.mel(clips)
    batched = vocoder(mels)
    assert batched.shape == (2, HOP * (mels.shape[-1] - 1))
    for i in range(2):
        torch.testing.assert_close(batched[i], vocoder(mels[i : i + 1])[0], rtol=1e-4, atol=1e-5)


def test_vocoder_rejects_bad_input() -> None:
    vocoder = GriffinLimVocoder(SR, N_FFT, HOP, n_mels=64)
    with pytest.raises(ValueError, match=r"mel must be \[B, n_mels=64, F\], got shape \(64, 10\)"):
        vocoder(torch.ones(64, 10))
    with pytest.raises(ValueError, match="NaN/Inf"):
        vocoder(torch.full((1, 64, 10), float("nan")))
    with pytest.raises(ValueError, match="center=True"):
        GriffinLimVocoder.from_mel_spectrogram(MelSpectrogram(SR, N_FFT, HOP, center=False))
    assert vocoder.state_dict() == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vocoder_on_cuda() -> None:
    mel = MelSpectrogram(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, power=1.0)
    vocoder = GriffinLimVocoder.from_mel_spectrogram(mel).cuda()
    target = mel(_sine(440.0)[None])
    generator = torch.Generator(device="cuda").manual_seed(0)
    wav = vocoder(target.cuda(), generator=generator, length=SR)
    assert wav.device.type == "cuda"
    assert abs(_dominant_hz(wav[0].cpu()) - 440.0) <= 10.0
    assert _convergence(mel(wav.cpu()), target) < 0.15
    generator.manual_seed(0)
    assert torch.equal(wav, vocoder(target.cuda(), generator=generator, length=SR))
