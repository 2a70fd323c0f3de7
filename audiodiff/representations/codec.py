"""Continuous latents of a pretrained neural audio codec as the diffusion representation.

EnCodec (Défossez et al. 2022, "High Fidelity Neural Audio Compression") and DAC (Kumar et al. 2023,
"High-Fidelity Audio Compression with Improved RVQGAN"), through transformers' `EncodecModel` / `DacModel`.

The latent is the codec encoder's output *before* residual vector quantisation, z_e [B, hidden_size, L], decoded by
the codec's own decoder without quantising (the decoder was trained on the RVQ reconstruction of z_e, which
approaches z_e as codebooks are added). For DAC this is the 1024-wide `DacEncoder` output of descript/dac_44khz, not
the quantiser's `projected_latents` (n_codebooks × codebook_dim): each codebook projects the residual left by the
earlier, *quantised* stages, so those projections are no function of the audio without quantising, and the decoder
only reads the sum of their out-projections — they offer no continuous path back to audio.

The codec's weights are frozen and, like the text encoder's, load from their source (`name_or_path`) rather than
travelling in checkpoints and exports: the codec is held outside this module's parameter tree (it follows `.to()`
and dtype casts through `_apply`), so `state_dict()` holds only the latent statistics and the codec's description,
which loading checks against the codec found now.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import is_offline_mode
from torch import Tensor, nn
from transformers import AutoConfig, DacModel, EncodecModel, PretrainedConfig, PreTrainedModel

from audiodiff.representations.base import Representation, channel_statistics

CodecKind = Literal["encodec", "dac"]
CODEC_MODELS: dict[str, type[PreTrainedModel]] = {"encodec": EncodecModel, "dac": DacModel}
                  # channel is not blown up
_SPEC_FIELDS = ("sample_rate", "channels", "hop_length", "latent_channels")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/")) or Path(name).is_absolute() or name.count("/") > 1


def load_codec(kind: CodecKind, name_or_path: str) -> PreTrainedModel:
    """The transformers codec model of `kind` from a local `save_pretrained` folder or a hub id.

    A local folder never touches the network; a hub id is read from the Hugging Face cache and fetched only when the
    cache lacks it and offline mode (HF_HUB_OFFLINE) is off. Raises when the checkpoint is of another model type or
    lacks encoder or decoder weights (which would otherwise be randomly initialised and decode noise).
    """
    if kind not in CODEC_MODELS:
        raise ValueError(f"codec kind: expected one of {sorted(CODEC_MODELS)}, got {kind!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"codec '{name_or_path}': {path} has no config.json (expected a folder written "
                                    "by transformers' save_pretrained)")
        source, tries = str(path), (True,)
    elif _looks_like_path(name_or_path):
        raise FileNotFoundError(f"codec '{name_or_path}': no such folder {path}")
    else:
        source, tries = name_or_path, (True,) if is_offline_mode() else (True, False)
    for attempt, local_only in enumerate(tries):
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
            if config.model_type != kind:
                raise ValueError(f"codec '{name_or_path}' is a {config.model_type!r} checkpoint, but the "
                                 f"representation's kind is {kind!r}")
            model, info = CODEC_MODELS[kind].from_pretrained(source, config=config, local_files_only=local_only,
                                                             output_loading_info=True)
            break
        except OSError as err:
            if attempt == len(tries) - 1:
                raise OSError(f"codec '{name_or_path}' could not be loaded from {source}: it must be available "
                              "locally (a save_pretrained folder, or already in the Hugging Face cache for offline "
                              f"use); cause: {err}") from err
    missing = sorted(k for k in info["missing_keys"] if k.startswith(("encoder.", "decoder.")))
    if missing:
        raise ValueError(f"codec '{name_or_path}': checkpoint {source} lacks {len(missing)} encoder/decoder weights "
                         f"of {type(model).__name__}, e.g. {missing[:5]}")
    return model


def _codec_facts(kind: CodecKind, config: PretrainedConfig) -> dict[str, int]:
    """sample_rate (Hz), channels, hop_length (samples per latent frame), latent_channels of a codec config."""
    return {"sample_rate": int(config.sampling_rate),
            "channels": int(config.audio_channels) if kind == "encodec" else 1,  # DAC's encoder takes mono audio
            "hop_length": int(config.hop_length), "latent_channels": int(config.hidden_size)}


def _describe_spec(spec: list[int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(_SPEC_FIELDS, spec, strict=True))


class CodecRepresentation(Representation):
    """z = (z_e − mean) / std per latent channel, z_e = codec encoder(wav); wav = codec decoder(z · std + mean).

    wav: [B, C, T] at `sample_rate` Hz ↔ z: [B, D, L] with D the codec's hidden size and L = ceil(T / hop_length):
    `encode` zero-pads T on the right to a multiple of the codec's hop (EnCodec 24 kHz: 320, 75 frames/s; DAC
    44.1 kHz: 512, ≈86.13 frames/s), and `decode` gives exactly L · hop_length samples (callers crop).
    `mean`/`std` [D] are buffers fitted once on training audio (`fit_statistics`) and stored with the model.

    kind: "encodec" (transformers `EncodecModel`) or "dac" (`DacModel`).
    name_or_path: a local `save_pretrained` folder or a hub id such as facebook/encodec_24khz, descript/dac_44khz.
    sample_rate, channels: what the run's configuration expects (the data pipeline resamples to `sample_rate`);
      None takes the codec's. A codec that differs is refused, naming both sides.
    vocoder: must be None — the codec decodes its own latents (build_model passes the `vocoder` group here).

    EnCodec checkpoints with `normalize: true` (facebook/encodec_48khz) are refused: they rescale every chunk to unit
    loudness and keep the scale beside the codes, outside the latent, so the latent alone cannot give the audio back.
    The encoder runs on the whole clip (no chunking).
    """

    def __init__(self, kind: CodecKind, name_or_path: str, sample_rate: int | None = None,
                 channels: int | None = None, vocoder: nn.Module | None = None) -> None:
        super().__init__()
        if vocoder is not None:
            raise ValueError(f"CodecRepresentation decodes with the codec's own decoder, but a vocoder "
                             f"({type(vocoder).__name__}) was given: set the vocoder to null")
        model = load_codec(kind, name_or_path)
        config = model.config
        if kind == "encodec" and config.normalize:
            raise ValueError(f"codec '{name_or_path}': EnCodec with normalize=true keeps a loudness scale per chunk "
                             "outside its latent, so continuous latents cannot be decoded on their own; use a "
                             "checkpoint without normalisation (e.g. facebook/encodec_24khz)")
        facts = _codec_facts(kind, config)
        for field, wanted in (("sample_rate", sample_rate), ("channels", channels)):
            if wanted is not None and int(wanted) != facts[field]:
                raise ValueError(f"CodecRepresentation: codec '{name_or_path}' has {field} {facts[field]}, but the "
                                 f"configuration asks for {field} {wanted} (representation.{field})")
        self.kind = kind
        self.name_or_path = name_or_path
        self.sample_rate = facts["sample_rate"]
        self.channels = facts["channels"]
        self.hop_length = facts["hop_length"]
        self.latent_channels = facts["latent_channels"]
        self.frame_rate = self.sample_rate / self.hop_length
        # Frozen and always in eval mode; deliberately not a submodule (see the module docstring).
        codec = nn.ModuleDict({"encoder": model.encoder, "decoder": model.decoder}).eval().requires_grad_(False)
        object.__setattr__(self, "_codec", codec)
        self.register_buffer("mean", torch.zeros(self.latent_channels))
        self.register_buffer("std", torch.ones(self.latent_channels))
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("codec_spec", torch.tensor([facts[k] for k in _SPEC_FIELDS], dtype=torch.int64))

    @property
    def codec(self) -> nn.ModuleDict:
        """The frozen codec's `encoder` and `decoder` modules."""
        return self._codec

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> CodecRepresentation:
        """`.to(device)`, `.half()` and the like also move the codec held outside the parameter tree."""
        super()._apply(fn, recurse)
        if recurse:
            self._codec._apply(fn)
        return self

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, name_or_path={self.name_or_path!r}, sample_rate={self.sample_rate}, "
                f"channels={self.channels}, hop_length={self.hop_length}, latent_channels={self.latent_channels}")

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def encoder_state(self) -> dict[str, Tensor]:
        """The statistics and the codec's own weights, which live outside the module tree."""
        codec = {f"codec.{k}": v for k, v in self._codec.state_dict().items()}
        return {**super().encoder_state(), **codec}

    def signature(self) -> dict:
        return {**super().signature(), "kind": self.kind, "codec": self.name_or_path, "hop_length": self.hop_length}

    def num_frames(self, seconds: float) -> int:
        """Frames covering `seconds`: ceil(samples / hop_length), so decoding gives at least that many samples."""
        samples = int(round(seconds * self.sample_rate))
        return -(-samples // self.hop_length)

    def latents(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → the codec's unnormalised continuous latent z_e [B, D, ceil(T / hop_length)]."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"CodecRepresentation.encode: expected wav [B, {self.channels}, T] (the codec's "
                             f"channels), got {tuple(wav.shape)}")
        weight = next(self._codec.parameters())
        pad = -wav.shape[-1] % self.hop_length
        return self._codec["encoder"](nn.functional.pad(wav.to(weight), (0, pad)))

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → z [B, D, L], L = ceil(T / hop_length), roughly zero-mean unit-variance per channel."""
        z = self.latents(wav).to(self.mean.dtype)
        return (z - self.mean[:, None]) / self.std[:, None]

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → wav [B, C, L · hop_length] at `sample_rate` Hz, decoded without quantisation."""
        if z.dim() != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"CodecRepresentation.decode: expected z [B, {self.latent_channels}, L], "
                             f"got {tuple(z.shape)}")
        weight = next(self._codec.parameters())
        wav = self._codec["decoder"]((z.to(self.mean.dtype) * self.std[:, None] + self.mean[:, None]).to(weight))
        samples = z.shape[-1] * self.hop_length  # odd DAC strides give one sample less per stage
        return nn.functional.pad(wav, (0, max(0, samples - wav.shape[-1])))[..., :samples]

    @torch.no_grad()
    def fit_statistics(self, wavs: list[Tensor]) -> None:
        """Per-channel mean and (unbiased) std of z_e over every frame of a list of wav batches [B, C, T]; a std
        below STD_FLOOR times the RMS std over channels is raised to it.

        Accumulated in float64 batch by batch with the pairwise update of Chan, Golub & LeVeque (1979), so the
        sample need not fit in memory at once.
        """
        mean, std = channel_statistics((self.latents(w.to(self.mean.device)) for w in wavs), self.latent_channels,
                                       "CodecRepresentation")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Refuse statistics fitted on another codec's latents (sample rate, channels, hop or latent size), naming
        both codecs; `args` are torch's (local_metadata, strict, missing_keys, unexpected_keys, error_msgs)."""
        saved = state_dict.get(prefix + "codec_spec")
        own = self.codec_spec.tolist()
        if saved is not None and [int(v) for v in saved.tolist()] != own:
            args[-1].append(f"{prefix}codec_spec: these weights were made with a codec of "
                            f"{_describe_spec([int(v) for v in saved.tolist()])}, but the codec loaded now "
                            f"('{self.name_or_path}') has {_describe_spec(own)}")
        super()._load_from_state_dict(state_dict, prefix, *args)
