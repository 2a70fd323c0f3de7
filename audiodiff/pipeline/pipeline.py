"""Inference API: load an exported model folder (or a training run) and turn prompts into audio.

    pipe = AudioDiffusionPipeline.from_pretrained("runs/sfx/seed0/export")
    out = pipe(["three short high beeps"], duration=3.0, steps=25, guidance=3.0, seed=0)
    out.audio  # [B, C, T] float32 at out.sample_rate Hz
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audiodiff.diffusion.editing import keep_mask
from audiodiff.diffusion.samplers import NoiseSampler
from audiodiff.models.adapters import (
    Adapter,
    AdapterError,
    apply_adapter,
    merged_state,
    read_adapter,
    set_adapter_strength,
    weights_hash,
)
from audiodiff.models.build import build_model
from audiodiff.models.conversion import ConversionError
from audiodiff.models.export_format import (
    CONFIG,
    TEXT_ENCODER_DIR,
    TEXT_ENCODER_PREFIX,
    WEIGHTS,
    carried_text_encoder,
    read_export,
    read_info,
    with_local_parts,
    write_export,
)
from audiodiff.models.model import DiffusionModel, SamplerSettings, seed_list
from audiodiff.models.published import family_of
from audiodiff.models.stable_audio_keys import KeyMapError
from audiodiff.pipeline.near_copy import COPY_SEED_STRIDE, CopyVerdict, NearCopyRefused, OutputGuard
from audiodiff.pipeline.policy import PromptPolicy
from audiodiff.watermark import Watermarker, describe_mark, hex_bits, watermarker

AudioInput = Tensor | str | Path  # samples [C, T] / [B, C, T] at the model's rate, or an audio file
MIN_INPUT_SECONDS = 0.1
WINDOW_SEED_STRIDE = 1_000_003  # window j of a long-form clip draws from seed + j · stride
POSTERIOR_SEED_OFFSET = 7_919  # an audio-to-audio input's posterior sample draws from seed + this
MIN_WATERMARK_RATE = 8_000  # Hz: models below this rate (tiny test models) cannot carry the mark's band
_log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model folder or checkpoint that is missing, incomplete or does not fit the code."""


@dataclass(frozen=True)
class GenerationOutput:
    audio: Tensor  # [B, C, T] float32
    sample_rate: int  # Hz
    settings: SamplerSettings
    seeds: list[int]
    duration: float  # seconds
    joins: tuple[float, ...] = ()  # seconds where a continuation / long-form window's new content begins
    watermark: dict[str, Any] | None = None  # the mark applied (method, key fingerprint, message); None: unmarked
    license_warning: str | None = None  # the model's training-data licence warning (export.json), if any
    guard: tuple[dict[str, Any], ...] | None = None  # per clip: the near-copy guard's result; None: not checked


