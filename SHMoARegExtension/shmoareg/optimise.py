"""Pair-specific optimisation of a dense field: Adam on local NCC + diffusion, coarse to fine.

The field lives on each level's grid (the network grid averaged down by the level's factor)
and is carried to the next level by trilinear upsampling. In diffeomorphic mode the
optimised field is a stationary velocity integrated by scaling and squaring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from shmoareg.losses import diffusion, local_ncc
from shmoareg.spatial import compose, integrate_velocity, resize_field, warp


@dataclass(frozen=True)
class OptimisationSettings:
    """Settings of the pair-specific optimisation."""

    steps: int = 150
    levels: tuple[int, ...] = (4, 2)
    learning_rate: float = 0.1
    smoothness: float = 1.0
    ncc_window: int = 7
    diffeomorphic: bool = True
    integration_steps: int = 6


def _level_steps(total: int, levels: int) -> list[int]:
    """Split ``total`` steps over levels, the coarsest getting the most (weights n, n-1, ..., 1)."""
    weights = list(range(levels, 0, -1))
    counts = [max(1, round(total * w / sum(weights))) for w in weights]
    counts[-1] = max(1, total - sum(counts[:-1]))
    return counts


def _downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    return image if factor == 1 else F.avg_pool3d(image, factor, factor, ceil_mode=True)


def optimise_displacement(fixed: torch.Tensor, moving: torch.Tensor, settings: OptimisationSettings,
                          initial: Optional[torch.Tensor] = None,
                          on_step: Optional[Callable[[float], None]] = None) -> torch.Tensor:
    """Displacement ``(1, 3, Z, Y, X)`` in voxels of the input grid such that ``moving(p + u(p)) ~ fixed(p)``.

    ``initial`` (same shape) is a displacement to start from, e.g. a network's prediction; it
    is composed with the optimised correction (the correction acts first, in fixed space).
    """
    if settings.steps <= 0:
        return initial.detach().clone() if initial is not None else torch.zeros(
            (1, 3, *fixed.shape[2:]), device=fixed.device)
    similarity = local_ncc(settings.ncc_window)
    parameter: Optional[torch.Tensor] = None
    counts = _level_steps(settings.steps, len(settings.levels))
    done = 0
    for factor, count in zip(settings.levels, counts):
        fixed_level, moving_level = _downsample(fixed, factor), _downsample(moving, factor)
        shape = tuple(fixed_level.shape[2:])
        start = torch.zeros((1, 3, *shape), device=fixed.device) if parameter is None else resize_field(parameter, shape)
        base = resize_field(initial, shape) if initial is not None else None
        parameter = start.detach().requires_grad_(True)
        optimiser = torch.optim.Adam([parameter], lr=settings.learning_rate)
        for _ in range(count):
            optimiser.zero_grad(set_to_none=True)
            displacement = _field(parameter, base, settings)
            loss = similarity(warp(moving_level, displacement), fixed_level) + settings.smoothness * diffusion(parameter)
            loss.backward()
            optimiser.step()
            done += 1
            if on_step is not None:
                on_step(done / settings.steps)
    with torch.no_grad():
        final = resize_field(parameter.detach(), tuple(fixed.shape[2:]))
        return _field(final, initial, settings)


def _field(parameter: torch.Tensor, base: Optional[torch.Tensor], settings: OptimisationSettings) -> torch.Tensor:
    correction = integrate_velocity(parameter, settings.integration_steps) if settings.diffeomorphic else parameter
    # The correction acts first, in fixed space: T = T_base o C (refines the already warped image).
    return correction if base is None else compose(base, correction)
