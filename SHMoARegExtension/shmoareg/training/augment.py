"""Augmentation of real training pairs: shared flips, a small affine of the moving side, gamma per image.

Tensors are ``(1, 1, Z, Y, X)``; every random number comes from the given ``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from shmoareg.training.config import AugmentationSpec

Tensor = torch.Tensor


def _uniform(generator: torch.Generator, size: int, bound: float) -> Tensor:
    return (torch.rand(size, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def rotation_matrix(angles: Tensor) -> Tensor:
    """Rotation matrix about the x, y and z axes (radians), in (x, y, z) order."""
    matrix = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles.tolist()):
        a, b = [i for i in range(3) if i != axis]
        turn = torch.eye(3, dtype=torch.float64)
        turn[a, a] = turn[b, b] = math.cos(angle)
        turn[a, b], turn[b, a] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    return matrix


def random_affine_grid(shape: tuple[int, int, int], spec: AugmentationSpec, generator: torch.Generator) -> Tensor:
    """A ``grid_sample`` grid (align_corners=True) of a random affine about the grid centre, in voxels.

    Rotation up to ``rotation_degrees`` per axis, scaling ``1 +- scaling`` per axis, translation up
    to ``translation`` voxels per axis.
    """
    matrix = rotation_matrix(_uniform(generator, 3, math.radians(spec.rotation_degrees)))
    matrix = matrix @ torch.diag(1 + _uniform(generator, 3, spec.scaling))
    shift = _uniform(generator, 3, spec.translation)
    half = torch.tensor([(shape[2] - 1) / 2, (shape[1] - 1) / 2, (shape[0] - 1) / 2], dtype=torch.float64)
    # Normalised coordinates n = p / half - 1 (p in voxels, (x, y, z)); about the centre p = half.
    normalised = torch.diag(1 / half) @ matrix @ torch.diag(half)
    theta = torch.cat([normalised, (shift / half).unsqueeze(1)], dim=1).unsqueeze(0).float()
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)


def augment_pair(fixed: Tensor, moving: Tensor, fixed_labels: Optional[Tensor], moving_labels: Optional[Tensor],
                 spec: AugmentationSpec, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Augmented copies of a pair (labels may be None)."""
    if spec.flip:
        axes = [2 + axis for axis in range(3) if bool(torch.rand(1, generator=generator) < 0.5)]
        if axes:
            fixed, moving = fixed.flip(axes), moving.flip(axes)
            fixed_labels = fixed_labels.flip(axes) if fixed_labels is not None else None
            moving_labels = moving_labels.flip(axes) if moving_labels is not None else None
    if spec.rotation_degrees > 0 or spec.scaling > 0 or spec.translation > 0:
        grid = random_affine_grid(tuple(moving.shape[2:]), spec, generator)
        moving = F.grid_sample(moving, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        if moving_labels is not None:
            moving_labels = F.grid_sample(moving_labels.float(), grid, mode="nearest", padding_mode="zeros",
                                          align_corners=True).round().to(moving_labels.dtype)
    if spec.gamma > 0:
        gammas = torch.exp(spec.gamma * torch.randn(2, generator=generator)).tolist()
        fixed, moving = fixed.clamp(0, 1) ** gammas[0], moving.clamp(0, 1) ** gammas[1]
    return fixed, moving, fixed_labels, moving_labels