class AudioDiffusionPipeline:
    """Prompt → waveform with a trained DiffusionModel (EMA weights). Every output carries an imperceptible
    watermark (`audiodiff.watermark`, the built-in spectral method with the public key) whose message is the first
    16 bits of the model's content hash, unless `watermark=False` (or set `pipe.watermark = None`); a Watermarker
    (`audiodiff.watermark.watermarker(method, key)`) chooses another method or key.

    near_copy_guard: an OutputGuard (`audiodiff.guard.NearCopyGuard.from_export(folder)`) that compares each
    text-to-audio output with the training set's index and regenerates or refuses near copies
    (`audiodiff.pipeline.near_copy`); None (the default): outputs are not checked."""

    def __init__(self, model: DiffusionModel, model_id: str = "", config: dict[str, Any] | None = None,
                 watermark: bool | Watermarker = True, near_copy_guard: OutputGuard | None = None) -> None:
        self.model = model.eval()
        self.watermark: Watermarker | None = (watermarker() if watermark is True else None if watermark is False
                                              else watermark)
        self.model_id = model_id
        self.config = config  # the export's config.yaml (what save_pretrained writes)
        self.adapters: dict[str, float] = {}  # LoRA adapters loaded: name → strength
        self.adapter_sources: dict[str, str] = {}  # name → the file it was read from
        self._base_hash: str | None = None
        self.license_warning: str | None = None  # the export's warning about its training data's licences
        self.prompt_policy: PromptPolicy | None = None  # refuses prompts before any work (`.policy`); None: off
        self.near_copy_guard = near_copy_guard  # checks text-to-audio outputs against the training set; None: off
        # the text encoder's weights belong to the model (a fine-tune trained them): save_pretrained writes them
        self.trained_text_encoder = False

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def channels(self) -> int:
        """Audio channels C of what the model generates and edits (its representation's)."""
        return int(self.model.representation.channels)

    def check_channels(self, channels: int | None) -> None:
        """Refuse a request for `channels` output channels other than the model's (None: the model's). A mono model
        is never upmixed, nor a stereo one downmixed: duplicated or averaged channels are not what was asked for."""
        if channels is not None and int(channels) != self.channels:
            kind = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels}-channel")
            raise ValueError(f"channels: this model ({self.model_id}) generates {self.channels} channel(s) ({kind}), "
                             f"got channels={channels}; use a model trained with data.channels={channels}")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        watermark: bool | Watermarker = True,
                        near_copy_guard: OutputGuard | None = None) -> AudioDiffusionPipeline:
        """Load an export folder (config.yaml + model.safetensors), or a training run directory through the
        `export/` folder training wrote into it. A training checkpoint is not loaded here: `python -m
        audiodiff.export run=<run dir or .ckpt>` turns it into an export folder (the generate command and the web
        page do that for you). Building resolves only registered components (`audiodiff.models.registry`).
        watermark: as for the constructor (True: the built-in mark; False: outputs unmarked).
        near_copy_guard: as for the constructor (`audiodiff.guard.NearCopyGuard.from_export(path)`)."""
        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such model folder")
        family = family_of(path)
        if family is not None:  # a published folder (Stable Audio Open, Stable Audio 3): converted in memory
            try:
                cfg, state, encoder_files, _ = family.converted(path, None)
            except (ConversionError, KeyMapError) as err:
                raise ModelLoadError(str(err)) from err
            with tempfile.TemporaryDirectory(prefix="audiodiff-text-") as tmp:  # the text encoder files, linked
                for name, file in encoder_files.items():
                    os.symlink(file.resolve(), Path(tmp) / name)
                cfg = {**cfg, "text_encoder": {**cfg["text_encoder"], "name_or_path": tmp}}
                return cls._build(cfg, state, str(path), device, watermark)
        folder = path
        if path.is_dir() and not (path / WEIGHTS).exists() and (path / "export" / WEIGHTS).exists():
            folder = path / "export"  # a run directory whose training finished
        if path.is_file() or (path.is_dir() and not (folder / WEIGHTS).exists() and not (folder / CONFIG).exists()
                              and (path / "checkpoints").is_dir()):
            raise ModelLoadError(f"{path}: a training checkpoint or an unexported run, not a model folder; export it "
                                 f"first: python -m audiodiff.export run={path}")
        try:
            cfg, state = read_export(folder)
            info = read_info(folder)
        except (FileNotFoundError, ValueError) as err:
            raise ModelLoadError(str(err)) from err
        pipe = cls._build(with_local_parts(cfg, folder), state, str(folder), device, watermark)
        pipe.model_id = str(path)
        pipe.license_warning = info.get("license_warning") or None
        pipe.near_copy_guard = near_copy_guard
        return pipe

    @classmethod
    def _build(cls, cfg: dict[str, Any], state: dict[str, Tensor], source: str, device: str | torch.device,
               watermark: bool | Watermarker = True) -> AudioDiffusionPipeline:
        """The pipeline of a model config and its inference weights; errors name `source`."""
        try:
            model = build_model(cfg)
        except Exception as err:  # an unknown target, a missing key, a size that does not fit
            raise ModelLoadError(f"{source}: cannot build the model from its config: {err}") from err
        load_inference_state(model, state, source)
        pipe = cls(model.to(device), model_id=source, config=cfg, watermark=watermark)
        pipe.trained_text_encoder = any(k.startswith(TEXT_ENCODER_PREFIX) for k in state)
        return pipe

    @property
    def base_hash(self) -> str:
        """Content hash of the denoiser's own weights, loaded adapters not counted
        (:func:`audiodiff.models.adapters.weights_hash`); adapters record the hash of the model they were trained on."""
        if self._base_hash is None:
            self._base_hash = weights_hash(self.model.net.state_dict())
        return self._base_hash

    def load_adapter(self, adapter: str | Path | Adapter, strength: float = 1.0, name: str | None = None,
                     force: bool = False) -> str:
        """Add a LoRA adapter (an adapter file, a folder holding `adapter.safetensors`, or an Adapter) at `strength`
        (its update scaled by it: 0 = off, 1 = as trained), active together with those loaded before; returns its
        name. Reading the file runs no code (safetensors and JSON).

        Raises:
            AdapterError: the file is not an adapter, or it was trained on another base model (naming both hashes;
                `force=True` applies it anyway when its modules fit), or its modules do not fit this denoiser.
        """
        source = adapter if isinstance(adapter, Adapter) else read_adapter(adapter)
        where = "the adapter" if isinstance(adapter, Adapter) else str(adapter)
        if not math.isfinite(float(strength)):
            raise ValueError(f"strength: expected a finite number, got {strength!r}")
        if source.base_hash != self.base_hash and not force:
            raise AdapterError(f"{where}: trained on base model {source.base_hash}, but this model "
                               f"({self.model_id or 'loaded'}) is {self.base_hash}; load the model it was trained on, "
                               f"or apply it anyway with force=True (generate: force_adapter=true)")
        name = name or f"adapter{len(self.adapters)}"
        if name in self.adapters or not name.isidentifier():
            raise ValueError(f"adapter name {name!r}: expected a new identifier (loaded: {sorted(self.adapters)})")
        text = source.text_part()
        apply_adapter(self.model.net, source.denoiser_part(), name, float(strength))
        if text is not None:  # LoRA of the text encoder's attention, trained with the denoiser's
            apply_adapter(self.model.text_encoder.model, text, name, float(strength))
            self.trained_text_encoder = True
        self.model.eval()
        self.adapters[name] = float(strength)
        self.adapter_sources[name] = where
        return name

    def set_adapter_strength(self, name: str, strength: float) -> None:
        """Change the strength of loaded adapter `name` (0 = off, 1 = as trained)."""
        if name not in self.adapters:
            raise ValueError(f"adapter {name!r}: not loaded (loaded: {sorted(self.adapters)})")
        if not math.isfinite(float(strength)):
            raise ValueError(f"strength: expected a finite number, got {strength!r}")
        set_adapter_strength(self.model.net, name, float(strength))
        if hasattr(self.model.text_encoder, "model"):
            set_adapter_strength(self.model.text_encoder.model, name, float(strength))
        self.adapters[name] = float(strength)

    def save_pretrained(self, out: str | Path, card: dict[str, Any] | None = None,
                        copies: dict[str, Path] | None = None) -> Path:
        """Write this model as a new export folder, the loaded adapters merged into the denoiser's weights at their
        strengths (W + Σ strength · (alpha / r) · B A); `copies` ({name: file}) go into the folder too. A text
        encoder whose weights were trained (`trained_text_encoder`: its own weights in the loaded export, or an
        adapter of it) is written too, its adapters merged; otherwise it loads from its source."""
        if self.config is None:
            raise ValueError("save_pretrained: this pipeline was not loaded from an export folder (no config)")
        own = {k: v for k, v in self.model.state_dict().items()
               if not k.startswith(TEXT_ENCODER_PREFIX) and not k.startswith("net.")}
        state = {**own, **{f"net.{k}": v for k, v in merged_state(self.model.net).items()}}
        if self.trained_text_encoder:
            encoder = self.model.text_encoder.model
            state.update({f"{TEXT_ENCODER_PREFIX}model.{k}": v for k, v in merged_state(encoder).items()})
        info = {"base": self.model_id, **({"adapters": dict(self.adapters)} if self.adapters else {}), **(card or {})}
        config, carried = self.config, carried_text_encoder(self.config)
        if carried:  # the text encoder this model's folder carries goes into the new folder too
            config = {**config, "text_encoder": {**config["text_encoder"], "name_or_path": TEXT_ENCODER_DIR}}
        return write_export(out, state, config, info, {**carried, **(copies or {})})

    def __call__(self, prompts: str | list[str], duration: float | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int | list[int] = 0, sampler: str | None = None,
                 negative_prompts: str | list[str] | None = None, progress: bool = False,
                 noise_sampler: NoiseSampler | None = None, **options: Any) -> GenerationOutput:
        """Generate one clip per prompt (prompt i with seed `seed + i`, or seed[i] for a list). Unset settings fall
        back to the model's defaults; `options` are further SamplerSettings fields (spacing, eta, s_churn,
        guidance_rescale, guidance_interval, shift). A single negative prompt applies to every prompt.
        progress: show a progress bar over sampler steps. noise_sampler: the SDE samplers' step noise
        (`audiodiff.diffusion.samplers.NoiseSampler`, e.g. a Brownian tree) instead of draws from the seeds.
        With a `near_copy_guard`, a clip it flags is generated again from seed + k · 7919993 (k = 1, 2, …, up to
        the guard's `tries`), or refused at once (`on_copy="refuse"`): NearCopyRefused names the training clip."""
        prompts, negative_prompts, settings, seeds = self._request(prompts, negative_prompts, seed, steps, guidance,
                                                                   sampler, options)
        duration = self.check_request(prompts, duration, negative_prompts)

        def generate(items: list[int], item_seeds: list[int]) -> Tensor:
            negatives = None if negative_prompts is None else [negative_prompts[i] for i in items]
            with _StepBar(settings.steps, progress) as bar:
                return self.model.generate([prompts[i] for i in items], duration, settings, seed=item_seeds,
                                           negative_prompts=negatives, callback=bar.callback,
                                           noise_sampler=noise_sampler).float().cpu()

        wav = generate(list(range(len(prompts))), seeds)
        if self.near_copy_guard is None:
            return self._marked(GenerationOutput(wav, self.sample_rate, settings, seeds, duration))
        wav, used, records, refused = self._guarded(wav, seeds, generate)
        output = self._marked(GenerationOutput(wav, self.sample_rate, settings, used, duration, guard=records))
        if refused:
            raise NearCopyRefused("; ".join(f"prompt {prompts[i]!r}: {records[i]['refused']}" for i in refused),
                                  output, tuple(refused))
        return output

    def _guarded(self, wav: Tensor, seeds: list[int], generate: Callable[[list[int], list[int]], Tensor]
                 ) -> tuple[Tensor, list[int], tuple[dict[str, Any], ...], list[int]]:
        """Check clips wav [B, C, T] with the near-copy guard; regenerate flagged ones (`generate(items, seeds)` →
        [len(items), C, T]) from other seeds as it says. Returns (audio, the seed each clip came from, each clip's
        guard record for its sidecar, indices of the clips refused)."""
        guard = self.near_copy_guard
        assert guard is not None
        wav, used = wav.clone(), list(seeds)
        verdicts = guard.check(wav, self.sample_rate)
        rejected: list[list[dict[str, Any]]] = [[] for _ in seeds]
        tries = guard.tries if guard.on_copy == "regenerate" else 0
        for k in range(1, tries + 1):
            flagged = [i for i, v in enumerate(verdicts) if v.flagged]
            if not flagged:
                break
            for i in flagged:
                rejected[i].append({"seed": used[i], **verdicts[i].as_dict()})
                used[i] = seeds[i] + k * COPY_SEED_STRIDE
            wav[flagged] = generate(flagged, [used[i] for i in flagged])
            for i, verdict in zip(flagged, guard.check(wav[flagged], self.sample_rate), strict=True):
                verdicts[i] = verdict
        records, refused = [], []
        for i, verdict in enumerate(verdicts):
            record: dict[str, Any] = {"guard": guard.name, "on_copy": guard.on_copy, "passed": not verdict.flagged,
                                      "nearest": verdict.as_dict(), "rejected": rejected[i]}
            if verdict.flagged:
                refused.append(i)
                record["refused"] = _refusal(verdict, used[i], len(rejected[i]))
                _log.warning("near copy refused: %s", record["refused"])
            elif rejected[i]:
                _log.info("near copy regenerated: seed %d resembled %s; kept seed %d", rejected[i][0]["seed"],
                          rejected[i][0]["clip"], used[i])
            records.append(record)
        return wav, used, tuple(records), refused

    def variation(self, audio: AudioInput, prompts: str | list[str], strength: float = 0.5,
                  steps: int | None = None, guidance: float | None = None, seed: int | list[int] = 0,
                  sampler: str | None = None, negative_prompts: str | list[str] | None = None,
                  progress: bool = False, **options: Any) -> GenerationOutput:
        """Audio-to-audio: `audio` noised to level `strength` ∈ (0, 1] and denoised towards each prompt (SDEdit).

        audio: a file, or samples [C, T] / [B, C, T] at `sample_rate` Hz (one clip for all prompts, or one each).
        Strength near 0 returns (a re-synthesis of) the input, 1 ignores it. Runs round(steps · strength) steps,
        or all of them on the log-SNR grid (`spacing=logsnr`, Stable Audio 3's), which it compresses below strength.
        """
        prompts, negative_prompts, settings, seeds = self._request(prompts, negative_prompts, seed, steps, guidance,
                                                                   sampler, options)
        self.check_request(prompts, None, negative_prompts)
        # (checks strength before any work)
        times = self.model.objective.time_grid(settings.steps, settings.spacing, settings.shift, strength)
        wav = self.load_input(audio, len(prompts))
        z, seconds = self._encode_window(wav, seeds)
        with _StepBar(len(times) - 1, progress) as bar:
            z = self.model.sample_latents(prompts, z.shape[-1], seeds, settings, negative_prompts,
                                          seconds_total=seconds, init=z, strength=strength, callback=bar.callback)
        return self._output(z, seconds, settings, seeds)

    def inpaint(self, audio: AudioInput, prompts: str | list[str], start: float, end: float,
                crossfade: float = 0.1, steps: int | None = None, guidance: float | None = None,
                seed: int | list[int] = 0, sampler: str | None = None,
                negative_prompts: str | list[str] | None = None, progress: bool = False,
                **options: Any) -> GenerationOutput:
        """Regenerate seconds [start, end) of `audio` for each prompt, keeping the rest (known-region replacement,
        `audiodiff.diffusion.editing`); works with any trained model, U-Net or DiT. A denoiser trained with a mask
        input (Stable Audio 3: `takes_local`) is given the mask and the known latents instead, from pure noise, as
        its own inpainting pipeline does.

        crossfade: seconds on each side of the range over which kept content blends into generated content (not
        used with a trained mask input, whose mask is binary).
        The whole clip is decoded again, so kept parts are the decoder's rendering of the input's latents.
        """
        prompts, negative_prompts, settings, seeds = self._request(prompts, negative_prompts, seed, steps, guidance,
                                                                   sampler, options)
        self.check_request(prompts, None, negative_prompts)
        wav = self.load_input(audio, len(prompts))
        length = wav.shape[-1] / self.sample_rate
        if not 0.0 <= start < end <= length + 1e-9:
            raise ValueError(f"inpaint range: expected 0 <= start < end <= {length:.3f} s (the clip's length), "
                             f"got start {start}, end {end}")
        z, seconds = self._encode_window(wav)
        rate = self.model.representation.frame_rate
        first, last = int(start * rate), min(z.shape[-1], max(int(start * rate) + 1, int(math.ceil(end * rate))))
        trained_mask = getattr(self.model.net, "takes_local", False)
        keep = keep_mask(z.shape[-1], [(first, last)], 0 if trained_mask else round(crossfade * rate))
        edit = {"local_keep": keep} if trained_mask else {"keep": keep}
        with _StepBar(settings.steps, progress) as bar:
            z = self.model.sample_latents(prompts, z.shape[-1], seeds, settings, negative_prompts,
                                          seconds_total=seconds, init=z, callback=bar.callback, **edit)
        return self._output(z, seconds, settings, seeds)

    def continuation(self, audio: AudioInput, prompts: str | list[str], seconds: float,
                     context: float | None = None, crossfade: float = 0.1, steps: int | None = None,
                     guidance: float | None = None, seed: int | list[int] = 0, sampler: str | None = None,
                     negative_prompts: str | list[str] | None = None, progress: bool = False,
                     **options: Any) -> GenerationOutput:
        """Extend `audio` forward by `seconds`, window by window (see `long_form`); the output holds the input
        (re-decoded) followed by the continuation. context: seconds of what precedes that each window sees
        (default half the model's window)."""
        prompts, negative_prompts, settings, seeds = self._request(prompts, negative_prompts, seed, steps, guidance,
                                                                   sampler, options)
        self.check_request(prompts, None, negative_prompts)
        if not seconds > 0:
            raise ValueError(f"seconds: expected a positive length to add, got {seconds}")
        wav = self.load_input(audio, len(prompts))
        prefix = self.model.representation.encode(wav.to(self.device))
        total = wav.shape[-1] / self.sample_rate + seconds
        return self._windowed(prompts, negative_prompts, settings, seeds, total, prefix, context, crossfade,
                              progress)

    def long_form(self, prompts: str | list[str], duration: float, context: float | None = None,
                  crossfade: float = 0.1, steps: int | None = None, guidance: float | None = None,
                  seed: int | list[int] = 0, sampler: str | None = None,
                  negative_prompts: str | list[str] | None = None, progress: bool = False,
                  **options: Any) -> GenerationOutput:
        """Audio longer than the model's window: the first window is generated, then each next window keeps the
        last `context` seconds of what exists (default half the window) and generates the rest, blending over
        `crossfade` seconds at the join; the whole latent sequence is decoded at once, so no decoder seams.
        Window j of prompt i uses seed `seeds[i] + j · 1000003`."""
        prompts, negative_prompts, settings, seeds = self._request(prompts, negative_prompts, seed, steps, guidance,
                                                                   sampler, options)
        self.check_request(prompts, None, negative_prompts)
        if not duration > 0:
            raise ValueError(f"duration: expected a positive number of seconds, got {duration}")
        return self._windowed(prompts, negative_prompts, settings, seeds, float(duration), None, context, crossfade,
                              progress)

    @property
    def device(self) -> torch.device:
        return next(self.model.net.parameters()).device

    def load_input(self, audio: AudioInput, count: int) -> Tensor:
        """Input audio (at least 0.1 s) as [count, C, T] float32 at `sample_rate` Hz: a file is decoded, resampled
        and its channels matched; a tensor ([T], [C, T] or [B, C, T] with B = 1 or count) must already be at
        `sample_rate`."""
        rep = self.model.representation
        if isinstance(audio, str | Path):
            from audiodiff.audio.io import load_audio

            audio, _ = load_audio(audio, sample_rate=self.sample_rate, channels=rep.channels)
        if not isinstance(audio, Tensor):
            raise TypeError(f"audio: expected a file path or a tensor, got {type(audio).__name__}")
        wav = audio.detach().float().cpu()
        wav = wav.view(1, 1, -1) if wav.dim() == 1 else wav.unsqueeze(0) if wav.dim() == 2 else wav
        if wav.dim() != 3 or wav.shape[0] not in (1, count):
            raise ValueError(f"audio: expected [T], [C, T] or [B, C, T] with B = 1 or {count} (one per prompt), "
                             f"got shape {tuple(audio.shape)}")
        if wav.shape[1] != rep.channels:
            raise ValueError(f"audio: this model takes {rep.channels} channel(s), got {wav.shape[1]}")
        if wav.shape[-1] < self.sample_rate * MIN_INPUT_SECONDS:
            raise ValueError(f"audio: {wav.shape[-1]} samples ({wav.shape[-1] / self.sample_rate:.3f} s) is too short; "
                             f"expected at least {MIN_INPUT_SECONDS} s")
        if not torch.isfinite(wav).all():
            raise ValueError("audio: holds NaN or infinite samples")
        return wav.expand(count, -1, -1).contiguous()

    def _request(self, prompts: str | list[str], negative_prompts: str | list[str] | None, seed: int | list[int],
                 steps: int | None, guidance: float | None, sampler: str | None,
                 options: dict[str, Any]) -> tuple[list[str], list[str] | None, SamplerSettings, list[int]]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if isinstance(negative_prompts, str):
            negative_prompts = [negative_prompts] * len(prompts)
        return prompts, negative_prompts, self.settings(steps, guidance, sampler, **options), seed_list(seed,
                                                                                                        len(prompts))

    def _encode_window(self, wav: Tensor, seeds: list[int] | None = None) -> tuple[Tensor, float]:
        """Latents [B, D, L] of wav [B, C, T] (padded to the window for a timing-conditioned model) and its length
        in seconds. seeds (audio-to-audio): item i is the representation's `encode_sample` with a generator seeded
        seeds[i] + POSTERIOR_SEED_OFFSET (apart from the item's diffusion noise); None: `encode`."""
        seconds = wav.shape[-1] / self.sample_rate
        if seconds > self.model.max_duration + 1e-9:
            raise ValueError(f"audio: {seconds:.2f} s is longer than this model's maximum of "
                             f"{self.model.max_duration} s (continuation and long_form go further)")
        if self.model.fixed_window:
            wav = torch.nn.functional.pad(wav, (0, int(round(self.model.duration * self.sample_rate)) - wav.shape[-1]))
        rep, wav = self.model.representation, wav.to(self.device)
        if seeds is None:
            return rep.encode(wav), seconds
        return torch.cat([rep.encode_sample(wav[i:i + 1], torch.Generator().manual_seed(seed + POSTERIOR_SEED_OFFSET))
                          for i, seed in enumerate(seeds)]), seconds

    def _output(self, z: Tensor, seconds: float, settings: SamplerSettings, seeds: list[int]) -> GenerationOutput:
        wav = self.model.representation.decode(z).float().cpu()
        samples = int(round(seconds * self.sample_rate))
        wav = torch.nn.functional.pad(wav, (0, max(0, samples - wav.shape[-1])))[..., :samples]
        return self._marked(GenerationOutput(wav, self.sample_rate, settings, seeds, seconds))

    @property
    def watermark_bits(self) -> tuple[int, ...]:
        """The message every mark of this pipeline carries: the first bits of `base_hash` (the model's id)."""
        if self.watermark is None:
            raise ValueError("this pipeline does not watermark (watermark=False)")
        return hex_bits(self.base_hash, self.watermark.bits)

    def _marked(self, output: GenerationOutput) -> GenerationOutput:
        """`output` with the watermark embedded in every clip (unchanged when watermarking is off) and the model's
        training-data licence warning attached."""
        output = replace(output, license_warning=self.license_warning)
        if self.watermark is None:
            return output
        if output.sample_rate < MIN_WATERMARK_RATE:
            reason = f"sample rate {output.sample_rate} Hz is below the {MIN_WATERMARK_RATE} Hz the mark needs"
            _log.warning("not watermarked: %s", reason)
            return replace(output, watermark={"method": self.watermark.name, "skipped": reason})
        bits = self.watermark_bits
        return replace(output, audio=self.watermark.embed(output.audio, output.sample_rate, bits),
                       watermark=describe_mark(self.watermark, bits))

    def _windowed(self, prompts: list[str], negative_prompts: list[str] | None, settings: SamplerSettings,
                  seeds: list[int], seconds: float, prefix: Tensor | None, context: float | None, crossfade: float,
                  progress: bool) -> GenerationOutput:
        """`seconds` of audio built from model windows, each after the first (or after `prefix` latents) keeping
        the last `context` seconds of what exists."""
        rep, window_seconds = self.model.representation, self.model.duration
        window = rep.num_frames(window_seconds)
        context = window_seconds / 2 if context is None else float(context)
        keep_frames, fade = round(context * rep.frame_rate), round(crossfade * rep.frame_rate)
        if not (0 < context < window_seconds and 0 < keep_frames < window):
            raise ValueError(f"context: expected more than 0 and less than the model's window of {window_seconds} s, "
                             f"got {context} s")
        if not 0 <= fade < keep_frames:
            raise ValueError(f"crossfade: expected 0 <= crossfade < context ({context} s), got {crossfade} s")
        total = rep.num_frames(seconds) + 1
        have = window if prefix is None else prefix.shape[-1]
        windows = (prefix is None) + math.ceil(max(0, total - have) / (window - keep_frames))
        z = prefix
        with _StepBar(settings.steps * windows, progress) as bar:
            if z is None:
                z = self.model.sample_latents(prompts, window, seeds, settings, negative_prompts,
                                              callback=bar.callback)
            index, joins = 1, []
            while z.shape[-1] < total:
                joins.append(z.shape[-1] / rep.frame_rate)
                kept = min(keep_frames, z.shape[-1])
                init = torch.cat([z[..., -kept:], z.new_zeros(z.shape[0], z.shape[1], window - kept)], dim=-1)
                keep = keep_mask(window, [(kept, window)], min(fade, kept - 1))
                window_seeds = [s + index * WINDOW_SEED_STRIDE for s in seeds]
                new = self.model.sample_latents(prompts, window, window_seeds, settings, negative_prompts, init=init,
                                                keep=keep, callback=bar.callback)
                z = torch.cat([z[..., :-kept], new], dim=-1)
                index += 1
        return replace(self._output(z, seconds, settings, seeds), joins=tuple(j for j in joins if j < seconds))

    def settings(self, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 **options: Any) -> SamplerSettings:
        """The model's default SamplerSettings with the given changes (None = keep); raises ValueError naming a bad
        value or an unknown option."""
        known = set(asdict(self.model.sampler)) - {"name", "steps", "guidance"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; expected some of {sorted(known)}")
        changes: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if sampler is not None:
            changes["name"] = sampler
            if sampler != self.model.sampler.name and "eta" not in changes:
                changes["eta"] = None  # the default sampler's eta does not carry over to another sampler
            if sampler != self.model.sampler.name and "s_churn" not in changes:
                changes["s_churn"] = 0.0
            if sampler != self.model.sampler.name and "noise" not in changes:
                changes["noise"] = "gaussian"  # Brownian-tree noise only where the other sampler takes it
        if steps is not None:
            changes["steps"] = int(steps)
        if guidance is not None:
            changes["guidance"] = float(guidance)
        if "guidance_interval" in changes:
            changes["guidance_interval"] = tuple(changes["guidance_interval"])
        return replace(self.model.sampler, **changes)

    def check_request(self, prompts: list[str], duration: float | None,
                      negative_prompts: list[str] | None) -> float:
        """Validate prompts (the prompt policy, when set, refuses with PromptRefused naming the rule) and duration;
        returns the duration in seconds to generate."""
        if not prompts:
            raise ValueError("prompts: expected at least one prompt, got none")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompts[{i}]: expected a non-empty text prompt, got {p!r}")
            if self.prompt_policy is not None:
                self.prompt_policy.check(p, f"prompt {p!r}")
        if negative_prompts is not None and len(negative_prompts) != len(prompts):
            raise ValueError(f"negative_prompts: expected {len(prompts)} (one per prompt), got {len(negative_prompts)}")
        duration = self.model.duration if duration is None else float(duration)
        if not duration > 0:
            raise ValueError(f"duration: expected a positive number of seconds, got {duration}")
        if duration > self.model.max_duration:
            raise ValueError(f"duration: {duration} s is longer than this model's maximum of "
                             f"{self.model.max_duration} s")
        return duration


def load_inference_state(model: DiffusionModel, state: dict[str, Tensor], source: str) -> None:
    """Load `net.*`, `representation.*`, any `timing.*` weights and, when the export carries them, the
    `text_encoder.*` weights a fine-tune trained (all of them, replacing those loaded from the encoder's source);
    any other difference is an error naming both sides."""
    carries_text = any(k.startswith(TEXT_ENCODER_PREFIX) for k in state)
    own = {k: v for k, v in model.state_dict().items() if carries_text or not k.startswith(TEXT_ENCODER_PREFIX)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(f"{source}: weights do not match the model built from its config: "
                             f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                             f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    # The representation loads first: its own checks (e.g. statistics fitted on another codec's latents) name the
    # cause better than the denoiser shape differences that follow from it.
    rep_state = {k[len("representation."):]: v for k, v in state.items() if k.startswith("representation.")}
    try:
        model.representation.load_state_dict(rep_state)
    except RuntimeError as err:
        raise ModelLoadError(f"{source}: {err}") from err
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ModelLoadError(f"{source}: {key} has shape {tuple(value.shape)} in the weights but "
                                 f"{tuple(own[key].shape)} in the model built from its config")
    model.load_state_dict(state, strict=False)


def describe(output: GenerationOutput, prompt: str, index: int, model_id: str) -> dict[str, Any]:
    """The JSON sidecar of one generated clip."""
    s = output.settings
    meta = {"prompt": prompt, "seed": output.seeds[index], "sampler": s.name, "steps": s.steps,
            "guidance": s.guidance, "duration": output.duration, "sample_rate": output.sample_rate,
            "channels": int(output.audio.shape[1]),
            "model": model_id, "sampler_settings": {**asdict(s), "guidance_interval": list(s.guidance_interval)}}
    if output.joins:
        meta["joins"] = [round(j, 4) for j in output.joins]
    meta["watermark"] = output.watermark if output.watermark is not None else False
    if output.license_warning:
        meta["license_warning"] = output.license_warning
    if output.guard is not None:
        meta["near_copy_guard"] = output.guard[index]
    return meta


def _refusal(verdict: CopyVerdict, seed: int, regenerated: int) -> str:
    """The message of a clip the guard refused (after `regenerated` other seeds were flagged too)."""
    tried = f" (and {regenerated} other seed(s) before it)" if regenerated else ""
    return (f"refused by the near-copy guard: seed {seed}{tried} resembles {verdict.describe()}; "
            f"try another prompt or seed")


class _StepBar:
    """A tqdm bar over sampler steps (to stderr) when enabled; `callback` fits the samplers' callback argument."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="sampling", unit="step", file=sys.stderr, leave=False)

    def callback(self, step: int, x: Tensor, x0_hat: Tensor) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def __enter__(self) -> _StepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
