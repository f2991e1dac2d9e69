"""A per-voxel uncertainty of the deformation: the spread of a small ensemble of refinements.

Each member repeats the pair optimisation from the same start (the network's field, or zero)
with the smoothness weight scaled by one of ``SMOOTHNESS_FACTORS``. Where the images pin the
deformation down the members agree; where the field is mostly the regulariser's guess (flat
regions, the aperture problem along an edge, tissue one contrast does not show) they differ. The
map is the root-mean-square distance of the members and the registration's own field from their
mean, in millimetres.

It tracks the true error only weakly (Spearman about 0.2-0.4 on known-warp cases; measured in
benchmarks/README.md, "Uncertainty map"), so ``register`` writes it only on request. Perturbed
starts (random smooth offsets of the network's field) were measured too and tracked less,
especially across contrasts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import torch

from shmoareg.optimise import OptimisationSettings, optimise_displacement

SMOOTHNESS_FACTORS = (0.25, 4.0)


def ensemble_spread(fixed: torch.Tensor, moving: torch.Tensor, settings: OptimisationSettings,
                    final: torch.Tensor, initial: Optional[torch.Tensor] = None,
                    fixed_valid: Optional[torch.Tensor] = None, moving_valid: Optional[torch.Tensor] = None,
                    on_member: Optional[Callable[[float], None]] = None) -> torch.Tensor:
    """Spread ``(1, 1, Z, Y, X)`` in voxels of the grid of ``final`` (the registration's field).

    One further optimisation per factor of ``SMOOTHNESS_FACTORS`` starts from ``initial`` with
    ``settings.smoothness`` scaled by it, ``settings`` otherwise unchanged.
    """
    fields = [final]
    for member, factor in enumerate(SMOOTHNESS_FACTORS):
        fields.append(optimise_displacement(fixed, moving, replace(settings, smoothness=settings.smoothness * factor),
                                            initial=initial, fixed_valid=fixed_valid, moving_valid=moving_valid))
        if on_member is not None:
            on_member((member + 1) / len(SMOOTHNESS_FACTORS))
    return spread(fields)


def spread(fields: list[torch.Tensor]) -> torch.Tensor:
    """Root-mean-square distance ``(1, 1, Z, Y, X)`` of displacement fields ``(1, 3, Z, Y, X)`` from their mean."""
    stack = torch.stack(fields)
    return (stack - stack.mean(dim=0)).square().sum(dim=2).mean(dim=0).sqrt().unsqueeze(1)
