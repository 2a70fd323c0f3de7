"""Griffin-Lim phase reconstruction: a training-free vocoder for mel spectrograms.

``mel -> linear spectrogram`` is a small nonnegative regression per frame, solved for the whole batch at
once (:func:`mel_to_linear`). Phase comes from the fast Griffin-Lim algorithm of Perraudin, Balazs &
Sondergaard (2013), "A fast Griffin-Lim algorithm", with torch's STFT so that a batch of clips costs one
FFT call per iteration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audiodiff.audio.mel import MelNorm, MelScale, MelSpectrogram

# Added to magnitudes before dividing, so that zero bins get a defined (zero) phase update.
_EPS = 1e-16
# The same for a differentiable run: |c| is computed as sqrt(|c|^2 + eps^2), whose gradient stays finite at 0.
_GRAD_EPS = 1e-8
# Richardson-Lucy works on the mel scaled to peak 1; this floor keeps its ratios finite.
_RL_FLOOR = 1e-12


def window_lobe(window: Tensor, n_fft: int, power: float = 2.0, floor: float = 1e-3) -> Tensor:
    """Spectral footprint of a bin-centred sinusoid: ``|DFT(window)|^power`` at integer bin offsets.

    Args:
        window: ``[win_length]`` analysis window, zero-padded (centred) to ``n_fft`` as ``torch.stft`` does.
        n_fft: FFT size.
        power: 2.0 for power spectrograms, 1.0 for magnitudes.
        floor: offsets whose response falls below ``floor`` (relative to the peak) are cut off.

    Returns:
        ``[2r + 1]`` float64, peak 1 at the centre; ``[0.25, 1, 0.25]`` for a periodic Hann window of
        ``n_fft`` samples and ``power=2``.
    """
    win_length = window.shape[-1]
    if window.ndim != 1 or not 0 < win_length <= n_fft:
        raise ValueError(f"window must be [win_length <= n_fft={n_fft}], got shape {tuple(window.shape)}")
    left = (n_fft - win_length) // 2
    window64 = window.detach().cpu().to(torch.float64)
    padded = torch.nn.functional.pad(window64, (left, n_fft - win_length - left))
    response = torch.fft.fft(padded).abs().pow(power)[: n_fft // 2 + 1]
    response = response / response[0]
    above = torch.nonzero(response >= floor).flatten()
    radius = int(above.max())
    return torch.cat([response[1 : radius + 1].flip(0), response[: radius + 1]])


def lobe_matrix(lobe: Tensor, n_freqs: int) -> Tensor:
    """``[n_freqs, n_freqs]`` matrix whose column ``k`` is ``lobe`` centred on bin ``k`` (cut at edges)."""
    radius = lobe.shape[0] // 2
    matrix = torch.zeros(n_freqs, n_freqs, dtype=lobe.dtype)
    for offset in range(-radius, radius + 1):
        matrix += torch.diag(lobe[offset + radius].expand(n_freqs - abs(offset)), -offset)
    return matrix


def mel_to_linear(mel: Tensor, filterbank: Tensor, n_iter: int = 100, lobe: Tensor | None = None) -> Tensor:
    """Nonnegative inverse of a mel projection: ``X >= 0`` with ``filterbank @ X ~= mel``, batched.

    A mel band cannot tell where in its triangle the energy sits, so the inverse needs a prior. Least-squares
    inverses (pseudo-inverse, projected gradient) return the minimum-norm spread, which moves a 440 Hz tone
    to a band centre 20 Hz away. Here ``X = L @ Z`` is a nonnegative sum of window lobes ``L`` (the spectral
    footprint of a sinusoid, :func:`window_lobe`), and ``Z >= 0`` is fitted by Richardson-Lucy multiplicative
    updates from a flat start (Richardson 1972, Lucy 1974), i.e. nonnegative generalised-KL regression. With
    a 64-band, 1024-point setup this keeps tones within ~2 Hz of their frequency after Griffin-Lim and
    reconstructs noise spectra at least as closely as least squares does.

    Args:
        mel: ``[B, n_mels, F]`` (or ``[..., n_mels, F]``) nonnegative mel spectrogram, in the unit the
            filterbank was applied to (power or magnitude).
        filterbank: ``[n_mels, K]``, e.g. :func:`audiodiff.audio.mel.mel_filterbank`.
        n_iter: Richardson-Lucy iterations.
        lobe: ``[2r + 1]`` window footprint from :func:`window_lobe`; ``None`` fits ``X`` directly.

    Returns:
        ``[B, K, F]`` nonnegative linear-frequency spectrogram in the unit of ``mel``; bins no band
        covers are 0.
    """
    if filterbank.ndim != 2:
        raise ValueError(f"filterbank must be [n_mels, K], got shape {tuple(filterbank.shape)}")
    if mel.ndim < 2 or mel.shape[-2] != filterbank.shape[0]:
        raise ValueError(
            f"mel must be [..., n_mels={filterbank.shape[0]}, F] for this filterbank, "
            f"got shape {tuple(mel.shape)}"
        )
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if bool((mel < 0).any()):
        raise ValueError("mel must be nonnegative (a linear mel, not a log-mel)")
    dtype = mel.dtype if mel.dtype == torch.float64 else torch.float32
    n_freqs = filterbank.shape[1]
    lobes = None if lobe is None else lobe_matrix(lobe.detach().cpu().to(torch.float64), n_freqs)
    basis64 = filterbank.detach().cpu().to(torch.float64)
    if lobes is not None:
        basis64 = basis64 @ lobes
    basis = basis64.to(device=mel.device, dtype=dtype)
    coverage = basis.sum(dim=0)  # [K]: a bin no band sees gets no energy
    observed = coverage > 0

    target = mel.to(dtype)
    scale = target.amax(dim=(-2, -1), keepdim=True)  # RL is scale-equivariant: fit the mel at peak 1
    target = target / torch.where(scale > 0, scale, torch.ones_like(scale))
    # One [n_mels, N * F] matrix, so that every iteration is two plain GEMMs over all frames of the batch.
    lead, n_frames = target.shape[:-2], target.shape[-1]
    columns = target.movedim(-2, 0).reshape(filterbank.shape[0], -1)
    gain = torch.where(observed, 1.0 / coverage.clamp_min(_RL_FLOOR), torch.zeros_like(coverage))
    backward = (basis.transpose(0, 1) * gain[:, None]).contiguous()  # diag(1 / coverage) @ basis^T
    floor = torch.tensor(_RL_FLOOR, dtype=dtype, device=mel.device)
    weights = observed.to(dtype)[:, None].expand(n_freqs, columns.shape[1]).clone()
    for _ in range(n_iter):
        ratio = torch.addmm(floor, basis, weights)
        torch.div(columns, ratio, out=ratio)
        # The floor keeps vanishing weights out of the (very slow) subnormal float range.
        weights.mul_(torch.mm(backward, ratio)).clamp_min_(_RL_FLOOR)
    weights = weights * observed.to(dtype)[:, None]
    if lobes is not None:
        weights = torch.matmul(lobes.to(device=mel.device, dtype=dtype), weights)
    linear = weights.reshape(n_freqs, *lead, n_frames).movedim(0, -2)
    return (linear * scale).to(mel.dtype)


def griffin_lim(
    magnitude: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    n_iter: int = 32,
    momentum: float = 0.99,
    generator: torch.Generator | None = None,
    length: int | None = None,
    window: Tensor | None = None,
    grad_iters: int | None = None,
) -> Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013, Algorithm 2): a waveform with STFT magnitude ``magnitude``.

    Iterates ``t_n = P_C1(P_C2(c_{n-1}))``, ``c_n = t_n + momentum * (t_n - t_{n-1})`` where ``P_C2`` imposes
    the target magnitude and ``P_C1 = STFT(ISTFT(.))`` makes the spectrogram consistent. ``momentum = 0``
    is the original Griffin-Lim. STFT conventions match :class:`audiodiff.audio.mel.MelSpectrogram` with
    ``center=True``, ``pad_mode="reflect"``.

    Args:
        magnitude: ``[B, K, F]`` STFT magnitudes (not power), ``K = n_fft // 2 + 1``.
        n_fft, hop_length, win_length: STFT geometry (``win_length`` defaults to ``n_fft``).
        n_iter: iterations.
        momentum: Perraudin's ``alpha``; 0.99 is the paper's choice.
        generator: seeds a uniform random initial phase; ``None`` starts from zero phase. Either way the
            result is deterministic.
        length: output length in samples; ``hop_length * (F - 1)`` when ``None``.
        window: ``[win_length]`` analysis/synthesis window; periodic Hann when ``None``.
        grad_iters: for a ``magnitude`` that requires grad, how many of the last iterations pass gradients; the
            phase reached before them is taken as a constant. ``None``: all of them. Backpropagating through many
            iterations explodes (the momentum makes them sensitive to their start); ``0`` differentiates only the
            final imposition of ``magnitude`` on the phase Griffin-Lim found.

    Returns:
        ``wav [B, T]`` in ``magnitude``'s dtype (float32 or float64) and device.
    """
    win_length = n_fft if win_length is None else win_length
    n_freqs = n_fft // 2 + 1
    if magnitude.ndim != 3 or magnitude.shape[1] != n_freqs:
        raise ValueError(
            f"magnitude must be [B, K={n_freqs}, F] for n_fft={n_fft}, got shape {tuple(magnitude.shape)}"
        )
    if magnitude.shape[-1] < 2:
        raise ValueError(f"magnitude needs at least 2 frames, got {magnitude.shape[-1]}")
    if bool((magnitude < 0).any()):
        raise ValueError("magnitude must be nonnegative (|STFT|, not a log or signed spectrogram)")
    if n_iter < 0 or not 0.0 <= momentum < 1.0:
        raise ValueError(f"need n_iter >= 0 and 0 <= momentum < 1, got n_iter={n_iter}, momentum={momentum}")
    dtype = magnitude.dtype if magnitude.dtype == torch.float64 else torch.float32
    device = magnitude.device
    magnitude = magnitude.to(dtype)
    if window is None:
        window = torch.hann_window(win_length, periodic=True, dtype=dtype, device=device)
    else:
        window = window.to(device=device, dtype=dtype)
    stft_args = {"n_fft": n_fft, "hop_length": hop_length, "win_length": win_length, "window": window}

    if generator is None:
        phase = torch.zeros_like(magnitude)
    else:
        phase = torch.rand(magnitude.shape, generator=generator, dtype=dtype, device=generator.device)
        phase = phase.to(device) * (2.0 * math.pi)
    # Iterations from `tracked` on are recorded by autograd (out of place); the ones before run in place on
    # detached buffers. Without a magnitude that requires grad, none are recorded.
    differentiable = torch.is_grad_enabled() and magnitude.requires_grad
    if not differentiable:
        tracked = n_iter
    else:
        tracked = 0 if grad_iters is None else n_iter - min(max(grad_iters, 0), n_iter)
    spectrum = torch.polar(magnitude if tracked == 0 else magnitude.detach(), phase)  # P_C2(c_0)

    previous = torch.zeros_like(spectrum)
    for step in range(n_iter):
        in_place = step < tracked
        with torch.set_grad_enabled(not in_place):
            wav = torch.istft(spectrum, center=True, **stft_args)
            rebuilt = torch.stft(wav, center=True, pad_mode="reflect", return_complex=True, **stft_args)
            # c_n = (1 + momentum) t_n - momentum t_{n-1}, then P_C2(c_n): keep the phase of c_n, impose the target
            # magnitude. In place (into the t_{n-1} buffer) where nothing is recorded.
            if in_place:
                accelerated = previous.mul_(-momentum).add_(rebuilt, alpha=1.0 + momentum)
                spectrum = accelerated.mul_(magnitude / (accelerated.abs() + _EPS))
            else:  # |c| smoothed at 0, where its gradient is undefined (silent bins)
                accelerated = rebuilt * (1.0 + momentum) - previous * momentum
                modulus = torch.sqrt(accelerated.real.square() + accelerated.imag.square() + _GRAD_EPS**2)
                spectrum = accelerated * (magnitude / modulus)
            previous = rebuilt
    if differentiable and tracked == n_iter:  # grad_iters=0: the magnitude asked for, on the phase found
        spectrum = torch.polar(magnitude, spectrum.angle())
    return torch.istft(spectrum, center=True, length=length, **stft_args)


