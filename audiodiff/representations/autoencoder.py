"""A trained autoencoder's latents as the diffusion representation: a mel VAE (decoded to a log-mel, then voiced by
the vocoder) or a waveform VAE (decoded to audio by itself).

Two factories build it, both usable as Hydra targets:

- :func:`from_export` loads the autoencoder stage's export folder (`folder:`); training configurations use it
  (conf/representation/autoencoder.yaml).
- :func:`from_config` builds the same architecture from its constructor arguments (`autoencoder:`) with untrained
  weights, which a diffusion export's `representation.*` state then fills: the autoencoder's weights, its log-mel
  statistics and the latent statistics all travel with the diffusion model, so an export does not need the folder.
  :func:`inference_config` turns a `from_export` node into that `from_config` node.

encode uses the posterior mean, not a sample: a deterministic function of the audio gives the same diffusion target
for a clip every time (latent caches, fitted statistics and an exactly resumed run agree), and the denoiser spends no
capacity on reproducing the posterior's noise, which the small KL weight keeps well below the latents' spread. The
decoder was trained on samples drawn around that mean, and the autoencoder stage validates through the mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from audiodiff.autoencoders.base import VariationalAutoencoder
from audiodiff.autoencoders.loading import build_autoencoder, load_autoencoder, read_export_config
from audiodiff.autoencoders.mel_vae import MelVAE
from audiodiff.representations.base import Representation, channel_statistics
from audiodiff.representations.mel import check_vocoder

FROM_EXPORT_TARGET = "audiodiff.representations.autoencoder.from_export"
FROM_CONFIG_TARGET = "audiodiff.representations.autoencoder.from_config"
KINDS = ("mel_vae", "waveform_vae")  # index in `autoencoder_spec`
                  # not blown up)
MEL_KEYS = ("n_fft", "hop_length", "n_mels", "f_min", "f_max", "log_floor")
_SPEC_FIELDS = ("kind", "sample_rate", "latent_hop", "latent_channels", "parameters")


def _describe_spec(spec: list[int]) -> str:
    kind = KINDS[spec[0]] if 0 <= spec[0] < len(KINDS) else f"kind #{spec[0]}"
    return f"a {kind} autoencoder (" + ", ".join(f"{k} {v}" for k, v in zip(_SPEC_FIELDS[1:], spec[1:],
                                                                              strict=True)) + ")"


class AutoencoderRepresentation(Representation):
    """z = (posterior mean − mean) / std per latent channel; wav = decode(z · std + mean).

    wav: [B, C, T] at `sample_rate` Hz ↔ z: [B, C · D, L] with D the autoencoder's latent channels (the autoencoder
    is mono: each audio channel is encoded and decoded on its own, its latents stacked channel-major, left first, as
    the mel representation stacks its mels; the statistics [D] are shared by the channels) and
    - waveform VAE: L = ceil(T / latent_hop) (T zero-padded); decode gives L · latent_hop samples;
    - mel VAE: L = ceil((T // hop_length + 1) / downsample) (the mel silence-padded); decode gives
      L · downsample mel frames, which the vocoder turns into (L · downsample − 1) · hop_length samples
      (Griffin-Lim) or L · downsample · hop_length (HiFi-GAN).
    Callers crop to the length they asked for; `num_frames(seconds)` is enough frames to decode at least that long.
    `mean`/`std` [D] are buffers fitted once on training audio (`fit_statistics`) and stored with the model, beside
    the autoencoder's weights (frozen, always in eval mode).

    Args:
        autoencoder: a trained MelVAE or WaveformVAE.
        vocoder: the mel VAE's vocoder (linear-magnitude mel [B, n_mels, F] → wav [B, T]), checked against its mel;
            None for an encode-only representation. Must be None for a waveform VAE.
        sample_rate: what the run's configuration expects (data are resampled to it); None takes the autoencoder's.
        n_fft, hop_length, n_mels, f_min, f_max, log_floor: the mel a mel VAE decodes to, as the configuration
            states it for the vocoder group; None skips a key. Any that differ from the autoencoder's are refused,
            naming both sides; for a waveform VAE all must be None.
    """

    def __init__(self, autoencoder: VariationalAutoencoder, vocoder: nn.Module | None = None, *,
                 sample_rate: int | None = None, n_fft: int | None = None, hop_length: int | None = None,
                 n_mels: int | None = None, f_min: float | None = None, f_max: float | None = None,
                 log_floor: float | None = None, channels: int = 1) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"AutoencoderRepresentation: channels must be >= 1, got {channels}")
        expected = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max,
                    "log_floor": log_floor}
        _check_settings(autoencoder, sample_rate, {k: v for k, v in expected.items() if v is not None}, vocoder)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.vocoder = vocoder
        self.kind = autoencoder.kind
        self.sample_rate = autoencoder.sample_rate
        self.channels = channels
        self.latent_channels = channels * autoencoder.latent_channels
        self.latent_hop = autoencoder.latent_hop
        self.frame_rate = autoencoder.frame_rate
        spec = [KINDS.index(self.kind), self.sample_rate, self.latent_hop, autoencoder.latent_channels,
                autoencoder.num_parameters()]
        self.register_buffer("mean", torch.zeros(autoencoder.latent_channels))
        self.register_buffer("std", torch.ones(autoencoder.latent_channels))
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("autoencoder_spec", torch.tensor(spec, dtype=torch.int64))

    def train(self, mode: bool = True) -> AutoencoderRepresentation:
        """The autoencoder stays in eval mode whatever mode the surrounding model is put in."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def signature(self) -> dict:
        return {**super().signature(), "autoencoder": self.kind, "hop_length": self.latent_hop,
                "parameters": int(self.autoencoder_spec[-1])}

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, sample_rate={self.sample_rate}, latent_hop={self.latent_hop}, "
                f"latent_channels={self.latent_channels}")

    def num_frames(self, seconds: float) -> int:
        """Latent frames whose decoding covers `seconds` (at least that many samples from either vocoder)."""
        samples = int(round(seconds * self.sample_rate))
        if isinstance(self.autoencoder, MelVAE):
            mel_frames = -(-samples // self.autoencoder.hop_length) + 1
            return -(-mel_frames // self.autoencoder.downsample)
        return -(-samples // self.latent_hop)

    def _posterior_means(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → the autoencoder's unnormalised posterior means of each channel [B · C, D, L]."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"AutoencoderRepresentation.encode: expected wav [B, {self.channels}, T] "
                             f"({self.channels} channel(s)), got {tuple(wav.shape)}")
        weight = next(self.autoencoder.parameters())
        return self.autoencoder.encode(wav.reshape(-1, 1, wav.shape[-1]).to(weight)).mean

    def latents(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → the unnormalised posterior means [B, C · D, L], channel-major."""
        return self._posterior_means(wav).reshape(wav.shape[0], self.latent_channels, -1)

    def _stats(self) -> tuple[Tensor, Tensor]:
        """mean, std as [C · D, 1] columns (the per-latent-channel statistics repeated for every audio channel)."""
        return self.mean.repeat(self.channels)[:, None], self.std.repeat(self.channels)[:, None]

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → z [B, C · D, L], roughly zero-mean unit-variance per channel."""
        mean, std = self._stats()
        return (self.latents(wav).to(self.mean.dtype) - mean) / std

    def decode(self, z: Tensor) -> Tensor:
        """z [B, C · D, L] → wav [B, C, T'] at `sample_rate` Hz (T' as in the class docstring)."""
        if z.dim() != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"AutoencoderRepresentation.decode: expected z [B, {self.latent_channels}, L], "
                             f"got {tuple(z.shape)}")
        weight = next(self.autoencoder.parameters())
        mean, std = self._stats()
        latent = (z.to(self.mean.dtype) * std + mean).to(weight)
        latent = latent.reshape(-1, self.autoencoder.latent_channels, z.shape[-1])  # [B · C, D, L]
        if not isinstance(self.autoencoder, MelVAE):
            wav = self.autoencoder.decode(latent)
        elif self.vocoder is None:
            raise RuntimeError("AutoencoderRepresentation.decode: a mel VAE needs a vocoder, and none is configured")
        else:
            wav = self.vocoder(self.autoencoder.mel.decode_mel(self.autoencoder.decode(latent)))
        return wav.reshape(z.shape[0], self.channels, -1)

    @torch.no_grad()
    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Per-latent-channel mean and (unbiased) std of the posterior means over every latent frame of every audio
        channel of a list of wav batches [B, C, T]; a std below STD_FLOOR times the RMS std over channels is raised
        to it.

        Accumulated in float64 batch by batch with the pairwise update of Chan, Golub & LeVeque (1979).
        """
        mean, std = channel_statistics((self._posterior_means(w.to(self.mean.device)) for w in wavs),
                                       self.autoencoder.latent_channels, "AutoencoderRepresentation")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Refuse weights and statistics made with another autoencoder (kind, sample rate, hop, latent size or
        parameter count), naming both; `args` are torch's (local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs)."""
        saved = state_dict.get(prefix + "autoencoder_spec")
        own = [int(v) for v in self.autoencoder_spec.tolist()]
        if saved is not None and [int(v) for v in saved.tolist()] != own:
            args[-1].append(f"{prefix}autoencoder_spec: these weights were made with "
                            f"{_describe_spec([int(v) for v in saved.tolist()])}, but this representation's is "
                            f"{_describe_spec(own)}")
        super()._load_from_state_dict(state_dict, prefix, *args)


def _check_settings(autoencoder: VariationalAutoencoder, sample_rate: int | None, mel: dict[str, Any],
                    vocoder: nn.Module | None) -> None:
    """Refuse a configuration that asks for another sample rate or mel than the autoencoder's, or a vocoder that does
    not fit (a waveform VAE decodes by itself; a mel VAE's vocoder must take its mel)."""
    if not isinstance(autoencoder, VariationalAutoencoder):
        raise TypeError(f"AutoencoderRepresentation: expected a MelVAE or WaveformVAE, got "
                        f"{type(autoencoder).__name__}")
    if sample_rate is not None and int(sample_rate) != autoencoder.sample_rate:
        raise ValueError(f"AutoencoderRepresentation: the autoencoder has sample_rate {autoencoder.sample_rate}, but "
                         f"the configuration asks for sample_rate {sample_rate} (representation.sample_rate)")
    if isinstance(autoencoder, MelVAE):
        wrong = {k: (v, getattr(autoencoder, k)) for k, v in mel.items() if float(v) != float(getattr(autoencoder, k))}
        if wrong:
            detail = ", ".join(f"{k}: configuration {a}, autoencoder {b}" for k, (a, b) in wrong.items())
            raise ValueError(f"AutoencoderRepresentation: the mel VAE's mel differs from the configuration's "
                             f"(representation.*: {detail})")
        if vocoder is not None:
            check_vocoder(vocoder, autoencoder.mel.mel, autoencoder.log_floor)
        return
    if mel:
        raise ValueError(f"AutoencoderRepresentation: a {autoencoder.kind} has no mel, but the configuration sets "
                         f"{sorted(mel)} (representation.*: leave them null)")
    if vocoder is not None:
        raise ValueError(f"AutoencoderRepresentation: a {autoencoder.kind} decodes with its own decoder, but a vocoder "
                         f"({type(vocoder).__name__}) was given: set the vocoder to null")


def from_export(folder: str | Path, vocoder: nn.Module | None = None, **settings: Any) -> AutoencoderRepresentation:
    """The representation of the trained autoencoder exported to `folder` (latent statistics not yet fitted).
    `settings`: sample_rate and the mel keys of :class:`AutoencoderRepresentation`, checked against it."""
    return AutoencoderRepresentation(load_autoencoder(folder), vocoder, **settings)


def from_config(autoencoder: Mapping[str, Any] | VariationalAutoencoder, vocoder: nn.Module | None = None,
                **settings: Any) -> AutoencoderRepresentation:
    """The representation of an autoencoder built from its constructor arguments (`_target_` included), in inference
    form with untrained weights: load a diffusion export's `representation.*` state into it. Hydra instantiates the
    nested `autoencoder:` node before the call; the module it builds is brought to inference form here. `settings` as
    for :func:`from_export`."""
    if isinstance(autoencoder, VariationalAutoencoder):
        model = autoencoder.remove_weight_norm().eval().requires_grad_(False)
    else:
        model = build_autoencoder(autoencoder)
    return AutoencoderRepresentation(model, vocoder, **settings)


def inference_config(node: Mapping[str, Any]) -> dict[str, Any]:
    """The `representation` node a diffusion export should hold: a resolved `from_export` node becomes a
    `from_config` node carrying the architecture read from the folder's config.yaml (every other key kept), so the
    export needs the weights it holds and nothing else. Any other node comes back unchanged (as a plain dict)."""
    node = dict(node)
    if node.get("_target_") != FROM_EXPORT_TARGET:
        return node
    folder = node.pop("folder")
    return {"_target_": FROM_CONFIG_TARGET, "autoencoder": read_export_config(folder),
            **{k: v for k, v in node.items() if k != "_target_"}}
