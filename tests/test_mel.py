"""audiodiff.audio.mel against librosa (float64 reference) and, where installed, torchaudio."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from audiodiff.audio.mel import (
    MelSpectrogram,
    hz_to_mel,
    log_compress,
    log_decompress,
    mel_filterbank,
    mel_to_hz,
)

# (sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, power, scale, norm, pad_mode)
MEL_CASES = [
    (16000, 1024, 256, None, 64, 0.0, None, 2.0, "slaney", "slaney", "reflect"),
    (16000, 1024, 256, None, 64, 0.0, 8000.0, 1.0, "slaney", "slaney", "reflect"),
    (22050, 512, 128, 400, 80, 20.0, 8000.0, 1.0, "htk", None, "reflect"),
    (44100, 2048, 512, None, 128, 0.0, None, 2.0, "htk", "slaney", "constant"),
    (8000, 256, 64, 200, 40, 50.0, 3800.0, 2.0, "slaney", None, "reflect"),
    (48000, 1200, 300, 1200, 96, 0.0, 20000.0, 1.0, "slaney", "slaney", "constant"),
]


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scale_matches_librosa(scale: str) -> None:
    hz = np.array([0.0, 20.0, 440.0, 999.9, 1000.0, 1000.1, 4000.0, 22050.0])
    mels = hz_to_mel(torch.from_numpy(hz), scale).numpy()
    np.testing.assert_allclose(mels, librosa.hz_to_mel(hz, htk=scale == "htk"), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(torch.from_numpy(mels), scale).numpy(), hz, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("case", MEL_CASES)
def test_filterbank_matches_librosa(case: tuple) -> None:
    sample_rate, n_fft, _, _, n_mels, f_min, f_max, _, scale, norm, _ = case
    ours = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, scale=scale, norm=norm)
    reference = librosa.filters.mel(
        sr=sample_rate,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
        htk=scale == "htk",
        norm=norm,
        dtype=np.float64,
    )
    assert ours.dtype == torch.float64 and ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("case", MEL_CASES)
def test_melspectrogram_matches_librosa(case: tuple) -> None:
    sample_rate, n_fft, hop, win, n_mels, f_min, f_max, power, scale, norm, pad_mode = case
    audio = np.random.default_rng(sample_rate + n_fft).standard_normal(sample_rate // 4)
    reference = librosa.feature.melspectrogram(
        y=audio,
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window="hann",
        center=True,
        pad_mode=pad_mode,
        power=power,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
        htk=scale == "htk",
        norm=norm,
    )
    module = MelSpectrogram(
        sample_rate, n_fft, hop, win, n_mels, f_min, f_max, power, scale, norm, center=True, pad_mode=pad_mode
    ).double()
    ours = module(torch.from_numpy(audio))
    assert ours.shape == reference.shape
    assert ours.shape[-1] == module.num_frames(audio.shape[-1])
    assert _relative_error(ours.numpy(), reference) < 1e-4


def test_default_float32_module_is_close_too() -> None:
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    reference = librosa.feature.melspectrogram(
        y=audio.astype(np.float64), sr=16000, n_fft=512, hop_length=128, n_mels=40, pad_mode="reflect"
    )
    ours = MelSpectrogram(16000, 512, 128, n_mels=40)(torch.from_numpy(audio))
    assert ours.dtype == torch.float32
    assert _relative_error(ours.double().numpy(), reference) < 1e-4


def test_uncentred_frames() -> None:
    audio = np.random.default_rng(1).standard_normal(4000)
    reference = librosa.feature.melspectrogram(
        y=audio, sr=16000, n_fft=512, hop_length=160, n_mels=32, center=False
    )
    module = MelSpectrogram(16000, 512, 160, n_mels=32, center=False).double()
    ours = module(torch.from_numpy(audio)).numpy()
    assert ours.shape == reference.shape == (32, module.num_frames(4000))
    assert _relative_error(ours, reference) < 1e-4


def test_batched_equals_single() -> None:
    module = MelSpectrogram(16000, 512, 128, n_mels=40).double()
    wav = torch.randn(2, 3, 4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = module(wav)
    assert batched.shape == (2, 3, 40, 32)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(batched[i, j], module(wav[i, j]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_differentiable(power: float) -> None:
    module = MelSpectrogram(8000, 16, 4, n_mels=4, power=power).double()
    wav = torch.randn(
        2, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(module, (wav,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_buffers_follow_module_and_stay_out_of_checkpoints() -> None:
    module = MelSpectrogram(16000, 512, 128, n_mels=40)
    assert module.state_dict() == {}
    assert module.window.dtype == torch.float32 and module.filterbank.shape == (40, 257)
    module = module.double()
    assert module.window.dtype == torch.float64 and module.filterbank.dtype == torch.float64
    assert module.frame_rate == 125.0 and module.n_freqs == 257
    device = torch.device("meta")
    moved = MelSpectrogram(16000, 512, 128, n_mels=40).to(device)
    assert moved.window.device == device and moved.filterbank.device == device


def test_rejects_bad_parameters_and_input() -> None:
    with pytest.raises(ValueError, match=r"f_max <= 8000.0 Hz \(Nyquist\)"):
        mel_filterbank(16000, 512, 40, f_max=9000.0)
    with pytest.raises(ValueError, match="scale must be 'slaney' or 'htk'"):
        mel_filterbank(16000, 512, 40, scale="bark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm must be 'slaney' or None"):
        mel_filterbank(16000, 512, 40, norm="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"win_length must lie in \[1, n_fft=512\]"):
        MelSpectrogram(16000, 512, 128, win_length=1024)
    module = MelSpectrogram(16000, 512, 128, n_mels=40)
    with pytest.raises(ValueError, match="wav has 200 samples.*needs at least 257"):
        module(torch.zeros(200))


def test_empty_band_warning() -> None:
    with pytest.warns(UserWarning, match="empty band"):
        mel_filterbank(16000, 64, 128)


def test_log_compress_round_trip() -> None:
    mel = torch.tensor([0.0, 1e-7, 1e-5, 0.5, 3.0])
    log_mel = log_compress(mel)
    torch.testing.assert_close(log_mel, torch.log(torch.tensor([1e-5, 1e-5, 1e-5, 0.5, 3.0])))
    torch.testing.assert_close(log_decompress(log_mel), torch.tensor([1e-5, 1e-5, 1e-5, 0.5, 3.0]))
    torch.testing.assert_close(
        log_compress(mel, floor=1e-3)[0], torch.tensor(np.log(1e-3), dtype=torch.float32)
    )
    with pytest.raises(ValueError, match="floor must be > 0"):
        log_compress(mel, floor=0.0)


@pytest.mark.parametrize("case", [c for c in MEL_CASES if c[0] % 2 == 0])
def test_matches_torchaudio(case: tuple) -> None:
    torchaudio = pytest.importorskip("torchaudio")
    sample_rate, n_fft, hop, win, n_mels, f_min, f_max, power, scale, norm, pad_mode = case
    audio = torch.randn(2, sample_rate // 4, generator=torch.Generator().manual_seed(2))
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=win,
        hop_length=hop,
        f_min=f_min,
        f_max=f_max,
        n_mels=n_mels,
        power=power,
        center=True,
        pad_mode=pad_mode,
        norm=norm,
        mel_scale=scale,
    )(audio)
    ours = MelSpectrogram(
        sample_rate, n_fft, hop, win, n_mels, f_min, f_max, power, scale, norm, pad_mode=pad_mode
    )(audio)
    assert ours.shape == reference.shape
    assert _relative_error(ours.numpy(), reference.numpy()) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    module = MelSpectrogram(16000, 1024, 256, n_mels=64)
    wav = torch.randn(3, 16000, generator=torch.Generator().manual_seed(4))
    on_gpu = module.cuda()(wav.cuda())
    assert on_gpu.device.type == "cuda"
    assert _relative_error(on_gpu.cpu().double().numpy(), module.cpu()(wav).double().numpy()) < 1e-5


def test_the_one_mel_of_the_configuration_is_the_code_default():
    """conf/mel/default.yaml (what configurations read) and DEFAULT_MEL (what code defaults read) agree, and every
    mel-reading configuration follows a change of the `mel` group."""
    from pathlib import Path

    import yaml

    from audiodiff.audio.mel import DEFAULT_MEL
    from audiodiff.config import compose_config

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "mel" / "default.yaml").read_text())
    assert conf == {k: getattr(DEFAULT_MEL, k) for k in conf} and set(conf) == set(DEFAULT_MEL.__dataclass_fields__)
    cfg = compose_config("train", ["mel.n_mels=80", "autoencoder=mel_vae"])
    assert cfg.representation.n_mels == cfg.autoencoder.n_mels == 80
    assert compose_config("embedder", ["mel.n_mels=80"]).model.n_mels == 80
