"""Waveform transforms: resampling, channel conversion, cropping and padding.

All functions take and return torch tensors with time on the last axis; none of them keeps state.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import soxr
import torch
from torch import Tensor

ResampleQuality = Literal["HQ", "VHQ"]

# soxr works on these numpy dtypes; anything else goes through float32.
_SOXR_DTYPES = {torch.float32, torch.float64}


def resample(wav: Tensor, orig_sr: int, target_sr: int, quality: ResampleQuality = "HQ") -> Tensor:
    """Band-limited resampling with libsoxr.

    Args:
        wav: ``[..., T]`` floating-point samples at ``orig_sr`` Hz; all leading dims are resampled
            independently (as one multi-channel soxr stream, so the batch costs one call).
        orig_sr: input sample rate in Hz (> 0).
        target_sr: output sample rate in Hz (> 0).
        quality: soxr recipe, ``"HQ"`` (20-bit, the default) or ``"VHQ"`` (28-bit).

    Returns:
        ``[..., T']`` at ``target_sr`` Hz with ``T' = round(T * target_sr / orig_sr)`` as soxr computes
        it, but at least one frame for a non-empty input; same dtype and device as ``wav`` (the work
        happens on CPU numpy).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if quality not in ("HQ", "VHQ"):
        raise ValueError(f"quality must be 'HQ' or 'VHQ', got {quality!r}")
    if not torch.is_floating_point(wav):
        raise TypeError(f"resample needs a floating-point tensor, got dtype {wav.dtype}")
    if wav.ndim == 0:
        raise ValueError("resample needs a tensor with a time axis, got a scalar")
    if orig_sr == target_sr:
        return wav.clone()

    lead, num_frames = wav.shape[:-1], wav.shape[-1]
    if num_frames == 0:
        return wav.new_zeros(*lead, 0)
    work_dtype = wav.dtype if wav.dtype in _SOXR_DTYPES else torch.float32
    # soxr wants [T, channels], C-contiguous.
    flat = wav.detach().reshape(-1, num_frames).to(device="cpu", dtype=work_dtype)
    frames_np = np.ascontiguousarray(flat.numpy().T)

    min_frames = math.ceil(orig_sr / target_sr)
    if num_frames < min_frames:
        # Too short to yield a single output frame: pad with silence, keep the first output frame.
        pad = np.zeros((min_frames - num_frames, frames_np.shape[1]), dtype=frames_np.dtype)
        out_np = soxr.resample(np.concatenate([frames_np, pad]), orig_sr, target_sr, quality)[:1]
    else:
        out_np = soxr.resample(frames_np, orig_sr, target_sr, quality)

    out = torch.from_numpy(np.ascontiguousarray(out_np.T))
    return out.reshape(*lead, out.shape[-1]).to(device=wav.device, dtype=wav.dtype)


def to_channels(wav: Tensor, channels: int) -> Tensor:
    """Convert ``wav: [C, T]`` to ``[channels, T]``.

    ``channels == 1`` averages all channels (mean downmix); a mono input is duplicated to any ``channels``.
    Any other change (e.g. 6 → 2) is ambiguous without a layout and raises ``ValueError``.
    """
    if wav.ndim != 2:
        raise ValueError(f"to_channels expects wav [C, T], got shape {tuple(wav.shape)}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    have = wav.shape[0]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if have == 1:
        return wav.expand(channels, -1).clone()
    raise ValueError(
        f"channels: expected {channels}, got {have}; cannot convert {have} channels to {channels}: only a mean "
        f"downmix to mono and duplication of mono are defined (a {have}-channel layout has no agreed downmix)"
    )


def crop_or_pad(wav: Tensor, length: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """Take ``length`` frames of ``wav: [C, T]`` starting at ``offset``, zero-padding past the end.

    Args:
        wav: ``[C, T]`` (any leading dims work; time is the last axis).
        length: output length in frames (>= 1).
        offset: first frame to take, ``0 <= offset <= T``.

    Returns:
        ``(out [C, length], mask [length])`` where ``mask`` is ``True`` on frames that come from ``wav`` and
        ``False`` on padding.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if wav.ndim < 1:
        raise ValueError("crop_or_pad needs a tensor with a time axis, got a scalar")
    num_frames = wav.shape[-1]
    if not 0 <= offset <= num_frames:
        raise ValueError(f"offset must lie in [0, {num_frames}] for {num_frames} frames, got {offset}")
    piece = wav[..., offset : offset + length]
    valid = piece.shape[-1]
    mask = torch.zeros(length, dtype=torch.bool, device=wav.device)
    mask[:valid] = True
    if valid < length:
        piece = torch.nn.functional.pad(piece, (0, length - valid))
    return piece, mask


def random_offset(num_frames: int, length: int, generator: torch.Generator) -> int:
    """Uniform random start frame for a crop of ``length`` frames out of ``num_frames``.

    Returns an integer in ``[0, max(num_frames - length, 0)]`` (inclusive), drawn from ``generator`` so
    that the same seed gives the same crop; 0 when the clip is no longer than the crop.
    """
    if num_frames < 0 or length < 1:
        raise ValueError(
            f"need num_frames >= 0 and length >= 1, got num_frames={num_frames}, length={length}"
        )
    span = num_frames - length
    if span <= 0:
        return 0
    return int(torch.randint(0, span + 1, (1,), generator=generator).item())
