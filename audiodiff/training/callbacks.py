"""Training callbacks: audio previews written to the run directory and TensorBoard, and a periodic prompt-adherence
check on held-out prompts of a built-in corpus."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from audiodiff.audio.image import save_spectrogram, spectrogram_image
from audiodiff.audio.io import save_audio
from audiodiff.audio.mel import MelSpectrogram, log_compress

DISPLAY_N_FFT = 1024  # the preview spectrogram's STFT size


def audio_tags(tag: str, channels: int) -> list[str]:
    """TensorBoard audio is mono: `tag` for a mono clip, one tag per channel otherwise (`tag/left`, `tag/right` for
    stereo, `tag/ch<c>` beyond)."""
    if channels == 1:
        return [tag]
    names = ["left", "right"] if channels == 2 else [f"ch{c}" for c in range(channels)]
    return [f"{tag}/{name}" for name in names]


class AudioPreview(L.Callback):
    """Every `every_n_steps` optimizer steps (and at the end of training), sample `prompts` with the EMA weights and
    write `previews/step_NNNNNN/<i>.wav` and `.png` (log-mel) under `out_dir`, and log both to TensorBoard.

    Sampling uses the model's own sampler settings (the `sampler` config group) with `steps` and `guidance`.
    The same seed is used each time, so previews of successive steps are directly comparable.
    """

    def __init__(self, out_dir: str, prompts: list[str], every_n_steps: int = 1000, steps: int = 25,
                 guidance: float = 3.0, duration: float | None = None, seed: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.prompts = list(prompts)
        self.every_n_steps = every_n_steps
        self.steps = steps
        self.guidance = guidance
        self.duration = duration
        self.seed = seed
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.preview(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.prompts and trainer.global_step != self._last_step:
            self.preview(trainer, pl_module)

    @rank_zero_only
    def preview(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.prompts:
            return
        step = trainer.global_step
        self._last_step = step
        model = pl_module.model
        was_training = pl_module.training
        pl_module.eval()
        settings = replace(model.sampler, steps=self.steps, guidance=self.guidance)
        wav = model.generate(self.prompts, self.duration, settings, seed=self.seed, net=pl_module.ema.average)
        if was_training:
            pl_module.train()
        folder = self.out_dir / f"step_{step:06d}"
        tb = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        for i, (prompt, clip) in enumerate(zip(self.prompts, wav, strict=True)):
            save_audio(folder / f"{i}.wav", clip.cpu(), model.sample_rate)
            log_mel = None
            if clip.shape[-1] > DISPLAY_N_FFT // 2:  # a clip shorter than the display STFT's padding has no image
                # one display mel per channel, stacked with channel 0 (the left) on top: [C · n_mels, F]
                log_mel = log_compress(self._mel(model.sample_rate)(clip.float().cpu().flip(0))).flatten(0, 1)
                save_spectrogram(folder / f"{i}.png", log_mel)
            if tb is not None:
                for tag, channel in zip(audio_tags(f"preview/{i}", clip.shape[0]), clip, strict=True):
                    tb.add_audio(tag, channel.cpu().numpy(), step, sample_rate=model.sample_rate)
                if log_mel is not None:
                    tb.add_image(f"preview/{i}", spectrogram_image(log_mel).astype(np.uint8), step,
                                 dataformats="HWC")
                tb.add_text(f"preview/{i}", prompt, step)
        (folder / "prompts.txt").write_text("\n".join(self.prompts) + "\n")

    def _mel(self, sample_rate: int) -> MelSpectrogram:
        """A display mel of the output waveform, whatever the representation (mel, VAE or codec latents)."""
        if getattr(self, "_display_mel", None) is None or self._display_mel.sample_rate != sample_rate:
            self._display_mel = MelSpectrogram(sample_rate=sample_rate, n_fft=DISPLAY_N_FFT, hop_length=256, n_mels=80,
                                               power=1.0)
        return self._display_mel


class AttributeAccuracy(L.Callback):
    """Every `every_n_steps` optimizer steps, generate one clip for each of the first `n` prompts of a built-in
    corpus's validation split with the EMA weights (seeded, so successive checks are comparable), read their
    attributes back with the corpus's extractors and log `eval/attribute_<name>` and `eval/attribute_mean`
    (accuracy in [0, 1]). The guard against a model that trains but outputs noise, watched while it trains.
    """

    def __init__(self, corpus: str, manifest: str, every_n_steps: int = 1000, n: int = 32, steps: int = 10,
                 guidance: float = 3.0, batch_size: int = 16, split: str = "val", seed: int = 0) -> None:
        from audiodiff.benchmarks.attributes import corpus_metrics

        self.corpus = corpus
        self.extract, self.score = corpus_metrics(corpus)  # an unknown corpus fails here, before training starts
        self.manifest, self.split, self.n = manifest, split, n
        self.every_n_steps, self.steps, self.guidance = every_n_steps, steps, guidance
        self.batch_size, self.seed = batch_size, seed
        self.prompts: list[str] = []
        self.truths: list[dict] = []
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Read the prompts once the corpus exists (the datamodule builds it in `prepare_data`)."""
        from audiodiff.benchmarks.attributes import asked_attributes
        from audiodiff.data.manifest import read_manifest

        rows = read_manifest(self.manifest, split=self.split)[: self.n]
        if not rows:
            raise ValueError(f"evaluation: {self.manifest} has no rows in split {self.split!r}")
        self.prompts = [r.captions[0] for r in rows]
        self.truths = [asked_attributes(self.corpus, r.captions[0], r.attributes or {}) for r in rows]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Generate, score and log; every rank computes the same numbers (same prompts and seeds), so nothing needs
        reducing and no rank waits for another."""
        model = pl_module.model
        was_training = pl_module.training
        pl_module.eval()
        settings = replace(model.sampler, steps=self.steps, guidance=self.guidance)
        predicted = []
        for lo in range(0, len(self.prompts), self.batch_size):
            chunk = self.prompts[lo: lo + self.batch_size]
            wav = model.generate(chunk, None, settings, seed=self.seed + lo, net=pl_module.ema.average)
            predicted += [self.extract(clip[0].float().cpu().numpy(), model.sample_rate, reference=truth)
                          for clip, truth in zip(wav, self.truths[lo: lo + len(chunk)], strict=True)]
        if was_training:
            pl_module.train()
        scores = {f"eval/attribute_{k}": v["accuracy"] for k, v in self.score(predicted, self.truths).items()}
        scores["eval/attribute_mean"] = float(np.mean(list(scores.values())))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scores, step=trainer.global_step)
        return scores
