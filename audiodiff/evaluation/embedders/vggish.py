"""VGGish audio embeddings (Hershey et al., "CNN architectures for large-scale audio classification", ICASSP 2017),
the embedding of the original Fréchet Audio Distance (Kilgour et al., 2019).

Frontend (`VGGishFrontend`), as `vggish_input.waveform_to_examples` of the TensorFlow release and its PyTorch port
`torchvggish`: mono 16 kHz audio, 25 ms periodic-Hann frames every 10 ms, |FFT| over 512 bins, 64 mel bands from
125 to 7500 Hz (HTK mel scale, triangles linear in mel, DC bin excluded, no area normalisation), log(mel + 0.01),
then non-overlapping examples of 96 frames (0.96 s); an incomplete last example is dropped.

Network (`VGGish`): a VGG-like stack of 3×3 convolutions (64, 128, 256, 256, 512, 512 channels, four 2×2 max-pools)
on each [96, 64] example, then 4096 → 4096 → 128 fully connected layers, each followed by a ReLU — including the
last, as in the PyTorch port (`harritaylor/torchvggish`) that FAD toolkits load. Its parameter names match that
port's, so its checkpoints load unchanged. The optional PCA postprocessing (`VGGishPCA`: whitening PCA, clip to
[-2, 2], quantise to 0..255) reproduces the released AudioSet embeddings; FAD uses the raw 128-d embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # numpy 1.26
    from numpy.core.multiarray import _reconstruct
from torch import Tensor, nn

from audiodiff.audio.mel import hz_to_mel
from audiodiff.evaluation.embedders.base import (
    WavBatch,
    freeze,
    make_id,
    module_device,
    pad_to,
    prepare_clips,
    weights_digest,
)

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_SIZE = 512  # smallest power of two >= the window
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01  # log(mel + 0.01) keeps silence finite
EXAMPLE_FRAMES = 96  # 0.96 s per example, examples do not overlap
EMBEDDING_SIZE = 128
MIN_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES  # 15600: one complete example
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
# Official PyTorch-port files, named as torch.hub stores them under `torch.hub.get_dir()/checkpoints`.
WEIGHTS_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
_FILES_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
_VERSION = 1  # bump when the frontend or pooling changes, so cached embeddings are recomputed


def vggish_mel_matrix(num_bins: int = FFT_SIZE // 2 + 1, sample_rate: int = SAMPLE_RATE, num_bands: int = NUM_BANDS,
                      f_min: float = MEL_MIN_HZ, f_max: float = MEL_MAX_HZ) -> Tensor:
    """VGGish's mel weights [num_bins, num_bands] (float64), as `mel_features.spectrogram_to_mel_matrix`.

    Band edges are evenly spaced on the HTK mel scale between `f_min` and `f_max` Hz; each triangle is linear in
    mel (not in Hz) and peaks at 1; the DC bin gets no weight. The HTK scale here is 2595 log10(1 + f / 700) where
    the reference writes 1127 ln(1 + f / 700): the two differ by a constant factor, which cancels in the slopes.
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"vggish_mel_matrix: need 0 <= f_min < f_max <= {nyquist} Hz, got {f_min}, {f_max}")
    bins_mel = hz_to_mel(torch.linspace(0.0, nyquist, num_bins, dtype=torch.float64), "htk")
    edges = torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64), "htk")),
                           float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64), "htk")),
                           num_bands + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights


class VGGishFrontend(nn.Module):
    """Log-mel examples for VGGish: `wav` [B, T] at 16 kHz → [B, n_examples, 96, 64], n_examples =
    (1 + (T - 400) // 160) // 96, which needs T >= 15600 samples for one example.

    Computes in the input's dtype; float64 input reproduces the float64 numpy reference to round-off.
    """

    window: Tensor
    mel_matrix: Tensor

    def __init__(self) -> None:
        super().__init__()
        n = torch.arange(WINDOW_SAMPLES, dtype=torch.float64)
        self.register_buffer("window", 0.5 - 0.5 * torch.cos(2 * torch.pi * n / WINDOW_SAMPLES), persistent=False)
        self.register_buffer("mel_matrix", vggish_mel_matrix(), persistent=False)

    def log_mel(self, wav: Tensor) -> Tensor:
        """`wav` [B, T] at 16 kHz → log-mel [B, 1 + (T - 400) // 160, 64] (no padding, as the reference)."""
        if wav.ndim != 2 or wav.shape[-1] < WINDOW_SAMPLES:
            raise ValueError(f"VGGishFrontend: expected wav [B, T] with T >= {WINDOW_SAMPLES}, got {tuple(wav.shape)}")
        frames = wav.unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES) * self.window.to(wav.dtype)  # [B, F, 400]
        magnitude = torch.fft.rfft(frames, n=FFT_SIZE).abs()  # [B, F, 257]
        return torch.log(magnitude @ self.mel_matrix.to(wav.dtype) + LOG_OFFSET)

    def forward(self, wav: Tensor) -> Tensor:
        log_mel = self.log_mel(wav)
        if log_mel.shape[1] < EXAMPLE_FRAMES:
            raise ValueError(f"VGGishFrontend: {wav.shape[-1]} samples give {log_mel.shape[1]} frames, fewer than "
                             f"one example of {EXAMPLE_FRAMES} (needs {MIN_SAMPLES} samples at {SAMPLE_RATE} Hz)")
        return log_mel.unfold(1, EXAMPLE_FRAMES, EXAMPLE_FRAMES).transpose(-1, -2)  # [B, n_examples, 96, 64]


