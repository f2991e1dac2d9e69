"""Test-time adaptation: a copy of the network with its weights fine-tuned on the one pair it registers.

The loss is the pair optimisation's own (:func:`~shmoareg.optimise.similarity_loss` where both images have data,
plus ``settings.smoothness`` times the diffusion of the field), on the images as the network sees them. Each
weight tensor gets its own :class:`~shmoareg.optimise.Adam`. The network passed in is never changed, so the
shipped weights stay as they are; the adapted copy's prediction, routing and maps describe the field it gives.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.nn as nn

from shmoareg.losses import diffusion
from shmoareg.optimise import Adam, OptimisationSettings, overlap_weight, similarity_loss

Tensor = torch.Tensor


def pair_loss(fixed: Tensor, moving: Tensor, fixed_valid: Optional[Tensor], moving_valid: Optional[Tensor],
              settings: OptimisationSettings) -> Callable[[nn.Module], Tensor]:
    """The refinement's loss of a network's field on the pair: similarity where both images have data plus
    ``settings.smoothness`` times its diffusion. The similarity is set up once (MIND-SSC's descriptors of both
    images), not at every step."""
    similarity = similarity_loss(settings, fixed, moving)

    def loss(network: nn.Module) -> Tensor:
        displacement = network(fixed, moving).displacement
        return (similarity(displacement, overlap_weight(fixed_valid, moving_valid, displacement))
                + settings.smoothness * diffusion(displacement))

    return loss


def adapted_to_pair(network: nn.Module, fixed: Tensor, moving: Tensor, fixed_valid: Optional[Tensor],
                    moving_valid: Optional[Tensor], settings: OptimisationSettings, steps: int,
                    learning_rate: float, on_step: Optional[Callable[[int], None]] = None) -> nn.Module:
    """A copy of ``network`` (in eval mode, no gradients) after ``steps`` Adam steps on :func:`pair_loss`;
    ``on_step(done)`` after each."""
    if steps < 0:
        raise ValueError(f"steps must be non-negative, not {steps}")
    adapted = copy.deepcopy(network).eval()
    weights = list(adapted.parameters())
    for weight in weights:
        weight.requires_grad_(True)
    optimisers = [Adam(weight, learning_rate) for weight in weights]
    loss = pair_loss(fixed, moving, fixed_valid, moving_valid, settings)
    with torch.enable_grad():
        for done in range(1, steps + 1):
            loss(adapted).backward()
            for weight, optimiser in zip(weights, optimisers):
                if weight.grad is not None:  # a weight the pair did not use (e.g. an expert no voxel chose)
                    optimiser.step()
            if on_step is not None:
                on_step(done)
    return adapted.requires_grad_(False)
