"""PANNs CNN14 audio tagger (Kong et al., "PANNs: Large-scale pretrained audio neural networks for audio pattern
recognition", IEEE/ACM TASLP 2020): 2048-d clip embeddings for FAD and 527 AudioSet class probabilities for
Inception Score and KL (the classifier of AudioLDM's evaluation).

Frontend: mono 32 kHz audio, |STFT|² with a 1024-sample periodic Hann window every 320 samples (centred frames,
reflect padding), 64 mel bands from 50 to 14000 Hz (librosa's Slaney filterbank), 10 log10(max(mel, 1e-10)). The
reference (`panns_inference`, via torchlibrosa) computes the STFT as a convolution with float32 DFT weights; here it
is `torch.stft` (`audiodiff.audio.mel.MelSpectrogram`), equal up to float32 round-off.

Network: batch norm over mel bands, six blocks of two 3×3 conv + batch norm + ReLU layers (64 … 2048 channels,
2×2 average pooling after the first five), mean over frequency, max + mean over time, a 2048 → 2048 ReLU layer
(the embedding) and a 2048 → 527 sigmoid layer (clipwise output). Parameter names match `panns_inference.Cnn14`,
so the official checkpoint loads unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.audio.mel import MelSpectrogram
from audiodiff.evaluation.classifier_scores import ProbabilityMode
from audiodiff.evaluation.embedders.base import (
    WavBatch,
    batches_by_length,
    freeze,
    make_id,
    module_device,
    pad_to,
    prepare_clips,
    weights_digest,
)

SAMPLE_RATE = 32_000
N_FFT = 1024
HOP_LENGTH = 320  # 10 ms, 100 frames per second
NUM_MELS = 64
F_MIN, F_MAX = 50.0, 14_000.0
AMIN = 1e-10  # power floor before the dB conversion
EMBEDDING_SIZE = 2048
AUDIOSET_CLASSES = 527
# Five 2×2 poolings need 32 frames: 1 + T // 320 >= 32.
MIN_SAMPLES = 31 * HOP_LENGTH
_FRONTEND_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                  "logmel_extractor.melW")
_FRONTEND_TOL = 1e-4  # the reference's float32 DFT and filterbank weights against ours
_VERSION = 1  # bump when the frontend or pooling changes, so cached embeddings are recomputed


def _frontend() -> MelSpectrogram:
    """The |STFT|² → mel projection; its window and filterbank are computed, never stored in checkpoints, so they
    are built on the CPU even inside a meta-device context (`cnn14_from_state_dict`)."""
    with torch.device("cpu"):
        return MelSpectrogram(SAMPLE_RATE, N_FFT, HOP_LENGTH, n_mels=NUM_MELS, f_min=F_MIN, f_max=F_MAX,
                              power=2.0, scale="slaney", norm="slaney", center=True, pad_mode="reflect")


class ConvBlock(nn.Module):
    """Two 3×3 conv (no bias) + batch norm + ReLU layers, then 2×2 average pooling (or none)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=2) if self.pool else x


class Cnn14Output(NamedTuple):
    embedding: Tensor  # [B, 2048], after the ReLU of fc1
    clipwise: Tensor  # [B, classes] sigmoid probabilities


class Cnn14(nn.Module):
    """CNN14 in inference form (no SpecAugment, mixup or dropout): `wav` [B, T] at 32 kHz → `Cnn14Output`.

    T >= `MIN_SAMPLES` (9920, 0.31 s). The output depends on T through the global pooling, so clips of different
    lengths must not be zero-padded into one batch.
    """

    def __init__(self, classes: int = AUDIOSET_CLASSES) -> None:
        super().__init__()
        self.spectrogram = _frontend()
        self.bn0 = nn.BatchNorm2d(NUM_MELS)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for index in range(6):
            block = ConvBlock(widths[index], widths[index + 1], pool=index < 5)
            self.add_module(f"conv_block{index + 1}", block)
        self.fc1 = nn.Linear(EMBEDDING_SIZE, EMBEDDING_SIZE)
        self.fc_audioset = nn.Linear(EMBEDDING_SIZE, classes)

    def log_mel(self, wav: Tensor) -> Tensor:
        """`wav` [B, T] → log-mel in dB [B, 1, frames, 64], frames = 1 + T // 320."""
        mel = self.spectrogram(wav)  # [B, 64, frames]
        return (10.0 * torch.log10(mel.clamp_min(AMIN))).transpose(1, 2)[:, None]

    def forward(self, wav: Tensor) -> Cnn14Output:
        if wav.ndim != 2 or wav.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"Cnn14: expected wav [B, T] at {SAMPLE_RATE} Hz with T >= {MIN_SAMPLES}, "
                             f"got {tuple(wav.shape)}")
        x = self.log_mel(wav)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # batch norm over the mel bands
        for index in range(1, 7):
            x = getattr(self, f"conv_block{index}")(x)
        x = x.mean(dim=3)  # [B, 2048, frames / 32]
        x = x.amax(dim=2) + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return Cnn14Output(embedding, torch.sigmoid(self.fc_audioset(embedding)))


