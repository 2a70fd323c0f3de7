"""audiodiff.denoisers: networks F(x [B, D, L], noise_level [B], cond) -> [B, D, L] with no schedule math."""

from audiodiff.denoisers.dit import DiT1d
from audiodiff.denoisers.unet1d import UNet1d

__all__ = ["DiT1d", "UNet1d"]
