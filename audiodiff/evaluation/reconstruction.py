"""How well each way back to audio rebuilds held-out clips: Griffin-Lim, trained vocoders and autoencoders side by side.

    python -m audiodiff.evaluation.reconstruction corpus=sfx n=100 \\
        systems=[griffinlim,vocoder:runs/sfx/seed0/vocoder/export,autoencoder:runs/ae/autoencoder/export]

Each clip of the split (test by default) is rebuilt at its own length, one at a time, and scored with
:func:`audiodiff.evaluation.vocoder_quality.reconstruction_errors`: the Parallel WaveGAN multi-resolution STFT distance
and the full-band log-mel L1 in nepers (64 Slaney bands, 1024-point FFT, hop 256: HiFi-GAN's "Mel-Spec. Error").
Systems:

- ``griffinlim``: the default mel representation's mel, inverted by the `vocoder=griffinlim` settings (32 iterations);
- ``griffinlim:stft``: Griffin-Lim's 32 iterations from the clip's own STFT magnitude instead of the mel's inverse,
  the bound of any vocoder that leaves the phase to Griffin-Lim;
- ``vocoder:<folder>``: a vocoder stage's export, fed the mel it computes itself;
- ``autoencoder:<folder>``: an autoencoder stage's export, encode then decode (a mel VAE is voiced by Griffin-Lim).

Prints a markdown table and, with ``out=<file>.json``, writes the numbers. Settings: ``conf/reconstruction.yaml``
(``--help`` lists them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from audiodiff.audio.io import load_audio
from audiodiff.audio.mel import DEFAULT_MEL
from audiodiff.benchmarks import ensure_corpus
from audiodiff.data.manifest import read_manifest
from audiodiff.evaluation.vocoder_quality import fit_length, reconstruction_errors, waveform_mel_loss
from audiodiff.utils.settings import text, whole
from audiodiff.vocoders.losses import MultiResolutionSTFTLoss

System = Callable[[Tensor], Tensor]  # wav [1, 1, T] -> wav_hat [1, T'] or [1, 1, T']
SAMPLE_RATE = DEFAULT_MEL.sample_rate  # the built-in corpora's rate
_MEL = {"sample_rate": SAMPLE_RATE, "n_fft": DEFAULT_MEL.n_fft, "hop_length": DEFAULT_MEL.hop_length,
        "n_mels": DEFAULT_MEL.n_mels, "f_max": DEFAULT_MEL.f_max}


def griffinlim_system() -> System:
    """The mel representation's default mel (64 bands to 8 kHz, hop 256) inverted by `conf/vocoder/griffinlim`."""
    from audiodiff.representations.mel import MelRepresentation
    from audiodiff.vocoders.griffinlim import GriffinLimVocoder

    mel = MelRepresentation()
    vocoder = GriffinLimVocoder(**_MEL, power=1.0, n_iter=32)
    return lambda wav: vocoder(mel.mel(wav[:, 0]))


def stft_griffinlim_system() -> System:
    """Griffin-Lim (32 iterations, the mel's STFT geometry) from the clip's true STFT magnitude."""
    from audiodiff.vocoders.griffinlim import griffin_lim

    n_fft, hop = DEFAULT_MEL.n_fft, DEFAULT_MEL.hop_length
    window = torch.hann_window(n_fft)

    def rebuild(wav: Tensor) -> Tensor:
        magnitude = torch.stft(wav[:, 0], n_fft, hop, window=window, center=True, return_complex=True).abs()
        return griffin_lim(magnitude, n_fft, hop, n_iter=32, length=wav.shape[-1], window=window)

    return rebuild