def _check_frontend(model: Cnn14, state: dict[str, Tensor], source: str) -> None:
    """Refuse a checkpoint whose stored STFT or mel weights differ from the frontend computed here."""
    mel = model.spectrogram
    n = torch.arange(N_FFT, dtype=torch.float64)
    k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
    angle = 2 * torch.pi * k[:, None] * n[None, :] / N_FFT
    window = mel.window.to(torch.float64)
    expected = {
        "spectrogram_extractor.stft.conv_real.weight": (torch.cos(angle) * window)[:, None, :],
        "spectrogram_extractor.stft.conv_imag.weight": (-torch.sin(angle) * window)[:, None, :],
        "logmel_extractor.melW": mel.filterbank.to(torch.float64).T,
    }
    for key, value in expected.items():
        stored = state[key].to(torch.float64)
        if stored.shape != value.shape or not torch.allclose(stored, value, rtol=0.0, atol=_FRONTEND_TOL):
            raise ValueError(f"load_cnn14_state_dict: {source}: {key} {tuple(stored.shape)} is not the frontend "
                             f"computed here ({SAMPLE_RATE} Hz, n_fft {N_FFT}, {NUM_MELS} mels {F_MIN}-{F_MAX} Hz); "
                             "the checkpoint was trained with other spectrogram settings")


def load_cnn14_state_dict(model: Cnn14, state: dict[str, Tensor], source: str = "state dict",
                          assign: bool = False) -> Cnn14:
    """Load a `panns_inference` / audioset_tagging_cnn `Cnn14` state dict into `model`.

    Its frozen frontend weights (`spectrogram_extractor.*`, `logmel_extractor.melW`) are checked against the
    frontend computed here and dropped; every other entry must match exactly (strict load). `assign=True` adopts
    the state's tensors instead of copying them (for a model built on the meta device). Returns `model` in eval
    mode (batch norm uses the loaded statistics).
    """
    state = dict(state)
    if all(key in state for key in _FRONTEND_KEYS):
        _check_frontend(model, state, source)
    for key in _FRONTEND_KEYS:
        state.pop(key, None)
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError as error:
        raise ValueError(f"load_cnn14_state_dict: {source} does not fit Cnn14: {error}") from error
    return model.eval()


def cnn14_from_state_dict(state: dict[str, Tensor], source: str = "state dict") -> Cnn14:
    """A `Cnn14` holding `state` (see `load_cnn14_state_dict`), built without a throwaway random initialisation;
    the number of classes comes from `fc_audioset.weight`."""
    classes = state["fc_audioset.weight"].shape[0] if "fc_audioset.weight" in state else AUDIOSET_CLASSES
    with torch.device("meta"):
        model = Cnn14(classes)
    return load_cnn14_state_dict(model, state, source, assign=True)


class PannsEmbedder:
    """CNN14 as an `audiodiff.evaluation.embedders.Classifier`: 2048-d clip embeddings and AudioSet probabilities.

    Clips are downmixed to mono by the channel mean (as `librosa.load(mono=True)` in the reference) and resampled
    to 32 kHz (soxr, librosa's default resampler); a clip shorter than 9920 samples (0.31 s) is zero-padded to it.
    Only clips of equal length share a batch. `embed` and `classify` each run the network once.

    Args:
        model: a `Cnn14` with its weights; frozen (eval mode, no gradients) here.
        batch_size: clips per forward pass.
    """

    sample_rate = SAMPLE_RATE
    embedding_dim = EMBEDDING_SIZE
    probability_mode: ProbabilityMode = "sigmoid"  # multi-label tagging: independent per-class probabilities

    def __init__(self, model: Cnn14, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"PannsEmbedder: batch_size must be >= 1, got {batch_size}")
        self.model = freeze(model)
        self.batch_size = batch_size
        self.num_classes = model.fc_audioset.out_features
        digest = weights_digest(model)
        settings = {"version": _VERSION}
        self.id = make_id("panns-cnn14", settings, digest)
        self.classify_id = make_id("panns-cnn14-probs", settings, digest)

    @torch.no_grad()
    def forward(self, wavs: WavBatch, sample_rate: int) -> Cnn14Output:
        """Clips at `sample_rate` Hz → `Cnn14Output` of [N, 2048] embeddings and [N, K] probabilities (CPU)."""
        clips = [pad_to(clip[0], MIN_SAMPLES) for clip in prepare_clips(wavs, sample_rate, SAMPLE_RATE, 1,
                                                                         "PannsEmbedder")]
        device = module_device(self.model)
        embeddings = torch.empty(len(clips), EMBEDDING_SIZE)
        probs = torch.empty(len(clips), self.num_classes)
        for indices in batches_by_length([clip.shape[-1] for clip in clips], self.batch_size):
            out = self.model(torch.stack([clips[i] for i in indices]).to(device))
            embeddings[indices] = out.embedding.float().cpu()
            probs[indices] = out.clipwise.float().cpu()
        return Cnn14Output(embeddings, probs)

    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips at `sample_rate` Hz → [N, 2048] float32 embeddings on the CPU."""
        return self.forward(wavs, sample_rate).embedding

    def classify(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips at `sample_rate` Hz → [N, 527] sigmoid class probabilities on the CPU."""
        return self.forward(wavs, sample_rate).clipwise


def load_panns(checkpoint_path: str | Path, batch_size: int = 8,
               device: str | torch.device = "cpu") -> PannsEmbedder:
    """CNN14 embedder from the official checkpoint `Cnn14_mAP=0.431.pth` (Zenodo record 3987831, ~330 MB, not
    shipped: fetch it yourself): a dict whose "model" entry is the state dict. A bare state dict also loads.
    Loaded with `weights_only=True`.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"load_panns: {path} does not exist; download Cnn14_mAP=0.431.pth from "
                                "https://zenodo.org/record/3987831 and pass its path")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"load_panns: {path} holds {type(state).__name__}, expected a state dict or a dict with "
                         "a 'model' state dict")
    return PannsEmbedder(cnn14_from_state_dict(state, str(path)).float().to(device), batch_size)
