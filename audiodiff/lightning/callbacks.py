"""Training callbacks: audio previews written to the run directory and TensorBoard."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from audiodiff.audio.image import save_spectrogram, spectrogram_image
from audiodiff.audio.io import save_audio


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
            log_mel = model.representation.log_mel(clip[None].to(pl_module.device))[0]
            save_spectrogram(folder / f"{i}.png", log_mel)
            if tb is not None:
                tb.add_audio(f"preview/{i}", clip[0].cpu().numpy(), step, sample_rate=model.sample_rate)
                tb.add_image(f"preview/{i}", spectrogram_image(log_mel).astype(np.uint8), step, dataformats="HWC")
                tb.add_text(f"preview/{i}", prompt, step)
        (folder / "prompts.txt").write_text("\n".join(self.prompts) + "\n")
