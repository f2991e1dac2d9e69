"""Pair-specific optimisation of a dense field: Adam on a similarity + diffusion, coarse to fine.

Each level's Adam never keeps a step that raised the objective (:func:`descend`): it is taken back and
retaken at half the learning rate, so a pair already aligned (an image and itself) stays where it is.

The similarity is local NCC (one contrast), or across contrasts MIND-SSC (the moving image's
descriptors are warped and compared with the fixed image's, so they are computed once per level)
or normalised gradient fields.

The images of each level are the network grid averaged down by the level's factor. The field
lives on the same grid, but never finer than ``finest_field_factor`` (half resolution by
default: a smooth field, and eight times fewer unknowns to integrate); it is upsampled
trilinearly to the level's images and carried to the next level. In diffeomorphic mode the
optimised field is a stationary velocity integrated by scaling and squaring.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from shmoareg.losses import (LocalNCC, box_mean, diffusion, edge_scale, image_gradient, mind_ssc, ngf_per_voxel,
                             weighted_mean)
from shmoareg.spatial import integrate_velocity, resize_field, warp


# Weight of each similarity against the smoothness term, so that one --smoothness means about the
# same regularity for both (chosen by measurement: benchmarks/README.md, "Similarity across contrasts").
SIMILARITY_SCALE = {"lncc": 1.0, "mind": 3.0, "ngf": 1.0}
# MIND-SSC here compares patches one voxel apart (the training loss: two): on a cross-contrast brain at 1 mm
# the end-point error was 0.95 mm against 1.13 (both at weight 10), 0.93 at weight 3. NGF's edge parameter is
# this fraction of the mean gradient norm (where the image is not flat).
MIND_DILATION = 1
NGF_EDGE = 1.0


@dataclass(frozen=True)
class OptimisationSettings:
    """Settings of the pair-specific optimisation."""

    steps: int = 100
    levels: tuple[int, ...] = (8, 4, 2, 1)
    learning_rate: float = 0.2
    smoothness: float = 1.0
    similarity: str = "lncc"
    ncc_window: int = 5
    diffeomorphic: bool = True
    integration_steps: int = 6
    finest_field_factor: int = 2


class Adam:
    """Adam (Kingma and Ba, 2015) on one tensor: ``torch.optim.Adam``'s update with its default betas and eps.

    Not ``torch.optim.Adam`` itself: its first use imports ``torch._dynamo``, which cost 1.5-3 s
    of every CPU registration here.
    """

    def __init__(self, parameter: torch.Tensor, learning_rate: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.parameter, self.learning_rate, self.betas, self.eps = parameter, learning_rate, betas, eps
        self.first = torch.zeros_like(parameter)
        self.second = torch.zeros_like(parameter)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """One update from ``parameter.grad``; the gradient is cleared afterwards."""
        gradient = self.parameter.grad
        beta1, beta2 = self.betas
        self.steps += 1
        self.first.mul_(beta1).add_(gradient, alpha=1 - beta1)
        self.second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        denominator = (self.second.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
        self.parameter.addcdiv_(self.first, denominator, value=-self.learning_rate / (1 - beta1 ** self.steps))
        self.parameter.grad = None


def descend(start: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], learning_rate: float,
            steps: int, on_step: Callable[[], None] = lambda: None) -> torch.Tensor:
    """``steps`` Adam steps on ``objective`` from ``start``; returns a point no worse than the best one evaluated.

    An Adam step moves each parameter by about the learning rate whatever the gradient's size. At an optimum
    the gradient is float rounding (1e-8 for an image against itself, as large as Adam's eps), so a field
    already right was kicked by half a step and then jittered by about a step for the rest of the level.
    Here a step that raised the objective is taken back: the parameter returns to the best point and the
    step is retaken from there with its gradient and half the learning rate. One more evaluation at the end
    chooses between the last point and the best.
    """
    parameter = start.clone().requires_grad_(True)
    optimiser = Adam(parameter, learning_rate)
    best, best_value, best_gradient = start.clone(), math.inf, None
    for _ in range(steps):
        loss = objective(parameter)
        value = loss.item()
        if value > best_value:
            with torch.no_grad():
                parameter.copy_(best)
            parameter.grad = best_gradient
            optimiser.learning_rate /= 2
        else:
            loss.backward()
            best_value, best_gradient = value, parameter.grad
            best.copy_(parameter.detach())
        optimiser.step()
        on_step()
    with torch.no_grad():
        return parameter.detach() if objective(parameter).item() <= best_value else best


def _level_steps(total: int, levels: int) -> list[int]:
    """Split ``total`` steps over levels, the coarsest getting the most (weights n, n-1, ..., 1)."""
    weights = list(range(levels, 0, -1))
    counts = [max(1, round(total * w / sum(weights))) for w in weights]
    counts[-1] = max(1, total - sum(counts[:-1]))
    return counts


def levels_from(levels: tuple[int, ...], start: int) -> tuple[int, ...]:
    """The levels no coarser than ``start`` (e.g. a network's resolution), never empty."""
    return tuple(f for f in levels if f <= start) or (min(levels),)


def _usable_levels(levels: tuple[int, ...], shape: tuple[int, ...], smallest: int = 8) -> tuple[int, ...]:
    """The levels whose grid keeps at least ``smallest`` voxels per axis (always at least the finest)."""
    usable = tuple(f for f in levels if min(shape) // f >= smallest)
    return usable or (min(levels),)


def _downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    return image if factor == 1 else F.avg_pool3d(image, factor, factor, ceil_mode=True)


def optimise_displacement(fixed: torch.Tensor, moving: torch.Tensor, settings: OptimisationSettings,
                          initial: Optional[torch.Tensor] = None,
                          fixed_valid: Optional[torch.Tensor] = None, moving_valid: Optional[torch.Tensor] = None,
                          on_step: Optional[Callable[[float], None]] = None) -> torch.Tensor:
    """Displacement ``(1, 3, Z, Y, X)`` in voxels of the input grid such that ``moving(p + u(p)) ~ fixed(p)``.

    ``initial`` (same shape) is a displacement to start from, e.g. a network's prediction: it
    seeds the optimised field at the coarsest level (as the stationary velocity in diffeomorphic
    mode, ``exp(v) ~ id + v`` for small fields), so the smoothness term acts on the whole field
    and can undo a rough prediction instead of only regularising a correction on top of it.
    ``fixed_valid`` and ``moving_valid`` (``(1, 1, Z, Y, X)``, 1 where the image has data) keep
    the similarity to where both images were actually imaged.
    """
    if settings.steps <= 0:
        return initial.detach().clone() if initial is not None else torch.zeros(
            (1, 3, *fixed.shape[2:]), device=fixed.device)
    parameter: Optional[torch.Tensor] = None
    levels = _usable_levels(settings.levels, tuple(fixed.shape[2:]))
    counts = _level_steps(settings.steps, len(levels))
    done = itertools.count(1)
    report = (lambda: on_step(next(done) / settings.steps)) if on_step is not None else (lambda: None)
    for factor, count in zip(levels, counts):
        fixed_level, moving_level = _downsample(fixed, factor), _downsample(moving, factor)
        fixed_mask = _downsample(fixed_valid, factor) if fixed_valid is not None else None
        moving_mask = _downsample(moving_valid, factor) if moving_valid is not None else None
        shape = tuple(fixed_level.shape[2:])
        similarity = similarity_loss(settings, fixed_level, moving_level)
        field_shape = tuple(_downsample(fixed, max(factor, settings.finest_field_factor)).shape[2:])
        if parameter is not None:
            start = resize_field(parameter, field_shape)
        elif initial is not None:
            start = resize_field(initial, field_shape)
        else:
            start = torch.zeros((1, 3, *field_shape), device=fixed.device)
        objective = _level_objective(settings, similarity, fixed_mask, moving_mask, shape)
        parameter = descend(start.detach(), objective, settings.learning_rate, count, report)
    with torch.no_grad():
        return _field(parameter.detach(), settings, tuple(fixed.shape[2:]))


Similarity = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@torch.no_grad()
def improves_similarity(fixed: torch.Tensor, moving: torch.Tensor, settings: OptimisationSettings,
                        displacement: torch.Tensor, fixed_valid: Optional[torch.Tensor] = None,
                        moving_valid: Optional[torch.Tensor] = None) -> bool:
    """Whether ``displacement`` matches the pair better than no displacement, by the optimisation's similarity.

    Scored at half resolution (the refinement's finest field), where it costs a fraction of one step.
    """
    factor = settings.finest_field_factor
    fixed, moving = _downsample(fixed, factor), _downsample(moving, factor)
    fixed_valid = _downsample(fixed_valid, factor) if fixed_valid is not None else None
    moving_valid = _downsample(moving_valid, factor) if moving_valid is not None else None
    displacement = resize_field(displacement, tuple(fixed.shape[2:]))
    similarity = similarity_loss(settings, fixed, moving)

    def loss(field: torch.Tensor) -> float:
        return float(similarity(field, overlap_weight(fixed_valid, moving_valid, field)))

    return loss(displacement) < loss(torch.zeros_like(displacement))


def similarity_loss(settings: OptimisationSettings, fixed: torch.Tensor, moving: torch.Tensor) -> Similarity:
    """``loss(displacement, weight)`` of ``settings.similarity`` for one level's images (lower is better)."""
    scale = SIMILARITY_SCALE[settings.similarity]
    if settings.similarity == "lncc":
        ncc = LocalNCC(settings.ncc_window)
        return lambda displacement, weight: scale * ncc(warp(moving, displacement), fixed, weight)
    if settings.similarity == "ngf":
        fixed_gradient = image_gradient(fixed)
        fixed_edge, moving_edge = edge_scale(fixed, NGF_EDGE), edge_scale(moving, NGF_EDGE)
        return lambda displacement, weight: scale * weighted_mean(
            ngf_per_voxel(warp(moving, displacement), fixed_gradient, fixed_edge, moving_edge), weight)
    fixed_descriptor, moving_descriptor = (mind_ssc(image, dilation=MIND_DILATION) for image in (fixed, moving))
    # Channels last on CPU: grid_sample then reads a sample's 12 channels from one place (the same numbers, a quarter
    # less time; not measured on a GPU).
    if moving.device.type == "cpu":
        moving_descriptor = moving_descriptor.contiguous(memory_format=torch.channels_last_3d)
    # Per voxel, the mean squared difference of the descriptors: mse_loss is one pass forward and one backward.
    return lambda displacement, weight: scale * weighted_mean(F.mse_loss(
        warp(moving_descriptor, displacement), fixed_descriptor, reduction="none").mean(dim=1, keepdim=True), weight)


def structured(image: torch.Tensor, window: int = 3, epsilon: float = 1e-8) -> torch.Tensor:
    """1 where ``image`` varies within a ``window``^3 box, 0 where it is exactly flat (e.g. the zero background
    of a skull-stripped scan), as a float mask of the same shape."""
    mean = box_mean(image, window)
    return ((box_mean(image * image, window) - mean * mean) > epsilon).to(image.dtype)


def overlap_weight(fixed_mask: Optional[torch.Tensor], moving_mask: Optional[torch.Tensor],
                   displacement: torch.Tensor) -> Optional[torch.Tensor]:
    """Where the fixed image and the warped moving image both have data (None: everywhere)."""
    if moving_mask is not None:
        moving_mask = warp(moving_mask, displacement, padding_mode="zeros")
    if fixed_mask is None:
        return moving_mask
    return fixed_mask if moving_mask is None else fixed_mask * moving_mask


def _level_objective(settings: OptimisationSettings, similarity: Similarity, fixed_mask: Optional[torch.Tensor],
                     moving_mask: Optional[torch.Tensor], shape: tuple[int, ...]
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """One level's objective of the optimised parameter: the similarity where both images have data, plus the
    smoothness term on the parameter itself."""
    def objective(parameter: torch.Tensor) -> torch.Tensor:
        displacement = _field(parameter, settings, shape)
        weight = overlap_weight(fixed_mask, moving_mask, displacement)
        return similarity(displacement, weight) + settings.smoothness * diffusion(parameter)

    return objective


def _field(parameter: torch.Tensor, settings: OptimisationSettings, shape: tuple[int, int, int]) -> torch.Tensor:
    """The displacement of the optimised parameter (a velocity in diffeomorphic mode) on ``shape``."""
    displacement = integrate_velocity(parameter, settings.integration_steps) if settings.diffeomorphic else parameter
    return resize_field(displacement, shape) if tuple(displacement.shape[2:]) != shape else displacement
