"""Small composable 3D layers shared by the registration networks."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.spatial import resize_field, warp


class ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions with instance norm and LeakyReLU; the first may stride by 2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.2),
        )


def upsample_to(features: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resize of feature maps to ``shape`` (Z, Y, X)."""
    return F.interpolate(features, size=shape, mode="trilinear", align_corners=False)


def zero_init_flow(conv: nn.Conv3d, scale: float = 1e-5) -> nn.Conv3d:
    """Near-zero weights and zero bias so an untrained flow layer predicts almost no motion."""
    nn.init.normal_(conv.weight, std=scale)
    nn.init.zeros_(conv.bias)
    return conv


def pad_to_multiple(shape: tuple[int, int, int], multiple: int) -> tuple[int, int, int]:
    """Smallest shape at least ``shape`` whose sides are multiples of ``multiple``."""
    return tuple(-(-n // multiple) * multiple for n in shape)


def warp_and_fuse(fuse: nn.Module, fixed: torch.Tensor, moving: torch.Tensor, field: Optional[torch.Tensor],
                  decoded: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """One coarse-to-fine decoder level: the field so far brought to this level (None at the coarsest), and
    ``fuse`` of the fixed features, the moving features warped by that field and the coarser decoded features
    upsampled here."""
    shape = tuple(fixed.shape[2:])
    if field is not None:
        field = resize_field(field, shape)
        moving = warp(moving, field)
    parts = [fixed, moving] if decoded is None else [fixed, moving, upsample_to(decoded, shape)]
    return field, fuse(torch.cat(parts, dim=1))
