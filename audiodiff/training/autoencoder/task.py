"""LightningModule that trains a mel VAE or a waveform VAE (audiodiff.autoencoders) on batches of waveforms.

Mel VAE, on the normalised log-mel x [B, n_mels, L · r] of `wav` (silence-padded to a multiple of r, see
:meth:`~audiodiff.autoencoders.mel_vae.MelVAE.pad_mel`), with q = encoder(x) and z ~ q (reparameterised):

    L = mean |x̂ − x| · std_band + kl_weight · KL(q || N(0, I)),   x̂ = decoder(z)

the first term being the L1 distance of log-mels in nats (the representation's log-mel units), over every frame, the
padding included, so that decoding a whole latent never leaves untrained frames past the clip.

Waveform VAE (Stable Audio Open's Oobleck recipe, Evans et al. 2024; DAC, Kumar et al. 2023), with ŵ = decoder(z):

    L_G = lambda_stft · MR-STFT(ŵ, w) + lambda_mel · mel L1(ŵ, w) + kl_weight · KL
          [+ lambda_adv · sum_k mean((1 − D_k(ŵ))²) + lambda_fm · L_fm   once global_step >= adversarial_start]
    L_D = sum_k mean((1 − D_k(w))²) + mean(D_k(ŵ.detach())²)

with the multi-resolution STFT loss of Parallel WaveGAN (spectral convergence + log magnitude), the full-band log-mel
L1 of HiFi-GAN, least-squares GAN losses and feature matching (audiodiff.vocoders.losses). Before
`adversarial_start` the discriminator is neither run nor stepped.

Both use manual optimization with an exponential learning-rate decay, as the vocoder stage
(:mod:`audiodiff.training.gan`): `trainer.max_steps`, checkpoint intervals, `adversarial_start` and
`lr_decay_every` count batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from audiodiff import __version__
from audiodiff.autoencoders.base import VariationalAutoencoder
from audiodiff.autoencoders.mel_vae import MelVAE
from audiodiff.evaluation.vocoder_quality import fit_length, reconstruction_errors, waveform_mel_loss
from audiodiff.representations.mel import check_vocoder
from audiodiff.training.gan import GanTask
from audiodiff.vocoders.losses import MultiResolutionSTFTLoss

log = logging.getLogger(__name__)


class AutoencoderTask(GanTask):
    """Trains a :class:`~audiodiff.autoencoders.mel_vae.MelVAE` or
    :class:`~audiodiff.autoencoders.waveform_vae.WaveformVAE` on `batch["wav"]` [B, 1, T].

    Args:
        autoencoder: the VAE.
        discriminator: maps wav [B, 1, T] to (logits, feature maps) lists (a CombinedDiscriminator); a waveform VAE's
            adversary, None for a mel VAE (which trains without).
        optimizer: partial optimizer constructor (Hydra `_partial_: true`), called once per player.
        vocoder: a mel VAE's vocoder for validation only (its decoded log-mels voiced and compared with the clips as
            waveforms), held outside the module's state; None skips the waveform metrics of a mel VAE.
        lr_decay, lr_decay_every: exponential decay factor of the learning rates, and steps between decays (None: once
            per training epoch).
        kl_weight: weight of the KL term (nats per latent frame); Stable Audio Open uses 1e-4.
        lambda_stft, lambda_mel: weights of the waveform VAE's MR-STFT and mel L1 losses.
        lambda_adv, lambda_fm: weights of its adversarial and feature-matching losses (Stable Audio Open: 0.1, 5).
        adversarial_start: steps of reconstruction-only training before the discriminator comes in.
        grad_clip: maximum global 2-norm of each player's gradient, None for no clipping.
        stats_batches: training batches used once, before the first step, to fit a mel VAE's log-mel statistics.
        run_config: the resolved run configuration, embedded in every checkpoint with the package version.

    Logged: `train/loss`, `train/recon` (mel VAE: log-mel L1 in nats; waveform VAE: MR-STFT + mel terms
    unweighted sum), `train/kl`, `train/lr`; a waveform VAE also `train/stft`, `train/mel_l1` and, once the
    discriminator is on, `train/loss_d`, `train/adv`, `train/fm`. Validation, from the posterior mean (the
    representation's latent): `val/kl`, `val/stft_distance` and `val/mel_l1`
    (:func:`audiodiff.evaluation.vocoder_quality.reconstruction_errors` against the clips, with
    :func:`~audiodiff.evaluation.vocoder_quality.waveform_mel_loss`;
    for a mel VAE through the vocoder), a mel VAE's `val/log_mel_l1` (its own log-mel, nats), and the first clip's
    reconstruction as TensorBoard audio.
    """

    def __init__(self, autoencoder: VariationalAutoencoder, discriminator: nn.Module | None,
                 optimizer: Callable[..., torch.optim.Optimizer], vocoder: nn.Module | None = None,
                 lr_decay: float = 0.999, lr_decay_every: int | None = None, kl_weight: float = 1e-4,
                 lambda_stft: float = 1.0, lambda_mel: float = 1.0, lambda_adv: float = 0.1, lambda_fm: float = 5.0,
                 adversarial_start: int | None = 0, grad_clip: float | None = None, stats_batches: int = 8,
                 run_config: dict[str, Any] | None = None) -> None:
        is_mel = isinstance(autoencoder, MelVAE)
        if is_mel and discriminator is not None:
            raise ValueError("AutoencoderTask: a mel VAE trains without a discriminator (pass None)")
        if not is_mel and discriminator is None:
            raise ValueError(f"AutoencoderTask: a {autoencoder.kind} needs a discriminator")
        if not is_mel and vocoder is not None:
            raise ValueError(f"AutoencoderTask: a {autoencoder.kind} decodes waveforms itself; the vocoder must be "
                             "None")
        if is_mel and vocoder is not None:
            check_vocoder(vocoder, autoencoder.mel.mel, autoencoder.log_floor)
        if min(kl_weight, lambda_stft, lambda_mel, lambda_adv, lambda_fm) < 0:
            raise ValueError("AutoencoderTask: loss weights must be >= 0, got "
                             f"{kl_weight=}, {lambda_stft=}, {lambda_mel=}, {lambda_adv=}, {lambda_fm=}")
        if stats_batches < 1:
            raise ValueError(f"AutoencoderTask: stats_batches must be >= 1, got {stats_batches}")
        super().__init__(discriminator, optimizer, lr_decay, lr_decay_every, adversarial_start, grad_clip, run_config)
        self.autoencoder = autoencoder
        object.__setattr__(self, "_vocoder", vocoder)  # validation only: kept out of checkpoints and parameters
        self.kl_weight = kl_weight
        self.lambda_stft = lambda_stft
        self.lambda_mel = lambda_mel
        self.lambda_adv = lambda_adv
        self.lambda_fm = lambda_fm
        self.stats_batches = stats_batches
        self.mel_loss = waveform_mel_loss(autoencoder.sample_rate)
        self.stft_loss = MultiResolutionSTFTLoss()

    @property
    def is_mel(self) -> bool:
        return isinstance(self.autoencoder, MelVAE)

    # ---- set-up ---------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Fit a mel VAE's log-mel statistics on the first `stats_batches` training batches (a resumed run has them
        from its checkpoint)."""
        if self.autoencoder.is_fitted:
            return
        loader = self.trainer.datamodule.train_dataloader()
        wavs = []
        for i, batch in enumerate(loader):
            if i >= self.stats_batches:
                break
            wavs.append(self._mono(batch["wav"].to(self.device)))
        self.autoencoder.fit_input_statistics(wavs)
        log.info("fitted the autoencoder's input statistics on %d batches", len(wavs))

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return self.autoencoder.parameters()

    # ---- steps ----------------------------------------------------------------------------------------------
    def _mono(self, wav: Tensor) -> Tensor:
        """``wav [B, C, T]`` → ``[B · C, 1, T]``: the autoencoders are mono (the autoencoder representation encodes
        each channel on its own), so every channel of multichannel audio is a training clip of its own."""
        if wav.ndim != 3:
            raise ValueError(f"AutoencoderTask: expected waveforms [B, C, T], got shape {tuple(wav.shape)}")
        return wav.float().reshape(-1, 1, wav.shape[-1])

    def _mel_reconstruction(self, wav: Tensor, sample: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mel VAE, from a posterior sample or its mean: (the silence-padded normalised log-mel x [B, n_mels, L · r],
        its reconstruction x̂ (same shape), the log-mel L1 in nats over every frame (the training loss) and over the
        clip's own frames only, KL)."""
        vae = self.autoencoder
        assert isinstance(vae, MelVAE)
        with torch.no_grad():
            mel = vae.mel.encode(wav)
            x = vae.pad_mel(mel)
        posterior = vae.encode_mel(mel)
        x_hat = vae.decode(posterior.sample() if sample else posterior.mean).float()
        error = ((x_hat - x) * vae.mel.std[:, None]).abs()
        return x, x_hat, torch.stack([error.mean(), error[..., : mel.shape[-1]].mean()]), posterior.kl()

    def _waveform_reconstruction(self, wav: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
        """Waveform VAE: (reconstruction ŵ [B, 1, T] in float32, KL), from a posterior sample or its mean."""
        posterior = self.autoencoder.encode(wav)
        wav_hat = self.autoencoder.decode(posterior.sample() if sample else posterior.mean)
        return wav_hat[..., : wav.shape[-1]].float(), posterior.kl()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        wav = self._mono(batch["wav"])
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers
        logs: dict[str, Tensor | float] = {}
        adversarial = not self.is_mel and self.adversarial
        if self.is_mel:
            _, _, (recon, _), kl = self._mel_reconstruction(wav, sample=True)
        else:
            wav_hat, kl = self._waveform_reconstruction(wav, sample=True)
            if adversarial:
                logs["train/loss_d"] = self.discriminator_step(optimizers[1], wav, wav_hat)
        with self.toggled_optimizer(opt_g):  # the discriminator's weights need no gradients here
            if self.is_mel:
                loss = recon + self.kl_weight * kl
            else:
                stft = self.stft_loss(wav_hat, wav).total
                mel = self.mel_loss(wav_hat, wav)
                recon = stft + mel
                loss = self.lambda_stft * stft + self.lambda_mel * mel + self.kl_weight * kl
                logs.update({"train/stft": stft.detach(), "train/mel_l1": mel.detach()})
            if adversarial:
                adv, fm = self.adversarial_terms(wav, wav_hat)
                loss = loss + self.lambda_adv * adv + self.lambda_fm * fm
                logs.update({"train/adv": adv.detach(), "train/fm": fm.detach()})
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self.clip(opt_g)
            opt_g.step()  # global_step counts this step from here on

        logs.update({"train/kl": kl.detach(), "train/lr": float(opt_g.param_groups[0]["lr"])})
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=wav.shape[0])
        self.log("train/recon", recon.detach(), prog_bar=True, batch_size=wav.shape[0])
        self.log_dict(logs, batch_size=wav.shape[0])
        self.decay_lr_on_schedule()

    # ---- validation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, wav: Tensor) -> Tensor | None:
        """wav [B, 1, T] → the waveform rebuilt through the posterior mean [B, 1, T] (a mel VAE's through its
        vocoder: None without one)."""
        wav = self._mono(wav)
        if not self.is_mel:
            return self._waveform_reconstruction(wav, sample=False)[0]
        vocoder = self._vocoder
        if vocoder is None:
            return None
        _, x_hat, _, _ = self._mel_reconstruction(wav, sample=False)
        vocoder.to(wav.device)
        rebuilt = vocoder(self.autoencoder.mel.decode_mel(x_hat)).reshape(wav.shape[0], 1, -1).float()
        return fit_length(rebuilt, wav.shape[-1])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Reconstruction errors of held-out clips from the posterior mean, averaged over clips and ranks."""
        wav = self._mono(batch["wav"])
        size = wav.shape[0]
        if self.is_mel:
            _, _, (_, log_mel_l1), kl = self._mel_reconstruction(wav, sample=False)
            self.log("val/log_mel_l1", log_mel_l1, prog_bar=True, batch_size=size, sync_dist=True)
        else:
            kl = self.autoencoder.encode(wav).kl()
        self.log("val/kl", kl, batch_size=size, sync_dist=True)
        wav_hat = self.reconstruct(wav)
        if wav_hat is None:
            return
        errors = reconstruction_errors(wav_hat, wav, self.mel_loss, self.stft_loss)
        self.log("val/mel_l1", errors["mel_l1"], prog_bar=not self.is_mel, batch_size=size, sync_dist=True)
        self.log("val/stft_distance", errors["stft_distance"], batch_size=size, sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero and isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_audio("val/reconstruction", wav_hat[0].clamp(-1, 1).cpu(), self.global_step,
                                             sample_rate=self.autoencoder.sample_rate)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["audiodiff"] = {"version": __version__, "config": self.run_config,
                                   "autoencoder": self.autoencoder.config()}