def _vgg_features() -> nn.Sequential:
    """The convolution stack, laid out as torchvggish's `make_layers` so that parameter names match."""
    layers: list[nn.Module] = []
    in_channels = 1
    for spec in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(spec), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(spec)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish network: log-mel examples [N, 96, 64] → embeddings [N, 128] (non-negative, after the last ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE), nn.ReLU(inplace=True),
        )

    def forward(self, examples: Tensor) -> Tensor:
        x = self.features(examples[:, None])  # [N, 512, 6, 4]
        # Flatten in (time, frequency, channel) order, as the TensorFlow model did.
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))


class VGGishPCA(nn.Module):
    """AudioSet postprocessing: PCA with whitening, clipping to [-2, 2] and 8-bit quantisation to 0..255.

    Buffers `pca_matrix` [128, 128] (eigenvectors as rows) and `pca_means` [128, 1], named as torchvggish's
    `Postprocessor`, so a `pproc.*` state dict loads unchanged.
    """

    pca_matrix: Tensor
    pca_means: Tensor

    def __init__(self, pca_matrix: Tensor | None = None, pca_means: Tensor | None = None) -> None:
        super().__init__()
        matrix = torch.zeros(EMBEDDING_SIZE, EMBEDDING_SIZE) if pca_matrix is None else pca_matrix
        means = torch.zeros(EMBEDDING_SIZE) if pca_means is None else pca_means
        if tuple(matrix.shape) != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.numel() != EMBEDDING_SIZE:
            raise ValueError(f"VGGishPCA: expected pca_matrix [128, 128] and pca_means [128], got "
                             f"{tuple(matrix.shape)} and {tuple(means.shape)}")
        self.register_buffer("pca_matrix", matrix.to(torch.float32).clone())
        self.register_buffer("pca_means", means.to(torch.float32).reshape(EMBEDDING_SIZE, 1).clone())

    def forward(self, embeddings: Tensor) -> Tensor:
        """[N, 128] raw embeddings → [N, 128] quantised values in {0, 1, …, 255} (float)."""
        projected = (self.pca_matrix @ (embeddings.T - self.pca_means)).T
        clipped = projected.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


class VGGishEmbedder:
    """VGGish as an `audiodiff.evaluation.embedders.FrameEmbedder`: one 128-d embedding per 0.96 s example.

    Clips are downmixed to mono by the channel mean and resampled to 16 kHz (soxr); a clip shorter than one
    example (15600 samples, 0.975 s) is zero-padded to one. `embed_frames` gives each clip's example embeddings
    [n_i, 128]; `embed` their mean [N, 128]. Examples of all clips share batches of `batch_size`.

    Args:
        model: a `VGGish` with its weights; frozen (eval mode, no gradients) here.
        pca: AudioSet PCA postprocessing applied to every example embedding, or None for raw embeddings.
        batch_size: examples per forward pass.
    """

    sample_rate = SAMPLE_RATE
    embedding_dim = EMBEDDING_SIZE

    def __init__(self, model: VGGish, pca: VGGishPCA | None = None, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"VGGishEmbedder: batch_size must be >= 1, got {batch_size}")
        self.model = freeze(model)
        self.pca = None if pca is None else freeze(pca.to(module_device(model)))
        self.frontend = VGGishFrontend()
        self.batch_size = batch_size
        weights = nn.ModuleDict({"model": model} if pca is None else {"model": model, "pca": pca})
        digest = weights_digest(weights)
        settings = {"version": _VERSION, "postprocess": pca is not None}
        self.id = make_id("vggish", settings, digest)
        self.frames_id = make_id("vggish-frames", settings, digest)

    def examples(self, wavs: WavBatch, sample_rate: int) -> list[Tensor]:
        """Log-mel examples of each clip, [n_i, 96, 64] float64 (computed in float64 as the reference does)."""
        clips = prepare_clips(wavs, sample_rate, SAMPLE_RATE, 1, "VGGishEmbedder")
        return [self.frontend(pad_to(clip, MIN_SAMPLES).to(torch.float64))[0] for clip in clips]

    @torch.no_grad()
    def embed_frames(self, wavs: WavBatch, sample_rate: int) -> list[Tensor]:
        """Clips at `sample_rate` Hz → N tensors [n_i, 128] float32 on the CPU, one row per 0.96 s example."""
        examples = self.examples(wavs, sample_rate)
        counts = [e.shape[0] for e in examples]
        device = module_device(self.model)
        stacked = torch.cat(examples).to(device=device, dtype=torch.float32)
        outputs = []
        for start in range(0, stacked.shape[0], self.batch_size):
            embeddings = self.model(stacked[start: start + self.batch_size])
            if self.pca is not None:
                embeddings = self.pca(embeddings)
            outputs.append(embeddings.float().cpu())
        return list(torch.cat(outputs).split(counts))

    def embed(self, wavs: WavBatch, sample_rate: int) -> Tensor:
        """Clips at `sample_rate` Hz → [N, 128] float32 on the CPU: the mean of each clip's example embeddings."""
        return torch.stack([frames.mean(dim=0) for frames in self.embed_frames(wavs, sample_rate)])


