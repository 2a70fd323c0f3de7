"""LightningModule that trains a vocoder generator (HiFi-GAN, Vocos) against waveform discriminators (Kong, Kim &
Bae 2020).

One training step on a batch of waveforms ``wav [B, T]`` (the step written out in :mod:`audiodiff.vocoders.losses`):

    wav_hat = G(G.mel(wav))[..., :T]
    L_D = sum_k mean((1 - D_k(wav))^2) + mean(D_k(wav_hat.detach())^2)                  -> step D
    L_G = sum_k mean((1 - D_k(wav_hat))^2) + lambda_fm * L_fm + lambda_mel * L_mel        -> step G

with least-squares GAN losses (Mao et al. 2017), feature matching ``L_fm`` (weight 2) and the full-band log-mel L1
``L_mel`` (weight 45). Before ``adversarial_start`` steps only ``lambda_mel * L_mel`` trains the generator and the
discriminator is neither run nor stepped: a mel-only warm-up that gives the discriminator plausible fakes from its
first step, and spends a small CPU budget on the cheapest part of the objective. Both players use AdamW with
HiFi-GAN's betas (0.8, 0.99) and an exponential learning-rate decay (0.999 per epoch in the paper).

Steps count batches (generator steps), during warm-up and after alike: see :mod:`audiodiff.training.gan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from audiodiff import __version__
from audiodiff.evaluation.vocoder_quality import metric_mel_loss, reconstruction_errors
from audiodiff.training.gan import GanTask
from audiodiff.vocoders.losses import MultiResolutionSTFTLoss, spectrum_loss

log = logging.getLogger(__name__)

def generator_config(generator: nn.Module) -> dict[str, Any]:
    """The constructor arguments (with ``_target_``) that rebuild a trainable vocoder: its ``export_config()``."""
    return generator.export_config()


class VocoderTask(GanTask):
    """Trains a vocoder generator (:data:`audiodiff.vocoders.trained.TRAINABLE`) with a GAN objective on
    ``batch["wav"] [B, 1, T]``.

    Args:
        generator: a HiFi-GAN or Vocos; it computes its own input mel from the waveform (``generator.mel``).
        discriminator: maps ``wav [B, 1, T]`` to ``(logits, feature maps)`` lists, e.g. a
            :class:`~audiodiff.adversarial.discriminators.CombinedDiscriminator` of MPD and MSD.
        optimizer: partial optimizer constructor (Hydra ``_partial_: true``), called once per player with its
            parameters (HiFi-GAN: AdamW, lr 2e-4, betas (0.8, 0.99), weight decay 0.01).
        lr_decay: factor of the exponential learning-rate decay of both players (HiFi-GAN: 0.999).
        lr_decay_every: steps between decays; ``None`` decays at the end of every training epoch, as HiFi-GAN.
        lambda_fm: weight of the feature-matching loss (HiFi-GAN: 2).
        lambda_mel: weight of the mel L1 loss (HiFi-GAN: 45).
        lambda_stft: weight of the multi-resolution STFT loss (spectral convergence + log magnitude at three
            resolutions; Parallel WaveGAN's auxiliary loss); 0 leaves it out, as HiFi-GAN and Vocos do.
        lambda_spectrum: for a generator that predicts an STFT (``generator.spectrum(mel)``, e.g. Vocos), weight of
            the L1 between its log magnitudes and the clip's, and of APNet's phase losses
            (:func:`~audiodiff.vocoders.losses.spectrum_loss`): direct targets that train the spectrum in far fewer
            steps than the waveform losses alone; 0 leaves them out.
        adversarial_start: steps of mel-only generator training before the discriminator comes in (0: from the
            first step, as HiFi-GAN).
        grad_clip: maximum global 2-norm of each player's gradient, ``None`` for no clipping (HiFi-GAN does not clip).
        run_config: the resolved run configuration, embedded in every checkpoint with the package version.

    Logged: ``train/loss_g``, ``train/mel_l1`` (the unweighted ``L_mel``), ``train/lr``, and once the discriminator
    is on ``train/loss_d``, ``train/adv``, ``train/fm``; ``val/mel_l1`` and ``val/stft_distance``
    (:func:`audiodiff.evaluation.vocoder_quality.reconstruction_errors`, averaged over ranks), and the first validation
    clip's reconstruction as TensorBoard audio.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 lr_decay: float = 0.999, lr_decay_every: int | None = None, lambda_fm: float = 2.0,
                 lambda_mel: float = 45.0, lambda_stft: float = 0.0, lambda_spectrum: float = 0.0,
                 adversarial_start: int | None = 0, grad_clip: float | None = None,
                 run_config: dict[str, Any] | None = None) -> None:
        super().__init__(discriminator, optimizer, lr_decay, lr_decay_every, adversarial_start, grad_clip, run_config)
        if lambda_stft < 0 or lambda_spectrum < 0:
            raise ValueError(f"VocoderTask: lambda_stft and lambda_spectrum must be >= 0, got {lambda_stft}, "
                             f"{lambda_spectrum}")
        self.generator = generator
        self.lambda_fm = lambda_fm
        self.lambda_mel = lambda_mel
        self.lambda_stft = lambda_stft
        self.lambda_spectrum = lambda_spectrum
        if lambda_spectrum and (not hasattr(generator, "spectrum") or getattr(generator, "griffin_lim_iters", 0)):
            raise ValueError(f"VocoderTask: lambda_spectrum needs a generator that predicts an STFT (Vocos); "
                             f"{type(generator).__name__} does not (a Vocos with griffin_lim_iters > 0 leaves the "
                             "phase to Griffin-Lim)")
        self.mel_loss = metric_mel_loss(generator.mel, generator.log_floor)
        self.stft_metric = MultiResolutionSTFTLoss()

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return self.generator.parameters()

    # ---- steps --------------------------------------------------------------------------------------------
    def _mono(self, wav: Tensor) -> Tensor:
        """``wav [B, C, T]`` → ``[B · C, T]``: the vocoder is mono (the mel representation decodes each channel on
        its own), so every channel of multichannel audio is a training clip of its own."""
        if wav.ndim != 3:
            raise ValueError(f"VocoderTask: expected waveforms [B, C, T], got shape {tuple(wav.shape)}")
        return wav.reshape(-1, wav.shape[-1])

    def reconstruct(self, wav: Tensor) -> Tensor:
        """``wav [B, T]`` -> the generator's reconstruction from its mel, ``[B, T]`` in float32 (under mixed precision
        the generator computes in bf16/fp16; the STFTs of the losses and metrics need float32)."""
        with torch.no_grad():
            mel = self.generator.mel(wav.float())
        return self.generator(mel)[..., : wav.shape[-1]].float()

    def reconstruct_spectrum(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """For a generator that predicts an STFT: ``wav [B, T]`` -> (its reconstruction ``[B, T]``, its predicted
        spectrum ``[B, n_fft // 2 + 1, F]``), from one forward pass."""
        with torch.no_grad():
            mel = self.generator.mel(wav.float())
        spectrum = self.generator.spectrum(mel)
        return self.generator.inverse(spectrum, mel.shape[-1])[..., : wav.shape[-1]].float(), spectrum

    def clip_spectrum(self, wav: Tensor) -> Tensor:
        """``wav [B, T]`` -> its STFT as the generator's (centred Hann frames), ``[B, n_fft // 2 + 1, F]``."""
        g = self.generator
        window = torch.hann_window(g.n_fft, device=wav.device)
        return torch.stft(wav.float(), g.n_fft, g.hop_length, window=window, center=True, return_complex=True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        wav = self._mono(batch["wav"])
        if self.lambda_spectrum:
            wav_hat, spectrum_hat = self.reconstruct_spectrum(wav)
        else:
            wav_hat = self.reconstruct(wav)
        real_wav, fake_wav = wav[:, None], wav_hat[:, None]
        adversarial = self.adversarial
        logs: dict[str, Tensor | float] = {}

        if adversarial:
            logs["train/loss_d"] = self.discriminator_step(opt_d, real_wav, fake_wav)

        with self.toggled_optimizer(opt_g):  # the discriminator's weights need no gradients here
            loss_mel = self.mel_loss(wav_hat, wav)
            loss_g = self.lambda_mel * loss_mel
            if self.lambda_stft:
                terms = self.stft_metric(wav_hat, wav)
                loss_stft = terms.spectral_convergence + terms.log_magnitude
                loss_g = loss_g + self.lambda_stft * loss_stft
                logs["train/stft"] = loss_stft.detach()
            if self.lambda_spectrum:
                spectrum = spectrum_loss(spectrum_hat, self.clip_spectrum(wav))
                loss_g = loss_g + self.lambda_spectrum * (spectrum.log_magnitude + spectrum.phase)
                logs.update({"train/log_magnitude": spectrum.log_magnitude.detach(),
                             "train/phase": spectrum.phase.detach()})
            if adversarial:
                loss_adv, loss_fm = self.adversarial_terms(real_wav, fake_wav)
                loss_g = loss_g + loss_adv + self.lambda_fm * loss_fm
                logs.update({"train/adv": loss_adv.detach(), "train/fm": loss_fm.detach()})
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            self.clip(opt_g)
            opt_g.step()  # global_step counts this step from here on

        logs.update({"train/loss_g": loss_g.detach(), "train/lr": float(opt_g.param_groups[0]["lr"])})
        self.log("train/mel_l1", loss_mel.detach(), prog_bar=True, batch_size=wav.shape[0])
        self.log_dict(logs, batch_size=wav.shape[0])
        self.decay_lr_on_schedule()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Reconstruction errors of held-out clips, averaged over clips and ranks."""
        wav = self._mono(batch["wav"])
        wav_hat = self.reconstruct(wav)
        errors = reconstruction_errors(wav_hat, wav, self.mel_loss, self.stft_metric)
        self.log("val/mel_l1", errors["mel_l1"], prog_bar=True, batch_size=wav.shape[0], sync_dist=True)
        self.log("val/stft_distance", errors["stft_distance"], batch_size=wav.shape[0], sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero and isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_audio("val/reconstruction", wav_hat[0].float().clamp(-1, 1).cpu(),
                                             self.global_step, sample_rate=self.generator.sample_rate)

    # ---- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["audiodiff"] = {"version": __version__, "config": self.run_config,
                                   "generator": generator_config(self.generator)}
