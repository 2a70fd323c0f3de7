"""Vocos generator (Siuzdak 2023, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders for
audio synthesis"): a ConvNeXt stack at the frame rate predicts the STFT's magnitude and phase, and an inverse STFT
gives the waveform.

Nothing runs at the sample rate but the inverse FFT, so a step costs a small fraction of a HiFi-GAN's of the same
quality, which makes it the vocoder that trains on a CPU budget. It is a drop-in for
:class:`~audiodiff.vocoders.hifigan.HiFiGAN`: same input (the representation's linear-magnitude mel, log-compressed
here), same output length and alignment (frame ``f`` of a centred STFT sits at sample ``f * hop_length``), same
``mel``/``export_config``/``for_inference`` interface, trained by the same vocoder stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from audiodiff.audio.mel import MelScale, MelSpectrogram, log_compress
from audiodiff.vocoders.griffinlim import griffin_lim, lobe_matrix, mel_to_linear, window_lobe

VOCOS_TARGET = "audiodiff.vocoders.vocos.Vocos"
_MAX_LOG_MAGNITUDE = 100.0  # exp(100) ~ 1e43: the magnitude is clipped there, as in the reference code


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022) in 1D: ``x + gamma * W2 gelu(W1 LN(dwconv7(x)))``. ``x: [B, dim, F]``."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.pwconv2(nn.functional.gelu(self.pwconv1(h)))
        return x + (self.gamma * h).transpose(1, 2)


class Vocos(nn.Module):
    """Vocos generator: linear-magnitude mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop_length]``.

    ``forward``: ``log(clamp(mel, min=log_floor))`` -> 7-tap convolution to ``dim`` channels -> LayerNorm ->
    ``num_layers`` ConvNeXt blocks -> LayerNorm -> a linear head giving ``n_fft // 2 + 1`` log-magnitudes and as
    many phases per frame -> ``istft`` (Hann window of ``n_fft``, hop ``hop_length``, centred frames).

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max, mel_scale, log_floor: the mel the generator consumes
            (as :class:`~audiodiff.vocoders.hifigan.HiFiGAN`); ``n_fft`` and ``hop_length`` are also the inverse
            STFT's.
        dim: channels of the ConvNeXt stack (Vocos: 512).
        intermediate_dim: hidden width of each block's pointwise MLP (Vocos: 1536).
        num_layers: ConvNeXt blocks (Vocos: 8); each starts with layer scale ``1 / num_layers``.
        prior_iters: 0 predicts the log-magnitude outright (Vocos). ``n > 0`` predicts it as a residual on the
            log of the mel's nonnegative inverse (:func:`~audiodiff.vocoders.griffinlim.mel_to_linear`, ``n``
            Richardson-Lucy iterations, the estimate Griffin-Lim starts from), so that training starts from the
            right magnitudes and spends its steps on phase and detail; FreeV (Lv et al. 2024) does the same with
            the pseudo-inverse.
        phase_increments: ``False`` predicts each frame's phase outright (Vocos), which a convolutional stack can
            only tie to its neighbours within its receptive field: far inside a steady tone every frame looks alike
            and gets the same phase. ``True`` predicts, per bin, the phase advance from the previous frame (as a
            deviation from the bin's centre frequency, the phase vocoder's convention) plus a local offset, and
            sums the advances over frames, so steady partials keep advancing at their frequency over any length.
        griffin_lim_iters: 0 predicts the phase (as above). ``n > 0`` predicts the magnitude only and recovers its
            phase with ``n`` fast Griffin-Lim iterations from zero phase (:func:`~audiodiff.vocoders.griffinlim.
            griffin_lim`, momentum 0.99): the network replaces Griffin-Lim's mel inverse with a learned magnitude,
            and trains through the iterations, so that it learns the magnitude that Griffin-Lim turns into the
            closest waveform (Griffin-Lim recovers the phase of a true STFT magnitude well, and of a mel inverse
            poorly; recipes/sfx/README.md).
        griffin_lim_grad_iters: how many of the last Griffin-Lim iterations pass gradients in training
            (:func:`~audiodiff.vocoders.griffinlim.griffin_lim`'s ``grad_iters``; through many they explode). 0 trains
            the magnitude on the phase Griffin-Lim found for it, held fixed.
    """

    power: float = 1.0  # the input is a magnitude mel

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int = 64, f_min: float = 0.0,
                 f_max: float | None = None, mel_scale: MelScale = "slaney", log_floor: float = 1e-5,
                 dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8, prior_iters: int = 0,
                 phase_increments: bool = False, griffin_lim_iters: int = 0, griffin_lim_grad_iters: int = 0) -> None:
        super().__init__()
        if hop_length > n_fft:
            raise ValueError(f"Vocos: hop_length={hop_length} must not exceed n_fft={n_fft} (the inverse STFT "
                             "needs overlapping frames)")
        if min(dim, intermediate_dim, num_layers) < 1:
            raise ValueError(f"Vocos: dim, intermediate_dim and num_layers must be >= 1, got {dim}, "
                             f"{intermediate_dim}, {num_layers}")
        if log_floor <= 0:
            raise ValueError(f"Vocos: log_floor must be > 0, got {log_floor}")
        for name, value in (("prior_iters", prior_iters), ("griffin_lim_iters", griffin_lim_iters)):
            if value < 0:
                raise ValueError(f"Vocos: {name} must be >= 0, got {value}")
        if griffin_lim_iters and phase_increments:
            raise ValueError("Vocos: phase_increments predicts a phase that griffin_lim_iters > 0 would discard; "
                             "choose one")
        self.mel = MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                  f_min=f_min, f_max=f_max, power=1.0, scale=mel_scale, norm="slaney")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.log_floor, self.prior_iters, self.phase_increments = log_floor, prior_iters, bool(phase_increments)
        self.griffin_lim_iters, self.griffin_lim_grad_iters = griffin_lim_iters, griffin_lim_grad_iters
        self.dim, self.intermediate_dim, self.num_layers = dim, intermediate_dim, num_layers
        self.embed = nn.Conv1d(n_mels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1.0 / num_layers) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        n_bins = n_fft // 2 + 1
        # Per bin: a log-magnitude and a phase, a log-magnitude, a phase advance and a phase offset, or (phase from
        # Griffin-Lim) a log-magnitude alone.
        outputs_per_bin = 1 if griffin_lim_iters else 3 if self.phase_increments else 2
        self.head = nn.Linear(dim, n_bins * outputs_per_bin)
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        if prior_iters:  # start from the prior itself: a zero log-magnitude residual (the head's first n_bins rows)
            with torch.no_grad():
                self.head.weight[:n_bins].zero_()
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        if self.phase_increments:
            # A bin's centre frequency advances its phase by 2 pi k hop / n_fft per frame (kept modulo 2 pi).
            advance = (torch.arange(n_bins, dtype=torch.float64) * hop_length / n_fft).remainder(1.0) * 2 * torch.pi
            self.register_buffer("bin_advance", advance.float()[:, None], persistent=False)
        if prior_iters:
            # The prior X = L @ Z: Z fitted against the mel of the lobes, (filterbank @ L), as mel_to_linear does.
            lobes = lobe_matrix(window_lobe(self.mel.window, n_fft, power=1.0), n_bins)
            self.register_buffer("prior_lobes", lobes.float(), persistent=False)
            self.register_buffer("prior_basis", (self.mel.filterbank.double() @ lobes).float(), persistent=False)

    def num_samples(self, num_frames: int) -> int:
        """Output samples for ``num_frames`` mel frames: ``num_frames * hop_length``."""
        return num_frames * self.hop_length

    def spectrum(self, mel: Tensor) -> Tensor:
        """Linear-magnitude mel ``[B, n_mels, F]`` -> complex STFT ``[B, n_fft // 2 + 1, F]`` (float32)."""
        log_magnitude, phase = self.predict(mel)
        if phase is None:
            raise ValueError("Vocos: with griffin_lim_iters > 0 the generator predicts no phase, hence no spectrum; "
                             "call it instead (Griffin-Lim finds the phase)")
        return torch.polar(torch.exp(log_magnitude.clamp(max=_MAX_LOG_MAGNITUDE)), phase)

    def predict(self, mel: Tensor) -> tuple[Tensor, Tensor | None]:
        """Linear-magnitude mel ``[B, n_mels, F]`` -> (log-magnitude, phase), each ``[B, n_fft // 2 + 1, F]`` float32;
        the phase is ``None`` with ``griffin_lim_iters > 0``."""
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"Vocos: expected a linear mel [B, n_mels={self.n_mels}, F], got shape "
                             f"{tuple(mel.shape)}")
        x = self.norm(self.embed(log_compress(mel, floor=self.log_floor)).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).float()
        phase: Tensor | None = None
        if self.griffin_lim_iters:
            log_magnitude = x
        elif self.phase_increments:
            log_magnitude, advance, offset = x.chunk(3, dim=1)
            phase = self.integrate_phase(advance) + offset
        else:
            log_magnitude, phase = x.chunk(2, dim=1)
        if self.prior_iters:
            log_magnitude = log_magnitude + self.log_prior(mel)
        return log_magnitude, phase

    def integrate_phase(self, advance: Tensor) -> Tensor:
        """Predicted advances ``[B, n_bins, F]`` (radians, relative to each bin's centre frequency) -> phase at each
        frame, modulo 2 pi: the cumulative sum, in float64 so that long clips keep their precision."""
        step = (advance + self.bin_advance).double()
        step = torch.remainder(step + torch.pi, 2 * torch.pi) - torch.pi
        return torch.remainder(torch.cumsum(step, dim=-1), 2 * torch.pi).float()

    @torch.no_grad()
    def log_prior(self, mel: Tensor) -> Tensor:
        """Linear-magnitude mel ``[B, n_mels, F]`` -> ``[B, n_fft // 2 + 1, F]`` log of its nonnegative inverse
        (float32), the magnitude that ``prior_iters > 0`` refines."""
        weights = mel_to_linear(mel.float().clamp_min(0.0), self.prior_basis, n_iter=self.prior_iters)
        linear = torch.matmul(self.prior_lobes, weights)
        return torch.log(linear.clamp_min(self.log_floor))

    def forward(self, mel: Tensor) -> Tensor:
        """Linear-magnitude mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop_length]`` at ``sample_rate`` Hz,
        float32 (the inverse STFT runs in float32 under mixed precision too). With ``griffin_lim_iters > 0`` the
        phase comes from Griffin-Lim, whose last ``griffin_lim_grad_iters`` iterations pass gradients."""
        if not self.griffin_lim_iters:
            return self.inverse(self.spectrum(mel), mel.shape[-1])
        log_magnitude, _ = self.predict(mel)
        magnitude = torch.exp(log_magnitude.clamp(max=_MAX_LOG_MAGNITUDE))
        return griffin_lim(magnitude, self.n_fft, self.hop_length, n_iter=self.griffin_lim_iters,
                           length=self.num_samples(mel.shape[-1]), window=self.window.float(),
                           grad_iters=self.griffin_lim_grad_iters)

    def inverse(self, spectrum: Tensor, num_frames: int) -> Tensor:
        """Complex STFT ``[B, n_fft // 2 + 1, F]`` -> waveform ``[B, num_frames * hop_length]`` (inverse STFT)."""
        return torch.istft(spectrum, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                           window=self.window.float(), center=True, length=self.num_samples(num_frames))

    def remove_weight_norm(self) -> Vocos:
        """Nothing to fold (Vocos has no weight norm); returns ``self``, so every trainable vocoder has the same
        inference step."""
        return self

    @classmethod
    def for_inference(cls, **kwargs: Any) -> Vocos:
        """A generator in eval mode whose weights are loaded afterwards (a diffusion export's vocoder entries)."""
        return cls(**kwargs).eval()

    def export_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this generator, with ``_target_``: plain (YAML-safe) values."""
        return {"_target_": VOCOS_TARGET, "sample_rate": int(self.sample_rate), "n_fft": int(self.n_fft),
                "hop_length": int(self.hop_length), "n_mels": int(self.n_mels), "f_min": float(self.mel.f_min),
                "f_max": None if self.mel.f_max is None else float(self.mel.f_max), "mel_scale": str(self.mel.scale),
                "log_floor": float(self.log_floor), "dim": int(self.dim),
                "intermediate_dim": int(self.intermediate_dim), "num_layers": int(self.num_layers),
                "prior_iters": int(self.prior_iters), "phase_increments": bool(self.phase_increments),
                "griffin_lim_iters": int(self.griffin_lim_iters),
                "griffin_lim_grad_iters": int(self.griffin_lim_grad_iters)}

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, dim={self.dim}, num_layers={self.num_layers}")