def _checkpoint(path: str | Path | None, file_name: str, what: str) -> Path:
    if path is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no path given and {path} does not exist; download {_FILES_URL}"
                                    f"{file_name} and pass its path (or place it there)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


def load_vggish_pca(path: str | Path | None = None) -> VGGishPCA:
    """The AudioSet PCA parameters from torchvggish's `vggish_pca_params-970ea276.pth` (a dict of numpy arrays
    "pca_eigen_vectors" [128, 128] and "pca_means" [128]); `path=None` looks in torch.hub's checkpoint folder.

    Loaded with `weights_only=True`, allowing only the numpy array reconstruction globals.
    """
    path = _checkpoint(path, PCA_FILE, "load_vggish_pca")
    # numpy 1 pickles name numpy.core.multiarray._reconstruct, numpy 2 numpy._core.multiarray._reconstruct.
    allowed = [np.ndarray, np.dtype, *(type(np.dtype(code)) for code in ("f4", "f8")),
               *((_reconstruct, f"{module}.multiarray._reconstruct") for module in ("numpy.core", "numpy._core"))]
    with torch.serialization.safe_globals(allowed):
        params = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"pca_eigen_vectors", "pca_means"} - set(params)
    if missing:
        raise ValueError(f"load_vggish_pca: {path} lacks {sorted(missing)}; expected torchvggish's PCA file")
    return VGGishPCA(torch.as_tensor(params["pca_eigen_vectors"]), torch.as_tensor(params["pca_means"]))


def load_vggish(path: str | Path | None = None, postprocess: bool = False, pca_path: str | Path | None = None,
                batch_size: int = 64, device: str | torch.device = "cpu") -> VGGishEmbedder:
    """VGGish embedder from torchvggish's weights file.

    The weights are not shipped: download `vggish-10086976.pth` (and, for `postprocess=True`,
    `vggish_pca_params-970ea276.pth`) from the torchvggish v0.1 release. `path=None` / `pca_path=None` look for
    them in `torch.hub.get_dir()/checkpoints`, where `torch.hub` stores them. A state dict of the torch.hub model,
    which holds `pproc.pca_matrix` / `pproc.pca_means` beside the network, also loads; its PCA is then used when
    `postprocess=True` and no `pca_path` is given. Loaded with `weights_only=True`.
    """
    path = _checkpoint(path, WEIGHTS_FILE, "load_vggish")
    state = torch.load(path, map_location="cpu", weights_only=True)
    pca_state = {key.removeprefix("pproc."): state.pop(key) for key in list(state) if key.startswith("pproc.")}
    with torch.device("meta"):  # no throwaway random initialisation; the state's tensors are adopted
        model = VGGish()
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as error:
        raise ValueError(f"load_vggish: {path} is not a VGGish state dict: {error}") from error
    pca = None
    if postprocess:
        if pca_path is None and {"pca_matrix", "pca_means"} <= set(pca_state):
            pca = VGGishPCA(pca_state["pca_matrix"], pca_state["pca_means"])
        else:
            pca = load_vggish_pca(pca_path)
    return VGGishEmbedder(model.float().to(device), pca, batch_size)