class GriffinLimVocoder(torch.nn.Module):
    """Mel spectrogram -> waveform with :func:`mel_to_linear` and :func:`griffin_lim`; no trained weights.

    Built from the same arguments as :class:`audiodiff.audio.mel.MelSpectrogram` (and owning one, for its
    filterbank and window), so that ``vocoder(mel_module(wav))`` approximately reconstructs ``wav``.
    ``power`` says what the incoming mel holds: 2.0 a power mel (``filterbank @ |STFT|^2``), 1.0 a
    magnitude mel (``filterbank @ |STFT|``). Only ``center=True`` framing is supported.

    Args:
        sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, power, scale, norm: as for
            :class:`audiodiff.audio.mel.MelSpectrogram`.
        n_iter: Griffin-Lim iterations.
        momentum: fast Griffin-Lim momentum (Perraudin et al. 2013).
        inverse_iter: Richardson-Lucy iterations of the mel -> linear inverse.
    """

    lobe: Tensor

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        scale: MelScale = "slaney",
        norm: MelNorm = "slaney",
        n_iter: int = 32,
        momentum: float = 0.99,
        inverse_iter: int = 100,
    ) -> None:
        super().__init__()
        self.mel = MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=power,
            scale=scale,
            norm=norm,
        )
        if n_iter < 0 or inverse_iter < 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"need n_iter >= 0, inverse_iter >= 0, 0 <= momentum < 1; got {n_iter=}, {inverse_iter=}, "
                f"{momentum=}"
            )
        self.sample_rate = sample_rate
        self.n_iter = n_iter
        self.momentum = momentum
        self.inverse_iter = inverse_iter
        self.register_buffer("lobe", window_lobe(self.mel.window, n_fft, power), persistent=False)

    @classmethod
    def from_mel_spectrogram(
        cls, mel: MelSpectrogram, n_iter: int = 32, momentum: float = 0.99, inverse_iter: int = 100
    ) -> GriffinLimVocoder:
        """The vocoder inverting ``mel`` (same STFT, filterbank and power)."""
        if not mel.center:
            raise ValueError("GriffinLimVocoder needs a MelSpectrogram with center=True")
        return cls(
            mel.sample_rate,
            mel.n_fft,
            mel.hop_length,
            mel.win_length,
            mel.n_mels,
            mel.f_min,
            mel.f_max,
            mel.power,
            mel.scale,
            mel.norm,
            n_iter=n_iter,
            momentum=momentum,
            inverse_iter=inverse_iter,
        )

    @torch.no_grad()
    def forward(
        self, mel: Tensor, generator: torch.Generator | None = None, length: int | None = None
    ) -> Tensor:
        """``mel: [B, n_mels, F]`` linear (not log) mel in the unit ``power`` names -> ``wav [B, T]``.

        ``T = hop_length * (F - 1)`` unless ``length`` is given; ``generator`` seeds the initial phase
        (zero phase when ``None``). Output is float32 (float64 for a float64 mel) at ``sample_rate`` Hz.
        """
        if mel.ndim != 3 or mel.shape[1] != self.mel.n_mels:
            raise ValueError(f"mel must be [B, n_mels={self.mel.n_mels}, F], got shape {tuple(mel.shape)}")
        if not bool(torch.isfinite(mel).all()):
            raise ValueError("mel holds NaN/Inf values")
        linear = mel_to_linear(
            mel.clamp_min(0.0), self.mel.filterbank, n_iter=self.inverse_iter, lobe=self.lobe
        )
        magnitude = linear if self.mel.power == 1.0 else linear.pow(1.0 / self.mel.power)
        return griffin_lim(
            magnitude,
            n_fft=self.mel.n_fft,
            hop_length=self.mel.hop_length,
            win_length=self.mel.win_length,
            n_iter=self.n_iter,
            momentum=self.momentum,
            generator=generator,
            length=length,
            window=self.mel.window,
        )

    def extra_repr(self) -> str:
        return f"n_iter={self.n_iter}, momentum={self.momentum}, inverse_iter={self.inverse_iter}"