def build_system(spec: str) -> System:
    """``griffinlim``, ``griffinlim:stft``, ``vocoder:<export folder>`` or ``autoencoder:<export folder>`` -> a
    rebuilding function."""
    kind, _, folder = spec.partition(":")
    if kind == "griffinlim" and not folder:
        return griffinlim_system()
    if kind == "griffinlim" and folder == "stft":
        return stft_griffinlim_system()
    if kind == "vocoder" and folder:
        from audiodiff.vocoders.trained import from_export

        vocoder = from_export(folder)
        return lambda wav: vocoder(vocoder.mel(wav[:, 0]))
    if kind == "autoencoder" and folder:
        from audiodiff.autoencoders.loading import load_autoencoder
        from audiodiff.representations.autoencoder import AutoencoderRepresentation
        from audiodiff.vocoders.griffinlim import GriffinLimVocoder

        autoencoder = load_autoencoder(folder)
        vocoder = (GriffinLimVocoder(**_MEL, power=1.0, n_iter=32)
                   if autoencoder.kind == "mel_vae" else None)
        representation = AutoencoderRepresentation(autoencoder, vocoder)
        return lambda wav: representation.decode(representation.encode(wav))
    raise ValueError(f"systems: expected griffinlim, griffinlim:stft, vocoder:<folder> or autoencoder:<folder>, got "
                     f"{spec!r}")


@torch.inference_mode()
def score_system(system: System, clips: list[Tensor]) -> dict[str, float]:
    """Mean errors of `system` over `clips` (each ``[1, 1, T]`` at 16 kHz), with the wall time in seconds."""
    mel_loss, stft_loss = waveform_mel_loss(SAMPLE_RATE), MultiResolutionSTFTLoss()
    start, sums = time.perf_counter(), {}
    for wav in clips:
        errors = reconstruction_errors(fit_length(system(wav).reshape(1, -1), wav.shape[-1]), wav[:, 0], mel_loss,
                                       stft_loss)
        for key, value in errors.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {**{k: v / len(clips) for k, v in sums.items()}, "seconds": time.perf_counter() - start}


def held_out_clips(corpus: str, root: str | Path, n: int, split: str = "test") -> list[Tensor]:
    """The first `n` clips of `split` of built-in `corpus` (built under `root` if missing), ``[1, 1, T]`` each."""
    rows = read_manifest(ensure_corpus(corpus, root), split=split)[:n]
    if not rows:
        raise ValueError(f"corpus {corpus!r} has no clips in split {split!r}")
    return [load_audio(row.audio, SAMPLE_RATE, 1)[0][None] for row in rows]


def markdown(results: dict[str, dict[str, float]], n: int) -> str:
    lines = [f"| system ({n} clips) | mel L1 (nepers) | MR-STFT distance | seconds |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['mel_l1']:.3f} | {r['stft_distance']:.3f} | {r['seconds']:.0f} |"
              for name, r in results.items()]
    return "\n".join(lines)


def systems_setting(value: Any) -> list[str]:
    """The `systems` setting as a list of specs: a list (`systems=[griffinlim,vocoder:<folder>]`) or one string,
    comma-separated."""
    if isinstance(value, str):
        value = value.strip("[]").split(",")
    if value is None or isinstance(value, (int, float, bool)):
        raise ValueError(f"systems: expected a list such as [griffinlim,vocoder:<folder>], got {value!r}")
    systems = [str(s).strip() for s in value if str(s).strip()]
    if not systems:
        raise ValueError("systems: expected at least one system, got none")
    return systems


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Score the systems `cfg` (conf/reconstruction.yaml) names and print the table (and write `out`)."""
    systems = systems_setting(cfg.get("systems"))
    n = whole(cfg, "n", minimum=1)
    corpus, root = text(cfg, "corpus", required=True), text(cfg, "root", required=True)
    clips = held_out_clips(corpus, root, n, text(cfg, "split", required=True))
    results = {spec: score_system(build_system(spec), clips) for spec in tqdm(systems, desc="systems", unit="system")}
    print(markdown(results, len(clips)))
    out = text(cfg, "out")
    if out is not None:
        Path(out).write_text(json.dumps({"clips": len(clips), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    from audiodiff import cli

    cli.main("audiodiff.evaluation.reconstruction", "reconstruction", main, __doc__)
