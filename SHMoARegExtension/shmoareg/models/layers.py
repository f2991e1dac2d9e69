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
                  decoded: Optional[torch.Tensor], correlation_radius: int = 0
                  ) -> tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """One coarse-to-fine decoder level: the field so far brought to this level (None at the coarsest), ``fuse``
    of the fixed features, the moving features warped by that field, their :func:`local_correlation` (with a
    ``correlation_radius`` > 0; also returned, else None) and the coarser decoded features upsampled here."""
    shape = tuple(fixed.shape[2:])
    if field is not None:
        field = resize_field(field, shape)
        moving = warp(moving, field)
    costs = local_correlation(fixed, moving, correlation_radius) if correlation_radius else None
    parts = [fixed, moving, *([costs] if costs is not None else []),
             *([upsample_to(decoded, shape)] if decoded is not None else [])]
    return field, fuse(torch.cat(parts, dim=1)), costs


def neighbourhood_offsets(radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``(2r + 1)^3`` integer offsets ``(x, y, z)`` of a radius-``r`` cube, ``(K, 3)`` float, z slowest."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    z, y, x = torch.meshgrid(steps, steps, steps, indexing="ij")
    return torch.stack((x.flatten(), y.flatten(), z.flatten()), dim=1)


def local_correlation(fixed: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """Cost volume ``(B, (2r + 1)^3, Z, Y, X)``: at each voxel ``p`` and offset ``o`` (order of
    :func:`neighbourhood_offsets`), ``sum_c fixed_c(p) moving_c(p + o) / sqrt(C)`` (zero padding outside)."""
    channels = fixed.shape[1]
    shape = fixed.shape[2:]
    padded = F.pad(moving, [radius] * 6)
    side = 2 * radius + 1
    costs = [(fixed * padded[:, :, dz:dz + shape[0], dy:dy + shape[1], dx:dx + shape[2]]).sum(dim=1)
             for dz in range(side) for dy in range(side) for dx in range(side)]
    return torch.stack(costs, dim=1) / channels ** 0.5


def matching_displacement(costs: torch.Tensor, radius: int) -> torch.Tensor:
    """The similarity-weighted read-out of a cost volume (:func:`local_correlation`): the offsets averaged with
    the softmax of their costs, a displacement ``(B, 3, Z, Y, X)`` in voxels of the level (x, y, z)."""
    weights = torch.softmax(costs, dim=1)
    offsets = neighbourhood_offsets(radius, costs.device).to(costs.dtype)
    return torch.einsum("bkzyx,kc->bczyx", weights, offsets)
