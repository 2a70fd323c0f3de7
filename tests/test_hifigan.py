"""audiodiff.vocoders.hifigan, .discriminators and .losses.

References are independent of the code under test: transformers' ``SpeechT5HifiGan`` for the generator and its
weights, librosa in float64 for the mel and STFT losses, closed-form layer arithmetic for shapes and parameter
counts, hand-computed values for the least-squares GAN and feature-matching losses.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from audiodiff.adversarial.discriminators import (
    CombinedDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionSTFTDiscriminator,
    MultiScaleDiscriminator,
)
from audiodiff.adversarial.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from audiodiff.representations.mel import MelRepresentation
from audiodiff.vocoders.hifigan import HiFiGAN, convert_weight_norm, load_speecht5_state_dict, speecht5_kwargs
from audiodiff.vocoders.losses import MelL1Loss, MultiResolutionSTFTLoss

CONF = Path(__file__).resolve().parents[1] / "conf"
SR = 16000

# A SpeechT5HifiGan small enough for CPU tests; kernel 16 at rate 5 (as AudioLDM's first stage) makes the stack
# emit one extra sample per 2 output samples, so trimming is exercised.
TINY_SPEECHT5 = {
    "model_in_dim": 8,
    "sampling_rate": 16000,
    "upsample_initial_channel": 16,
    "upsample_rates": [5, 2],
    "upsample_kernel_sizes": [16, 4],
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3], [1, 3]],
}
TINY_GENERATOR = {
    "sample_rate": SR,
    "n_fft": 1024,
    "hop_length": 256,
    "n_mels": 16,
    "upsample_rates": [8, 8, 4],
    "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3], [1, 3]],
}
TINY_MPD = {"periods": (2, 3, 5, 7, 11), "channels": (4, 8, 16, 16, 16)}
TINY_MSD = {"channels": (16, 16, 32, 32, 64, 64, 64), "groups": (1, 4, 16, 16, 16, 16, 1)}


def _speecht5(normalize_before: bool, seed: int = 0) -> SpeechT5HifiGan:
    """A random SpeechT5HifiGan with PyTorch's default (not 0.01-std) init, so that outputs are far from zero."""
    torch.manual_seed(seed)
    model = SpeechT5HifiGan(SpeechT5HifiGanConfig(**TINY_SPEECHT5, normalize_before=normalize_before)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                module.reset_parameters()
                module.weight.mul_(3.0)
        model.mean.normal_()
        model.scale.uniform_(0.5, 2.0)
    return model


def _linear_mel(n_mels: int, frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """A positive magnitude mel with some entries below the 1e-5 log floor."""
    generator = torch.Generator().manual_seed(seed)
    mel = torch.exp(torch.randn(batch, n_mels, frames, generator=generator) * 3.0 - 2.0)
    mel[:, :, 0] = 1e-7
    return mel


def _reference_output(model: SpeechT5HifiGan, mel: torch.Tensor) -> torch.Tensor:
    """SpeechT5HifiGan on the documented mapping of a linear mel: natural log of clamp(1e-5), frames first."""
    with torch.no_grad():
        return model(torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2))


def _expected_generator_params(n_mels: int, initial: int, rates: list[int], kernels: list[int], resblock: int,
                               res_kernels: list[int], dilations: list[list[int]]) -> int:  # fmt: skip
    """Closed-form parameter count of a HiFi-GAN generator without weight norm (weights + biases)."""
    total = n_mels * initial * 7 + initial
    channels = initial
    for kernel in kernels:
        total += channels * (channels // 2) * kernel + channels // 2
        channels //= 2
        for res_kernel, dils in zip(res_kernels, dilations, strict=True):
            convs = len(dils) * (2 if resblock == 1 else 1)
            total += convs * (channels * channels * res_kernel + channels)
    return total + channels * 7 + 1


def _vocoder_config(name: str) -> dict:
    config = OmegaConf.create({"mel": OmegaConf.load(CONF / "mel" / "default.yaml"),
                               "representation": OmegaConf.load(CONF / "representation" / "mel.yaml"),
                               "vocoder": OmegaConf.load(CONF / "vocoder" / name)})
    return config.vocoder


# --- generator ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "kernels"), [([8, 8, 4], [16, 16, 8]), ([5, 4, 2, 2, 2], [16, 16, 8, 4, 4])], ids=["even", "audioldm"]
)
def test_generator_length_and_range(rates: list[int], kernels: list[int]) -> None:
    hop = math.prod(rates)
    torch.manual_seed(0)
    model = HiFiGAN(
        SR, 1024, hop, n_mels=16, upsample_rates=rates, upsample_kernel_sizes=kernels, upsample_initial_channel=32,
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
    )  # fmt: skip
    for frames in (1, 7):
        wav = model(_linear_mel(16, frames))
        assert wav.shape == (2, frames * hop) == (2, model.num_samples(frames))
        assert bool((wav.abs() <= 1.0).all())


def test_generator_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="multiply to 128, expected hop_length=256"):
        HiFiGAN(**{**TINY_GENERATOR, "upsample_rates": [8, 8, 2]})
    with pytest.raises(ValueError, match="kernel >= its rate"):
        HiFiGAN(**{**TINY_GENERATOR, "upsample_kernel_sizes": [16, 4, 8]})
    with pytest.raises(ValueError, match=r"n_mels=16, F\], got shape \(2, 8, 5\)"):
        HiFiGAN(**TINY_GENERATOR)(_linear_mel(8, 5))


