"""HiFi-GAN generator (Kong, Kim & Bae 2020, "HiFi-GAN: Generative Adversarial Networks for Efficient and High
Fidelity Speech Synthesis"), as a vocoder for :class:`audiodiff.representations.mel.MelRepresentation`.

The generator takes the representation's linear-magnitude mel and log-compresses it itself, so it is trained and
used on the same input. It loads the weights of transformers' ``SpeechT5HifiGan`` (the format AudioLDM publishes
its 16 kHz vocoder in): :meth:`HiFiGAN.from_speecht5` and :func:`load_speecht5_state_dict`.

Mapping to ``SpeechT5HifiGan``: for a linear mel ``mel [B, n_mels, F]`` (magnitude, power 1, Slaney mel scale and
norm), ``HiFiGAN(mel) == SpeechT5HifiGan(log(clamp(mel, min=log_floor)).transpose(1, 2))[:, :F * hop_length]``.
The log is natural (AudioLDM's ``dynamic_range_compression``: ``log(clamp(x, min=1e-5))``), the frames-first
layout ``[B, F, n_mels]`` is transposed, and ``normalize_before``'s ``(x - mean) / scale`` happens on the log-mel
in both models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

from audiodiff.audio.mel import MelScale, MelSpectrogram, log_compress

ResBlockType = Literal[1, 2]

# Slope of the last activation before ``conv_post``: F.leaky_relu's default, in Kong et al.'s code and SpeechT5HifiGan.
_FINAL_SLOPE = 0.01
# Kong et al. initialise the upsampling and residual convolutions from N(0, 0.01^2).
_INIT_STD = 0.01
HIFIGAN_TARGET = "audiodiff.vocoders.hifigan.HiFiGAN"
_WEIGHT_NORM_G = "parametrizations.weight.original0"
_WEIGHT_NORM_V = "parametrizations.weight.original1"


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of an odd ``kernel_size`` convolution with ``dilation``."""
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1 (Kong et al. 2020, Fig. 1): per dilation ``d``,
    ``x += conv_1(lrelu(conv_d(lrelu(x))))``. ``x: [B, channels, T] -> [B, channels, T]``."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], slope: float = 0.1) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            x = x + conv2(nn.functional.leaky_relu(conv1(nn.functional.leaky_relu(x, self.slope)), self.slope))
        return x


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2 (the V3 generator): per dilation ``d``, ``x += conv_d(lrelu(x))``.
    ``x: [B, channels, T] -> [B, channels, T]``."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], slope: float = 0.1) -> None:
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(nn.functional.leaky_relu(x, self.slope))
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN generator: linear-magnitude mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop_length]`` in [-1, 1].

    ``forward`` computes ``log(clamp(mel, min=log_floor))`` (natural log, as
    :func:`audiodiff.audio.mel.log_compress` and :class:`~audiodiff.representations.mel.MelRepresentation`), then
    optionally ``(x - mean) / scale`` per band (``normalize_before``, SpeechT5HifiGan's buffers), then
    ``conv_pre`` -> [lrelu -> transposed conv (x rate) -> mean of the multi-receptive-field residual blocks] per
    upsampling stage -> lrelu(0.01) -> ``conv_post`` -> tanh (Kong et al. 2020, Fig. 1).

    Lengths: a transposed convolution of stride ``u``, kernel ``k >= u`` and padding ``(k - u) // 2`` maps ``n``
    samples to ``n * u + (k - u) % 2``, so the stack gives ``F * hop_length`` samples plus a few when some
    ``k - u`` is odd (AudioLDM's kernels: ``+32``). Those trailing samples are dropped, as AudioLDM's pipeline
    does, so the output always has exactly ``F * hop_length`` samples; frame ``f`` of a centred STFT
    (``MelSpectrogram(center=True)``) sits at sample ``f * hop_length``. For training, crop the output to the
    clip: ``wav_hat = G(G.mel(wav))[..., :T]``.

    Weight norm (Salimans & Kingma 2016) is applied through ``torch.nn.utils.parametrizations.weight_norm`` on every
    convolution; :meth:`remove_weight_norm` folds it in for inference. The mel settings (``sample_rate``, ``n_fft``,
    ``hop_length``, ``n_mels``, ``f_min``, ``f_max``, ``mel_scale``; ``power = 1``) describe the input the generator
    expects; ``self.mel`` computes it from a waveform (its buffers are not saved).

    Args:
        sample_rate: Hz.
        n_fft: FFT size of the mel the generator consumes.
        hop_length: samples per mel frame; must equal the product of ``upsample_rates``.
        n_mels: mel bands (input channels).
        f_min, f_max, mel_scale: mel band layout (``scale`` of :class:`audiodiff.audio.mel.MelSpectrogram`).
            ``self.scale`` is the ``normalize_before`` buffer.
        log_floor: magnitudes are clamped to this before the log.
        upsample_rates: stride of each transposed convolution.
        upsample_kernel_sizes: kernel of each transposed convolution (``>=`` its rate; ``2 * rate`` gives exact
            lengths).
        upsample_initial_channel: channels after ``conv_pre``; halved at each upsampling stage.
        resblock: residual block type, 1 (V1, V2) or 2 (V3).
        resblock_kernel_sizes: kernel of each parallel residual block in a stage (the MRF module).
        resblock_dilation_sizes: dilations of each parallel residual block.
        leaky_relu_slope: slope of the leaky ReLUs inside the network (0.1).
        normalize_before: standardise the log-mel with the ``mean``/``scale`` buffers (SpeechT5HifiGan's option).
    """

    power: float = 1.0  # the input is a magnitude mel
    mean: Tensor
    scale: Tensor

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: MelScale = "slaney",
        log_floor: float = 1e-5,
        upsample_rates: Sequence[int] = (8, 8, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
        upsample_initial_channel: int = 512,
        resblock: ResBlockType = 1,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        leaky_relu_slope: float = 0.1,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        upsample_rates = [int(u) for u in upsample_rates]
        upsample_kernel_sizes = [int(k) for k in upsample_kernel_sizes]
        resblock_kernel_sizes = [int(k) for k in resblock_kernel_sizes]
        resblock_dilation_sizes = [[int(d) for d in ds] for ds in resblock_dilation_sizes]
        if math.prod(upsample_rates) != hop_length:
            raise ValueError(
                f"HiFiGAN: upsample_rates {upsample_rates} multiply to {math.prod(upsample_rates)}, "
                f"expected hop_length={hop_length}"
            )
        if len(upsample_kernel_sizes) != len(upsample_rates) or any(
            k < u for k, u in zip(upsample_kernel_sizes, upsample_rates, strict=True)
        ):
            raise ValueError(
                f"HiFiGAN: need one upsample kernel >= its rate per stage, got upsample_rates={upsample_rates}, "
                f"upsample_kernel_sizes={upsample_kernel_sizes}"
            )
        if len(resblock_kernel_sizes) != len(resblock_dilation_sizes) or not resblock_kernel_sizes:
            raise ValueError(
                f"HiFiGAN: need one dilation list per residual kernel, got resblock_kernel_sizes="
                f"{resblock_kernel_sizes}, resblock_dilation_sizes={resblock_dilation_sizes}"
            )
        if resblock not in (1, 2):
            raise ValueError(f"HiFiGAN: resblock must be 1 or 2, got {resblock!r}")
        if upsample_initial_channel % 2 ** len(upsample_rates):
            raise ValueError(
                f"HiFiGAN: upsample_initial_channel={upsample_initial_channel} must be divisible by "
                f"2^{len(upsample_rates)} (halved at each upsampling stage)"
            )
        if log_floor <= 0:
            raise ValueError(f"HiFiGAN: log_floor must be > 0, got {log_floor}")

        self.mel = MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
            power=1.0, scale=mel_scale, norm="slaney",
        )  # fmt: skip
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.log_floor = log_floor
        self.upsample_rates = upsample_rates
        self.upsample_kernel_sizes = upsample_kernel_sizes
        self.upsample_initial_channel = upsample_initial_channel
        self.resblock = resblock
        self.resblock_kernel_sizes = resblock_kernel_sizes
        self.resblock_dilation_sizes = resblock_dilation_sizes
        self.slope = leaky_relu_slope
        self.normalize_before = normalize_before

        block = ResBlock1 if resblock == 1 else ResBlock2
        self.conv_pre = nn.Conv1d(n_mels, upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2))
            channels //= 2
            for res_kernel, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(channels, res_kernel, dilations, leaky_relu_slope))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)
        for module in [*self.ups, *self.resblocks.modules()]:
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                nn.init.normal_(module.weight, 0.0, _INIT_STD)
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                parametrizations.weight_norm(module)  # w = g * v / ||v||, norm over every dim but 0
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("scale", torch.ones(n_mels))

    def num_samples(self, num_frames: int) -> int:
        """Output samples for ``num_frames`` mel frames: ``num_frames * hop_length``."""
        return num_frames * self.hop_length

    def forward(self, mel: Tensor) -> Tensor:
        """Linear-magnitude mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop_length]`` at ``sample_rate`` Hz."""
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(
                f"HiFiGAN: expected a linear mel [B, n_mels={self.n_mels}, F], got shape {tuple(mel.shape)}"
            )
        x = log_compress(mel, floor=self.log_floor)
        if self.normalize_before:
            x = (x - self.mean[:, None]) / self.scale[:, None]
        x = self.conv_pre(x)
        n_kernels = len(self.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(nn.functional.leaky_relu(x, self.slope))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / n_kernels
        x = self.conv_post(nn.functional.leaky_relu(x, _FINAL_SLOPE))
        return torch.tanh(x[:, 0, : self.num_samples(mel.shape[-1])])

    def remove_weight_norm(self) -> HiFiGAN:
        """Fold weight norm into plain weights (inference form; same outputs). Returns ``self``; idempotent.
        Runs with gradients enabled: folded under `torch.no_grad()`, torch would register the weights as buffers."""
        with torch.enable_grad():
            for module in self.modules():
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    @classmethod
    def for_inference(cls, **kwargs: Any) -> HiFiGAN:
        """A generator in inference form (weight norm folded, eval mode) whose weights are loaded afterwards, e.g.
        from a diffusion export's `representation.vocoder.*` entries: `{_target_: ...HiFiGAN.for_inference, ...}`."""
        return cls(**kwargs).remove_weight_norm().eval()

    @classmethod
    def from_export(cls, folder: str | Path) -> HiFiGAN:
        """The HiFi-GAN a vocoder stage exported to `folder`, in inference form on the CPU (see
        :func:`audiodiff.vocoders.trained.from_export`, which reads any trainable vocoder's export)."""
        from audiodiff.vocoders.trained import from_export

        generator = from_export(folder)
        if not isinstance(generator, cls):
            raise ValueError(f"HiFiGAN.from_export: {folder} holds a {type(generator).__name__}, not a HiFiGAN")
        return generator

    def export_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this generator's architecture and mel, with ``_target_``: plain
        Python values (YAML- and ``weights_only``-safe), whichever way it was built (a config, ``from_speecht5``)."""
        mel = self.mel
        return {
            "_target_": HIFIGAN_TARGET,
            "sample_rate": int(self.sample_rate),
            "n_fft": int(self.n_fft),
            "hop_length": int(self.hop_length),
            "n_mels": int(self.n_mels),
            "f_min": float(mel.f_min),
            "f_max": None if mel.f_max is None else float(mel.f_max),
            "mel_scale": str(mel.scale),
            "log_floor": float(self.log_floor),
            "upsample_rates": list(self.upsample_rates),
            "upsample_kernel_sizes": list(self.upsample_kernel_sizes),
            "upsample_initial_channel": int(self.upsample_initial_channel),
            "resblock": int(self.resblock),
            "resblock_kernel_sizes": list(self.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in self.resblock_dilation_sizes],
            "leaky_relu_slope": float(self.slope),
            "normalize_before": bool(self.normalize_before),
        }

    @classmethod
    def from_speecht5(
        cls,
        model_or_path: nn.Module | str | Path,
        n_fft: int = 1024,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: MelScale = "slaney",
        log_floor: float = 1e-5,
    ) -> HiFiGAN:
        """A generator carrying the weights of a transformers ``SpeechT5HifiGan``.

        Args:
            model_or_path: a ``SpeechT5HifiGan`` module, or the folder its ``save_pretrained`` wrote (``config.json``
                with ``model.safetensors`` or ``pytorch_model.bin``), e.g. AudioLDM's ``vocoder/`` folder.
            n_fft, f_min, f_max, mel_scale, log_floor: the mel the weights were trained on, which the SpeechT5 config
                does not record (AudioLDM 16 kHz: 1024, 0, 8000, Slaney, 1e-5; sample rate, band count and hop
                come from the config).

        Returns:
            A :class:`HiFiGAN` with weight norm (fine-tunable); call :meth:`remove_weight_norm` for inference.
        """
        if isinstance(model_or_path, nn.Module):
            config = getattr(model_or_path, "config", None)
            if config is None:
                raise TypeError(f"HiFiGAN.from_speecht5: {type(model_or_path).__name__} has no .config")
            state_dict = model_or_path.state_dict()
        else:
            config, state_dict = _read_speecht5_folder(Path(model_or_path))
        return load_speecht5_state_dict(
            state_dict, config, n_fft=n_fft, f_min=f_min, f_max=f_max, mel_scale=mel_scale, log_floor=log_floor
        )

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, hop_length={self.hop_length}, n_mels={self.n_mels}, "
            f"upsample_rates={self.upsample_rates}, resblock={self.resblock}, "
            f"normalize_before={self.normalize_before}"
        )


def _read_speecht5_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``config.json`` and the weights of a ``SpeechT5HifiGan.save_pretrained`` folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"HiFiGAN.from_speecht5: no config.json in {folder}")
    config = json.loads(config_file.read_text())
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return config, load_file(safetensors_file)
    if bin_file.is_file():
        return config, torch.load(bin_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"HiFiGAN.from_speecht5: neither model.safetensors nor pytorch_model.bin in {folder}")


def speecht5_kwargs(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """:class:`HiFiGAN` constructor arguments for a ``SpeechT5HifiGanConfig`` (or its ``config.json`` dict).

    Missing fields take ``SpeechT5HifiGanConfig``'s defaults.
    """
    if not isinstance(config, Mapping):
        config = config.to_dict()
    from transformers import SpeechT5HifiGanConfig

    defaults = SpeechT5HifiGanConfig().to_dict()
    field = {**defaults, **config}
    rates = [int(u) for u in field["upsample_rates"]]
    return {
        "sample_rate": int(field["sampling_rate"]),
        "hop_length": math.prod(rates),
        "n_mels": int(field["model_in_dim"]),
        "upsample_rates": rates,
        "upsample_kernel_sizes": list(field["upsample_kernel_sizes"]),
        "upsample_initial_channel": int(field["upsample_initial_channel"]),
        "resblock": 1,
        "resblock_kernel_sizes": list(field["resblock_kernel_sizes"]),
        "resblock_dilation_sizes": [list(d) for d in field["resblock_dilation_sizes"]],
        "leaky_relu_slope": float(field["leaky_relu_slope"]),
        "normalize_before": bool(field["normalize_before"]),
    }


def _norm_except_dim0(weight: Tensor) -> Tensor:
    """``||weight||_2`` over every dim but 0, kept as ``[C, 1, ...]`` (weight norm's ``g`` at ``dim=0``)."""
    return torch.linalg.vector_norm(weight, dim=tuple(range(1, weight.ndim)), keepdim=True)


def convert_weight_norm(state_dict: Mapping[str, Tensor], target_keys: Sequence[str]) -> dict[str, Tensor]:
    """Rewrite weights into the form ``target_keys`` uses: plain ``X.weight`` or weight norm
    ``X.parametrizations.weight.original0/1`` (``g``, ``v``); the source may hold either, or the deprecated
    ``X.weight_g`` / ``X.weight_v`` of ``torch.nn.utils.weight_norm``. All use ``dim=0``: ``w = g * v / ||v||``.
    Other entries pass through unchanged."""
    targets = set(target_keys)
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        for suffix, part in ((".weight_g", "g"), (".weight_v", "v"), ("." + _WEIGHT_NORM_G, "g"),
                             ("." + _WEIGHT_NORM_V, "v")):  # fmt: skip
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            if key.endswith(".weight") and f"{key[: -len('.weight')]}.{_WEIGHT_NORM_V}" in targets:
                base = key[: -len(".weight")]
                out[f"{base}.{_WEIGHT_NORM_G}"] = _norm_except_dim0(value)
                out[f"{base}.{_WEIGHT_NORM_V}"] = value
            else:
                out[key] = value
    for base, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise KeyError(f"weight norm of {base!r} needs both g and v, found only {sorted(pair)}")
        if f"{base}.{_WEIGHT_NORM_V}" in targets:
            out[f"{base}.{_WEIGHT_NORM_G}"] = pair["g"]
            out[f"{base}.{_WEIGHT_NORM_V}"] = pair["v"]
        else:
            out[f"{base}.weight"] = pair["g"] * pair["v"] / _norm_except_dim0(pair["v"])
    return out


def load_speecht5_state_dict(
    state_dict: Mapping[str, Tensor],
    config: Mapping[str, Any] | Any,
    n_fft: int = 1024,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: MelScale = "slaney",
    log_floor: float = 1e-5,
) -> HiFiGAN:
    """A :class:`HiFiGAN` built from a ``SpeechT5HifiGan`` config and loaded with its ``state_dict``.

    Key mapping: ``upsampler.{i}`` -> ``ups.{i}``; ``conv_pre``, ``resblocks.{j}.convs1/2.{k}``, ``conv_post``,
    ``mean``, ``scale`` keep their names; weights may be plain, ``weight_g/weight_v`` or
    ``parametrizations.weight.original0/1`` (see :func:`convert_weight_norm`). The load is strict: a missing or
    unexpected key, or a shape that differs from the config, raises.

    Args:
        state_dict: ``SpeechT5HifiGan.state_dict()`` or the tensors of its saved weights file.
        config: ``SpeechT5HifiGanConfig`` or its ``config.json`` dict.
        n_fft, f_min, f_max, mel_scale, log_floor: the mel the weights were trained on (not in the config).
    """
    model = HiFiGAN(
        n_fft=n_fft, f_min=f_min, f_max=f_max, mel_scale=mel_scale, log_floor=log_floor, **speecht5_kwargs(config)
    )
    renamed = {("ups." + k[len("upsampler.") :] if k.startswith("upsampler.") else k): v for k, v in state_dict.items()}
    converted = convert_weight_norm(renamed, list(model.state_dict()))
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ValueError(f"load_speecht5_state_dict: weights do not fit the config: {error}") from error
    return model
