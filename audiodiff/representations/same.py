"""SAME latents as the diffusion representation (Stable Audio 3 diffuses the bottleneck's output as it is: the
soft-norm bottleneck's running statistics already bring it to unit scale)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from audiodiff.autoencoders.same import SAME
from audiodiff.representations.base import Representation

SAME_REPRESENTATION_TARGET = "audiodiff.representations.same.SAMERepresentation"


class SAMERepresentation(Representation):
    """wav [B, C, T] at `sample_rate` Hz ↔ z [B, D, L], L = ceil(T / latent_hop) (T zero-padded on the right);
    decode gives L · latent_hop samples. Published: C = 2, D = 256, hop 4096 at 44.1 kHz (≈ 10.77 frames per
    second). Decoded audio is clamped to [-1, 1]. Deterministic: `encode_sample` is `encode`. The arguments are those of
    :class:`audiodiff.autoencoders.same.SAME` (vocoder: must be None; the model builder passes the configuration's).
    """

    def __init__(self, audio_channels: int = 2, patch_size: int = 256, channels: int = 128,
                 channel_multiples: Sequence[int] = (6,), strides: Sequence[int] = (16,),
                 depths: Sequence[int] = (6,), latent_channels: int = 256, differential: bool = True,
                 head_dim: int = 64, ff_mult: int = 3, window: int = 1,
                 sinusoidal_encoder: Sequence[int] = (0,), sinusoidal_decoder: Sequence[int] = (0,),
                 sample_rate: int = 44100, vocoder: nn.Module | None = None) -> None:
        super().__init__()
        if vocoder is not None:
            raise ValueError(f"SAMERepresentation decodes with its own decoder, but a vocoder "
                             f"({type(vocoder).__name__}) was given: set the vocoder to null")
        self.autoencoder = SAME(audio_channels, patch_size, channels, channel_multiples, strides, depths,
                                latent_channels, differential, head_dim, ff_mult, window, sinusoidal_encoder,
                                sinusoidal_decoder, sample_rate).eval().requires_grad_(False)
        self.sample_rate = sample_rate
        self.channels = audio_channels
        self.latent_channels = latent_channels
        self.latent_hop = self.autoencoder.latent_hop
        self.frame_rate = self.autoencoder.frame_rate

    def train(self, mode: bool = True) -> SAMERepresentation:
        """The autoencoder stays in eval mode whatever mode the surrounding model is put in."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def num_frames(self, seconds: float) -> int:
        """Latent frames whose decoding covers `seconds`."""
        return -(-int(round(seconds * self.sample_rate)) // self.latent_hop)

    def encode(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → z [B, D, ceil(T / hop)]."""
        if wav.ndim != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"SAMERepresentation.encode: expected wav [B, {self.channels}, T], got "
                             f"{tuple(wav.shape)}")
        weight = next(self.autoencoder.parameters())
        return self.autoencoder.encode(wav.to(weight))

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, L] → wav [B, C, L · hop] at `sample_rate` Hz, clamped to [-1, 1] as Stable Audio 3's pipeline
        clamps its output."""
        weight = next(self.autoencoder.parameters())
        return self.autoencoder.decode(z.to(weight)).clamp(-1.0, 1.0)