def test_remove_weight_norm_keeps_the_output() -> None:
    torch.manual_seed(0)
    model = HiFiGAN(**TINY_GENERATOR, resblock=2).eval()
    assert any(".parametrizations.weight.original0" in k for k in model.state_dict())
    mel = _linear_mel(16, 6)
    with torch.no_grad():
        before = model(mel)
        after = model.remove_weight_norm()(mel)
    assert not any("parametrizations" in k for k in model.state_dict())
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_speecht5_folder_gives_the_same_waveform(tmp_path: Path, normalize_before: bool) -> None:
    reference = _speecht5(normalize_before)
    reference.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model = HiFiGAN.from_speecht5(tmp_path, n_fft=256).eval()
    assert (model.sample_rate, model.hop_length, model.n_mels, model.normalize_before) == (
        16000,
        10,
        8,
        normalize_before,
    )
    mel = _linear_mel(8, 9)
    expected = _reference_output(reference, mel)
    assert expected.shape == (2, 9 * 10 + 2)  # the extra samples of the odd kernel-stride gap, trimmed here
    assert float(expected.std()) > 0.05  # a real signal, not a near-zero output any model would match
    with torch.no_grad():
        ours = model(mel)
        inference = model.remove_weight_norm()(mel)
    torch.testing.assert_close(ours, expected[:, : 9 * 10], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(inference, expected[:, : 9 * 10], atol=1e-5, rtol=1e-4)


def test_speecht5_weight_norm_forms_load() -> None:
    """A SpeechT5HifiGan under parametrised weight norm, and one under the deprecated weight_g / weight_v."""
    reference = _speecht5(normalize_before=True, seed=3)
    mel = _linear_mel(8, 5)
    expected = _reference_output(reference, mel)

    parametrised = copy.deepcopy(reference)
    parametrised.apply_weight_norm()
    assert any(k.endswith("parametrizations.weight.original1") for k in parametrised.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(HiFiGAN.from_speecht5(parametrised)(mel), expected[:, :50], atol=1e-5, rtol=1e-4)

    legacy = copy.deepcopy(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for module in legacy.modules():
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                nn.utils.weight_norm(module)
    state = legacy.state_dict()
    assert any(k.endswith(".weight_g") for k in state)
    with torch.no_grad():
        model = load_speecht5_state_dict(state, legacy.config)
        torch.testing.assert_close(model(mel), expected[:, :50], atol=1e-5, rtol=1e-4)
        # the same weights folded into a generator without weight norm
        plain = HiFiGAN(n_fft=1024, **speecht5_kwargs(legacy.config)).eval().remove_weight_norm()
        plain.load_state_dict(convert_weight_norm(model.state_dict(), list(plain.state_dict())))
        torch.testing.assert_close(plain(mel), expected[:, :50], atol=1e-5, rtol=1e-4)


def test_speecht5_mismatch_is_reported() -> None:
    reference = _speecht5(normalize_before=False)
    wrong = {**reference.config.to_dict(), "model_in_dim": 12}
    with pytest.raises(ValueError, match="do not fit the config"):
        load_speecht5_state_dict(reference.state_dict(), wrong)


def test_configs_and_parameter_counts() -> None:
    """Each config instantiates against the mel representation; counts match SpeechT5HifiGan and a closed form.

    Kong et al. (2020) report 13.92M / 0.92M / 1.46M at 80 mels; counts here are without weight norm's ``g``.
    """
    paper = {"hifigan_v1.yaml": 13.92, "hifigan_v2.yaml": 0.92, "hifigan_v3.yaml": 1.46}
    for name, millions in paper.items():
        config = _vocoder_config(name)
        model = instantiate(config).remove_weight_norm()
        assert model.hop_length == 256 and model.n_mels == 64
        count = sum(p.numel() for p in model.parameters())
        resolved = OmegaConf.to_container(config, resolve=True)
        layout = {k: resolved[k] for k in (
            "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes", "resblock",
            "resblock_kernel_sizes", "resblock_dilation_sizes")}  # fmt: skip
        closed = {
            "initial": layout["upsample_initial_channel"],
            "kernels": layout["upsample_kernel_sizes"],
            "rates": layout["upsample_rates"],
            "resblock": layout["resblock"],
            "res_kernels": layout["resblock_kernel_sizes"],
            "dilations": layout["resblock_dilation_sizes"],
        }
        assert count == _expected_generator_params(64, **closed)
        if layout["resblock"] == 1:
            speecht5 = SpeechT5HifiGan(SpeechT5HifiGanConfig(
                model_in_dim=64, **{k: v for k, v in layout.items() if k != "resblock"}))  # fmt: skip
            assert count == sum(p.numel() for n, p in speecht5.named_parameters())
        at_80_mels = _expected_generator_params(80, **closed)
        assert math.floor(at_80_mels / 1e4) / 100 == millions  # the paper truncates to two decimals
    tiny = instantiate(_vocoder_config("hifigan_tiny.yaml"))
    assert sum(p.numel() for p in tiny.parameters()) < 50_000


def test_speecht5_config_instantiates(tmp_path: Path) -> None:
    _speecht5(normalize_before=False).save_pretrained(tmp_path)
    config = _vocoder_config("hifigan_speecht5.yaml")
    config.model_or_path = str(tmp_path)
    model = instantiate(config)
    assert isinstance(model, HiFiGAN) and model.hop_length == 10 and model.n_fft == 1024


def test_mel_representation_accepts_it() -> None:
    torch.manual_seed(0)
    vocoder = instantiate(_vocoder_config("hifigan_tiny.yaml"))
    representation = MelRepresentation(vocoder=vocoder)
    z = torch.randn(2, 64, 5)
    assert representation.decode(z).shape == (2, 1, 5 * 256)
    with pytest.raises(ValueError, match="hop_length: representation 160, vocoder 256"):
        MelRepresentation(hop_length=160, vocoder=vocoder)
    with pytest.raises(ValueError, match="f_max: representation 7000.0, vocoder 8000.0"):
        MelRepresentation(f_max=7000.0, vocoder=vocoder)
    with pytest.raises(ValueError, match="log_floor: representation 0.001, vocoder 1e-05"):
        MelRepresentation(log_floor=1e-3, vocoder=vocoder)


# --- discriminators ----------------------------------------------------------------------------------------------


def _ceil_div_repeat(length: int, divisor: int, times: int) -> int:
    for _ in range(times):
        length = -(-length // divisor)
    return length


@pytest.mark.parametrize("length", [1001, 1237])
def test_multi_period_discriminator_shapes(length: int) -> None:
    torch.manual_seed(0)
    logits, fmaps = MultiPeriodDiscriminator(**TINY_MPD)(torch.randn(2, 1, length))
    assert len(logits) == len(fmaps) == 5
    for period, score, maps in zip((2, 3, 5, 7, 11), logits, fmaps, strict=True):
        rows = _ceil_div_repeat(_ceil_div_repeat(length, period, 1), 3, 4)
        assert score.shape == (2, rows * period)
        assert [tuple(m.shape) for m in maps] == [
            (2, 4, _ceil_div_repeat(-(-length // period), 3, 1), period),
            (2, 8, _ceil_div_repeat(-(-length // period), 3, 2), period),
            (2, 16, _ceil_div_repeat(-(-length // period), 3, 3), period),
            (2, 16, rows, period),
            (2, 16, rows, period),
            (2, 1, rows, period),
        ]


@pytest.mark.parametrize("length", [1001, 1237])
def test_multi_scale_discriminator_shapes(length: int) -> None:
    torch.manual_seed(0)
    msd = MultiScaleDiscriminator(**TINY_MSD)
    logits, fmaps = msd(torch.randn(2, length))
    assert len(logits) == len(fmaps) == 3
    assert hasattr(msd.discriminators[0].convs[0].parametrizations.weight[0], "_u")  # spectral norm
    assert not hasattr(msd.discriminators[1].convs[0].parametrizations.weight[0], "_u")  # weight norm
    scale_length = length
    for i, (score, maps) in enumerate(zip(logits, fmaps, strict=True)):
        if i:
            scale_length = scale_length // 2 + 1  # AvgPool1d(4, 2, padding=2)
        out = _ceil_div_repeat(_ceil_div_repeat(scale_length, 2, 2), 4, 2)
        assert score.shape == (2, out)
        assert len(maps) == 8 and maps[0].shape == (2, 16, scale_length) and maps[-1].shape == (2, 1, out)


def test_multi_resolution_stft_discriminator_shapes() -> None:
    torch.manual_seed(0)
    resolutions = ((256, 32, 128), (128, 16, 64))
    length = 1001
    logits, fmaps = MultiResolutionSTFTDiscriminator(resolutions, channels=8)(torch.randn(2, 1, length))
    assert len(logits) == len(fmaps) == 2
    for (n_fft, hop, _), score, maps in zip(resolutions, logits, fmaps, strict=True):
        pad = (n_fft - hop) // 2
        frames = (length + 2 * pad - n_fft) // hop + 1
        assert maps[0].shape == (2, 8, n_fft // 2 + 1, frames)
        assert score.shape == (2, (n_fft // 2 + 1) * _ceil_div_repeat(frames, 2, 3))
        assert len(maps) == 6


def test_default_discriminators_build_and_run() -> None:
    torch.manual_seed(0)
    combined = CombinedDiscriminator([MultiPeriodDiscriminator(), MultiScaleDiscriminator()])
    with torch.no_grad():
        logits, fmaps = combined(torch.randn(1, 1, 2048))
    assert len(logits) == len(fmaps) == 8
    assert all(bool(torch.isfinite(s).all()) for s in logits)


def test_gradients_reach_every_parameter_and_the_input() -> None:
    torch.manual_seed(0)
    combined = CombinedDiscriminator([
        MultiPeriodDiscriminator(**TINY_MPD), MultiScaleDiscriminator(**TINY_MSD),
        MultiResolutionSTFTDiscriminator(((256, 32, 128),), channels=8),
    ])  # fmt: skip
    real = torch.randn(2, 1, 1111)
    fake = torch.randn(2, 1, 1111, requires_grad=True)
    real_logits, real_fmaps = combined(real)
    fake_logits, fake_fmaps = combined(fake)
    assert len(real_logits) == 9
    loss = discriminator_loss(real_logits, fake_logits) + feature_matching_loss(real_fmaps, fake_fmaps)
    loss.backward()
    for name, parameter in combined.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name
    assert fake.grad is not None and bool(fake.grad.abs().sum() > 0)


# --- losses ------------------------------------------------------------------------------------------------------


def test_least_squares_losses_on_hand_values() -> None:
    real = [torch.tensor([[1.0, 0.5]]), torch.tensor([[0.0]])]
    fake = [torch.tensor([[0.0, 0.5]]), torch.tensor([[2.0]])]
    # (0 + 0.25) / 2 + (0 + 0.25) / 2 + 1 + 4
    assert float(discriminator_loss(real, fake)) == pytest.approx(5.25)
    # (1 + 0.25) / 2 + 1
    assert float(generator_adversarial_loss(fake)) == pytest.approx(1.625)


def test_feature_matching_on_hand_values() -> None:
    real = [[torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])], [torch.tensor([3.0])]]
    fake = [[torch.tensor([0.0, 4.0], requires_grad=True), torch.tensor([[1.0]])], [torch.tensor([3.0])]]
    real[0][0].requires_grad_(True)
    loss = feature_matching_loss(real, fake)
    assert float(loss.detach()) == pytest.approx((1 + 2) / 2 + 1 + 0)
    loss.backward()
    assert real[0][0].grad is None  # the real side is a fixed target
    torch.testing.assert_close(fake[0][0].grad, torch.tensor([-0.5, 0.5]))  # d|r - f| / df = -sign(r - f), over 2


def _test_signals(length: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(length, dtype=torch.float64) / SR
    wav = 0.5 * torch.sin(2 * math.pi * 440 * t)[None].repeat(2, 1) + 0.05 * torch.randn(
        2, length, generator=generator, dtype=torch.float64
    )
    wav_hat = wav + 0.1 * torch.randn(2, length, generator=generator, dtype=torch.float64)
    wav_hat[1, :1000] = 0.0  # silence: mel bins under the log floor
    return wav_hat, wav


def test_mel_loss_matches_librosa() -> None:
    wav_hat, wav = _test_signals()
    loss = MelL1Loss(SR, n_fft=512, hop_length=128, n_mels=40, f_max=7000.0)(wav_hat, wav)

    def log_mel(x: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=x,
            sr=SR,
            n_fft=512,
            hop_length=128,
            power=1.0,
            n_mels=40,
            fmax=7000.0,
            center=True,
            pad_mode="reflect",
            htk=False,
            norm="slaney",
        )
        return np.log(np.maximum(mel, 1e-5))

    expected = np.mean(np.abs(log_mel(wav_hat.numpy()) - log_mel(wav.numpy())))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(MelL1Loss(SR, n_fft=512, hop_length=128, n_mels=40)(wav, wav)) == 0.0


def test_multi_resolution_stft_loss_matches_librosa() -> None:
    wav_hat, wav = _test_signals()
    resolutions = ((512, 50, 240), (1024, 120, 600))
    terms = MultiResolutionSTFTLoss(resolutions)(wav_hat, wav)
    convergence, log_magnitude = [], []
    for n_fft, hop, win in resolutions:

        def magnitude(x: np.ndarray, n_fft: int = n_fft, hop: int = hop, win: int = win) -> np.ndarray:
            spec = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True,
                                pad_mode="reflect")  # fmt: skip
            return np.sqrt(np.maximum(np.abs(spec) ** 2, 1e-7))

        mag, mag_hat = magnitude(wav.numpy()), magnitude(wav_hat.numpy())
        convergence.append(np.linalg.norm(mag - mag_hat) / np.linalg.norm(mag))
        log_magnitude.append(np.mean(np.abs(np.log(mag) - np.log(mag_hat))))
    assert float(terms.spectral_convergence) == pytest.approx(np.mean(convergence), rel=1e-6)
    assert float(terms.log_magnitude) == pytest.approx(np.mean(log_magnitude), rel=1e-6)
    assert float(terms.total) == pytest.approx(np.mean(convergence) + np.mean(log_magnitude), rel=1e-6)
    same = MultiResolutionSTFTLoss()(wav.float(), wav.float())
    assert float(same.total) == 0.0
    assert float(MultiResolutionSTFTLoss()(wav.float() * 0.999, wav.float()).total) > 0.0


# --- training behaviour ------------------------------------------------------------------------------------------


def _sine_batch(length: int = 16 * 256) -> torch.Tensor:
    t = torch.arange(length) / SR
    return torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in (220.0, 660.0)])


def test_mel_loss_trains_the_generator() -> None:
    torch.manual_seed(0)
    generator = HiFiGAN(**TINY_GENERATOR)
    mel_loss = MelL1Loss(SR, n_fft=1024, hop_length=256, n_mels=16)
    wav = _sine_batch()
    mel = generator.mel(wav)
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(20):
        loss = mel_loss(generator(mel)[..., : wav.shape[-1]], wav)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_one_adversarial_step_updates_both_players() -> None:
    """The training step written in audiodiff.vocoders.losses, once: finite losses, gradients everywhere, and the
    discriminator, trained alone against fixed fakes, separates them (its loss falls)."""
    torch.manual_seed(0)
    generator = HiFiGAN(**TINY_GENERATOR)
    discriminator = CombinedDiscriminator([MultiPeriodDiscriminator(**TINY_MPD), MultiScaleDiscriminator(**TINY_MSD)])
    mel_loss = MelL1Loss(SR, n_fft=1024, hop_length=256, n_mels=16)
    opt_g = torch.optim.AdamW(generator.parameters(), lr=2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=2e-4, betas=(0.8, 0.99))
    wav = _sine_batch()[:, None]
    wav_hat = generator(generator.mel(wav[:, 0]))[:, None, : wav.shape[-1]]

    d_losses = []
    for _ in range(8):
        real, _ = discriminator(wav)
        fake, _ = discriminator(wav_hat.detach())
        loss_d = discriminator_loss(real, fake)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        d_losses.append(float(loss_d.detach()))
    assert d_losses[-1] < d_losses[0]

    real, real_fmaps = discriminator(wav)
    fake, fake_fmaps = discriminator(wav_hat)
    loss_g = (generator_adversarial_loss(fake) + 2 * feature_matching_loss(real_fmaps, fake_fmaps)
              + 45 * mel_loss(wav_hat, wav))  # fmt: skip
    opt_g.zero_grad()
    loss_g.backward()
    assert bool(torch.isfinite(loss_g))
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), name
    before = generator.conv_post.parametrizations.weight.original1.detach().clone()
    opt_g.step()
    assert not torch.equal(before, generator.conv_post.parametrizations.weight.original1)


def test_folding_weight_norm_under_no_grad_keeps_parameters() -> None:
    vocoder = instantiate(_vocoder_config("hifigan_tiny.yaml"))
    count = len(list(vocoder.parameters()))
    with torch.no_grad():
        vocoder.remove_weight_norm()
    assert not list(vocoder.buffers()) or all("weight" not in n for n, _ in vocoder.named_buffers())
    assert len(list(vocoder.parameters())) < count  # g and v became one weight per layer, still parameters
    assert all(p.requires_grad for p in vocoder.parameters())
