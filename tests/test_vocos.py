"""Vocos generator: size against the paper, the inverse-STFT head's alignment, learnability, and its vocoder stage
(train with the STFT loss and discriminators, export, load back, carry into a diffusion export)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.evaluation.vocoder_quality import metric_mel_loss
from audiodiff.export import load_checkpoint, self_contained
from audiodiff.training.vocoder.run import train_vocoder
from audiodiff.vocoders.griffinlim import GriffinLimVocoder, mel_to_linear, window_lobe
from audiodiff.vocoders.hifigan import HiFiGAN
from audiodiff.vocoders.losses import anti_wrap, spectrum_loss
from audiodiff.vocoders.trained import from_export, inference_config
from audiodiff.vocoders.vocos import Vocos

SR, N_FFT, HOP = 16000, 1024, 256


def tiny(**kwargs) -> Vocos:
    return Vocos(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, dim=16, intermediate_dim=32, num_layers=2, **kwargs)


def test_paper_size() -> None:
    # Siuzdak 2023, Table 1: 13.5 M parameters (100 mel bands, 512 wide, 8 ConvNeXt blocks, n_fft 1024).
    vocos = Vocos(24000, 1024, 256, n_mels=100)
    assert round(sum(p.numel() for p in vocos.parameters()) / 1e6, 1) == 13.5


def test_output_length_and_finite_values() -> None:
    vocos = tiny()
    mel = vocos.mel(0.1 * torch.randn(2, 5000))
    assert mel.shape == (2, 64, 5000 // HOP + 1)
    out = vocos(mel)
    assert out.shape == (2, mel.shape[-1] * HOP) and out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"expected a linear mel \[B, n_mels=64, F\], got shape \(2, 80, 10\)"):
        vocos(torch.ones(2, 80, 10))


def test_the_head_inverts_a_centred_stft_sample_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the exact STFT of a clip, the generator returns the clip: frame f sits at sample f * hop_length, as in
    the mel the representation computes, so the vocoder's output lines up with its input."""
    vocos = tiny()
    wav = 0.3 * torch.sin(torch.arange(HOP * 40) * (2 * torch.pi * 330 / SR))[None]
    spectrum = torch.stft(wav, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, return_complex=True)
    monkeypatch.setattr(vocos, "spectrum", lambda mel: spectrum)
    out = vocos(vocos.mel(wav))
    assert out.shape == (1, (wav.shape[-1] // HOP + 1) * HOP)
    torch.testing.assert_close(out[:, : wav.shape[-1]], wav, atol=1e-5, rtol=0)


def test_it_learns_a_clip_from_its_mel() -> None:
    torch.manual_seed(0)
    vocos = Vocos(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, dim=32, intermediate_dim=64, num_layers=2)
    loss = metric_mel_loss(vocos.mel)
    t = torch.arange(SR // 2) / SR
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.sin(2 * torch.pi * 1250 * t))[None]
    wav = wav + 0.01 * torch.randn_like(wav)
    mel = vocos.mel(wav)
    optimizer = torch.optim.AdamW(vocos.parameters(), lr=3e-3)
    values = []
    for _ in range(200):
        value = loss(vocos(mel)[..., : wav.shape[-1]], wav)
        values.append(value.item())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert values[-1] < 0.15 * values[0]  # log-mel L1 in nats: about 1.6 at the start


def test_the_magnitude_prior_starts_from_the_mel_inverse_griffin_lim_uses() -> None:
    """With ``prior_iters`` and a zero residual, the magnitude is the Richardson-Lucy inverse of the mel (the one
    Griffin-Lim starts from), which maps back onto the mel."""
    vocos = tiny(prior_iters=20)
    head = vocos.head
    with torch.no_grad():
        head.weight[: N_FFT // 2 + 1].zero_()
        head.bias[: N_FFT // 2 + 1].zero_()
    t = torch.arange(SR // 2) / SR
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.sin(2 * torch.pi * 1250 * t))[None]
    mel = vocos.mel(wav)
    magnitude = vocos.spectrum(mel).abs()
    reference = mel_to_linear(mel, vocos.mel.filterbank, n_iter=20, lobe=window_lobe(vocos.mel.window, N_FFT, 1.0))
    torch.testing.assert_close(magnitude, reference.clamp_min(vocos.log_floor), rtol=1e-4, atol=1e-6)
    remapped = vocos.mel.filterbank @ magnitude
    loud = mel > 0.1 * mel.amax()
    assert ((remapped - mel).abs()[loud] / mel[loud]).median() < 0.05
    assert Vocos(**{k: v for k, v in vocos.export_config().items() if k != "_target_"}).prior_iters == 20
    with pytest.raises(ValueError, match="prior_iters must be >= 0, got -1"):
        tiny(prior_iters=-1)


def test_the_prior_learns_a_clip_in_fewer_steps_than_the_plain_head() -> None:
    t = torch.arange(SR // 2) / SR
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.sin(2 * torch.pi * 1250 * t))[None]
    final = {}
    for prior_iters in (0, 20):
        torch.manual_seed(0)
        vocos = Vocos(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, dim=32, intermediate_dim=64, num_layers=2,
                      prior_iters=prior_iters)
        loss, mel = metric_mel_loss(vocos.mel), vocos.mel(wav)
        optimizer = torch.optim.AdamW(vocos.parameters(), lr=3e-3)
        for _ in range(40):
            value = loss(vocos(mel)[..., : wav.shape[-1]], wav)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        final[prior_iters] = value.item()
    assert final[20] < 0.5 * final[0]


def test_zero_phase_advances_turn_each_bin_at_its_centre_frequency() -> None:
    vocos = tiny(phase_increments=True)
    frames = torch.arange(300, dtype=torch.float64)
    bins = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
    expected = torch.polar(torch.ones(1, N_FFT // 2 + 1, 300, dtype=torch.float64),
                           2 * torch.pi * bins * HOP / N_FFT * (frames + 1))
    phase = vocos.integrate_phase(torch.zeros(1, N_FFT // 2 + 1, 300))
    assert phase.dtype == torch.float32 and 0 <= phase.min() and phase.max() < 2 * torch.pi
    torch.testing.assert_close(torch.polar(torch.ones_like(phase), phase).to(expected.dtype), expected, atol=1e-4,
                               rtol=0)
    assert vocos.head.out_features == 3 * (N_FFT // 2 + 1)


def test_phase_increments_carry_steady_tones_beyond_the_training_crops() -> None:
    """Trained on 32-frame crops, absolute phases cannot keep a steady tone's phase advancing far from the edges of
    a 250-frame clip; integrated advances can."""
    def tones(frames: int, freqs: list[float]) -> torch.Tensor:
        t = torch.arange(HOP * frames) / SR
        return torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) + 0.1 * torch.sin(5.4 * torch.pi * f * t)
                            for f in freqs])
    train, test = tones(32, torch.linspace(200, 900, 32).tolist()), tones(250, [333.0, 517.0, 701.0])
    long_clip_loss = {}
    for increments in (False, True):
        torch.manual_seed(0)
        vocos = Vocos(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, dim=32, intermediate_dim=64, num_layers=3,
                      prior_iters=10, phase_increments=increments)
        loss = metric_mel_loss(vocos.mel)
        optimizer = torch.optim.AdamW(vocos.parameters(), lr=2e-3)
        for _ in range(150):
            wav = train[torch.randint(0, len(train), (8,))]
            value = loss(vocos(vocos.mel(wav))[..., : wav.shape[-1]], wav)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        with torch.no_grad():
            long_clip_loss[increments] = loss(vocos(vocos.mel(test))[..., : test.shape[-1]], test).item()
    assert long_clip_loss[True] < 0.75 * long_clip_loss[False]


def test_with_griffin_lim_phase_and_a_zero_residual_it_is_the_griffin_lim_vocoder() -> None:
    """``griffin_lim_iters``: the head predicts magnitudes only, and with a zero residual on the mel inverse the
    vocoder is :class:`GriffinLimVocoder` (same inverse, same iterations; Griffin-Lim's momentum amplifies float
    rounding, so the waveforms are compared through their mel error)."""
    vocos = tiny(prior_iters=100, griffin_lim_iters=16)
    assert vocos.head.out_features == N_FFT // 2 + 1
    with torch.no_grad():
        vocos.head.weight.zero_()
        vocos.head.bias.zero_()
    t = torch.arange(SR // 2) / SR
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.sin(2 * torch.pi * 1250 * t))[None]
    mel = vocos.mel(wav)
    reference = GriffinLimVocoder(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, power=1.0, n_iter=16, inverse_iter=100)
    inverse = mel_to_linear(mel, reference.mel.filterbank, n_iter=100, lobe=reference.lobe)
    magnitude = vocos.predict(mel)[0].exp()
    torch.testing.assert_close(magnitude, inverse.clamp_min(vocos.log_floor), rtol=1e-4, atol=1e-6)
    loss = metric_mel_loss(vocos.mel)
    ours = float(loss(vocos(mel)[..., : wav.shape[-1]], wav))
    theirs = float(loss(reference(mel, length=wav.shape[-1]), wav))
    assert ours == pytest.approx(theirs, rel=0.05)
    assert ours < 0.5 * float(loss(torch.zeros_like(wav) + 1e-4 * torch.randn_like(wav), wav))
    rebuilt = Vocos(**{k: v for k, v in vocos.export_config().items() if k != "_target_"})
    assert rebuilt.griffin_lim_iters == 16 and rebuilt.head.out_features == N_FFT // 2 + 1


def test_griffin_lim_phase_has_no_spectrum_and_refuses_predicted_phases() -> None:
    from audiodiff.training.vocoder.task import VocoderTask

    vocos = tiny(griffin_lim_iters=8)
    with pytest.raises(ValueError, match="predicts no phase, hence no spectrum"):
        vocos.spectrum(vocos.mel(0.1 * torch.randn(1, HOP * 20)))
    with pytest.raises(ValueError, match="a Vocos with griffin_lim_iters > 0 leaves the phase to Griffin-Lim"):
        VocoderTask(vocos, torch.nn.Identity(), torch.optim.AdamW, lambda_spectrum=1.0)
    with pytest.raises(ValueError, match="phase_increments predicts a phase that griffin_lim_iters > 0"):
        tiny(griffin_lim_iters=8, phase_increments=True)
    with pytest.raises(ValueError, match="griffin_lim_iters must be >= 0"):
        tiny(griffin_lim_iters=-1)


def test_training_through_griffin_lim_improves_its_output() -> None:
    """The vocoder stage's step for a Griffin-Lim-phase generator: the output's mel loss, backpropagated through
    the last Griffin-Lim step, fits the magnitude; from a zero residual (Griffin-Lim itself) it gets better."""
    from audiodiff.training.vocoder.task import VocoderTask

    torch.manual_seed(0)
    vocos = Vocos(SR, N_FFT, HOP, n_mels=64, f_max=8000.0, dim=32, intermediate_dim=64, num_layers=2,
                  prior_iters=20, griffin_lim_iters=8)
    task = VocoderTask(vocos, torch.nn.Identity(), torch.optim.AdamW)
    t = torch.arange(SR // 2) / SR
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))
           + 0.1 * torch.sin(2 * torch.pi * 1250 * t))[None]
    with torch.no_grad():
        before = float(task.mel_loss(task.reconstruct(wav), wav))
    optimizer = torch.optim.AdamW(vocos.parameters(), lr=3e-4)
    for _ in range(60):
        value = task.mel_loss(task.reconstruct(wav), wav)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(task.mel_loss(task.reconstruct(wav), wav))
    assert after < 0.85 * before  # measured 0.24 against 0.32


def test_spectrum_loss_is_zero_for_the_clip_and_ignores_whole_turns_and_silent_bins() -> None:
    torch.manual_seed(0)
    spectrum = torch.polar(torch.rand(2, 9, 7) + 0.1, 6 * torch.rand(2, 9, 7) - 3)
    terms = spectrum_loss(spectrum, spectrum)
    assert float(terms.log_magnitude) == 0 and float(terms.phase) < 1e-5
    turned = torch.polar(spectrum.abs(), spectrum.angle() + 2 * torch.pi)           # the same complex numbers
    assert float(spectrum_loss(turned, spectrum).phase) < 1e-4
    silent = spectrum.clone()
    silent[:, 4:] = 0                                                               # no sound above bin 4
    scrambled = torch.polar(silent.abs(), torch.where(torch.arange(9)[:, None] >= 4, 1.7, silent.angle()))
    assert float(spectrum_loss(scrambled, silent).phase) < 1e-5                    # their phase does not count
    shifted = torch.polar(spectrum.abs(), spectrum.angle() + 0.5)                  # a constant phase offset
    assert float(spectrum_loss(shifted, spectrum).phase) == pytest.approx(0.5, abs=1e-4)  # only the phase term
    assert float(anti_wrap(torch.tensor(2 * torch.pi - 0.1))) == pytest.approx(0.1, abs=1e-6)


def test_spectrum_losses_need_a_generator_that_predicts_one() -> None:
    from audiodiff.training.vocoder.task import VocoderTask

    hifigan = HiFiGAN(SR, N_FFT, HOP, upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
                      upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]])
    with pytest.raises(ValueError, match="lambda_spectrum needs a generator that predicts an STFT"):
        VocoderTask(hifigan, torch.nn.Identity(), torch.optim.AdamW, lambda_spectrum=1.0)


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    cfg = compose_config("train", [
        "stage=vocoder", "vocoder=vocos_tiny", f"data.root={root}", f"run_dir={tmp_path_factory.mktemp('run')}",
        "data.num_workers=0", "+trainer.enable_model_summary=false", "stage.data.segment_seconds=0.5",
        "stage.data.batch_size=2", "stage.trainer.max_steps=3", "stage.trainer.val_check_interval=2",
        "stage.trainer.limit_val_batches=1", "stage.task.adversarial_start=1", "stage.task.lambda_stft=1.0",
        "stage.task.lambda_spectrum=1.0",
        "stage.discriminators=[mpd,mrd]", "stage.discriminator_choices.mpd.channels=[4,8,16,16,16]",
        "stage.discriminator_choices.mrd.channels=4"])
    return train_vocoder(cfg)


def test_stage_trains_exports_and_loads_back(stage_run: Path) -> None:
    ckpt = load_checkpoint(stage_run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["audiodiff"]["generator"]["_target_"] == "audiodiff.vocoders.vocos.Vocos"
    trained = Vocos(**{k: v for k, v in ckpt["audiodiff"]["generator"].items() if k != "_target_"})
    trained.load_state_dict({k[len("generator."):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith("generator.")})
    vocoder = from_export(stage_run / "export")
    assert isinstance(vocoder, Vocos) and not vocoder.training and vocoder.dim == 16
    mel = vocoder.mel(0.2 * torch.randn(1, 4000))
    with torch.no_grad():
        torch.testing.assert_close(vocoder(mel), trained.eval()(mel))
    with pytest.raises(ValueError, match="holds a Vocos, not a HiFiGAN"):
        HiFiGAN.from_export(stage_run / "export")


def test_a_griffin_lim_phase_stage_trains_through_griffin_lim_and_exports(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    cfg = compose_config("train", [
        "stage=vocoder", "vocoder=vocos_tiny", "vocoder.prior_iters=5", "vocoder.griffin_lim_iters=4",
        f"data.root={root}", f"run_dir={tmp_path / 'run'}", "data.num_workers=0", "+trainer.enable_model_summary=false",
        "stage.data.segment_seconds=0.5", "stage.data.batch_size=2", "stage.trainer.max_steps=2",
        "stage.trainer.val_check_interval=2", "stage.trainer.limit_val_batches=1",
        "stage.task.adversarial_start=100", "stage.task.lambda_stft=1.0"])
    run = train_vocoder(cfg)
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2 and ckpt["audiodiff"]["generator"]["griffin_lim_iters"] == 4
    head = ckpt["state_dict"]["generator.head.weight"]
    assert head.shape[0] == N_FFT // 2 + 1 and float(head.abs().sum()) > 0  # trained away from the zero residual
    vocoder = from_export(run / "export")
    assert vocoder.griffin_lim_iters == 4 and vocoder.prior_iters == 5
    mel = vocoder.mel(0.2 * torch.randn(1, 4000))
    with torch.no_grad():
        out = vocoder(mel)
    assert out.shape == (1, mel.shape[-1] * HOP) and bool(torch.isfinite(out).all())


def test_a_diffusion_export_carries_the_architecture_not_the_folder(stage_run: Path) -> None:
    folder = str(stage_run / "export")
    node = inference_config(folder)
    assert node["_target_"] == "audiodiff.vocoders.vocos.Vocos.for_inference" and node["num_layers"] == 2
    model_cfg = {"representation": {"_target_": "audiodiff.representations.mel.MelRepresentation"},
                 "vocoder": {"_target_": "audiodiff.vocoders.trained.from_export", "folder": folder}}
    assert self_contained(model_cfg)["vocoder"] == node


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # cuDNN convolutions default to TF32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    vocos = tiny(prior_iters=10, phase_increments=True)
    mel = vocos.mel(0.1 * torch.randn(2, HOP * 40))
    cpu = vocos(mel)
    gpu = vocos.cuda()(mel.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
