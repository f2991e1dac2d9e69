"""Test-time ensembles of a network's field: over mirror images of the pair, and over the pair swapped.

Mirror: a network trained with mirrored label maps should predict the mirror image of its field for a
mirrored pair; where it does not, its error differs between the two, and their mean is a better estimate.
The prediction on the pair mirrored along axis ``a`` is mirrored back and the ``a`` component of its
displacement negated. Axes are added in the order x, y, z, one network pass each.

Swap: the field from moving to fixed is, to first order in the field's gradient, the negative of the field
from fixed to moving; the antisymmetric mean ``(f(F, M) - f(M, F)) / 2`` keeps what the two predictions
agree on and cancels an error common to both directions (e.g. a drift that does not depend on which image
is fixed). It costs as many passes again as the mirror ensemble it wraps. :class:`SwapEnsemble` is the same
ensemble as a network, so that training can optimise the field ``register`` uses.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from shmoareg.models.base import ModelOutput
from shmoareg.protocol import MAX_NETWORK_FLIPS

Tensor = torch.Tensor


def mirrored_back(field: Tensor, axis: int) -> Tensor:
    """A voxel field ``(B, 3, Z, Y, X)`` predicted on images mirrored along ``axis`` (0 x, 1 y, 2 z), in the
    unmirrored frame: mirrored along that axis, its component along it negated."""
    back = field.flip(4 - axis)
    sign = torch.ones(3, dtype=field.dtype, device=field.device)
    sign[axis] = -1.0
    return back * sign.view(1, 3, 1, 1, 1)


def flip_averaged(predict: Callable[[Tensor, Tensor], Tensor], fixed: Tensor, moving: Tensor, flips: int,
                  plain: Tensor) -> Tensor:
    """The mean of ``plain`` (``predict(fixed, moving)``) and the predictions on the pair mirrored along each of
    the first ``flips`` axes (x, y, z), mirrored back."""
    if not 0 <= flips <= MAX_NETWORK_FLIPS:
        raise ValueError(f"flips must be between 0 and {MAX_NETWORK_FLIPS}, not {flips}")
    total = plain.clone()
    for axis in range(flips):
        dimension = 4 - axis
        total += mirrored_back(predict(fixed.flip(dimension), moving.flip(dimension)), axis)
    return total / (flips + 1)


def swap_averaged(predict: Callable[[Tensor, Tensor], Tensor], fixed: Tensor, moving: Tensor, flips: int,
                  plain: Tensor) -> Tensor:
    """The antisymmetric mean of the mirror ensemble on the pair (around ``plain``, ``predict(fixed, moving)``)
    and the negated mirror ensemble on the pair swapped: ``(f(F, M) - f(M, F)) / 2``."""
    forward = flip_averaged(predict, fixed, moving, flips, plain)
    backward = flip_averaged(predict, moving, fixed, flips, predict(moving, fixed))
    return antisymmetric_mean(forward, backward)


def antisymmetric_mean(forward: Tensor, backward: Tensor) -> Tensor:
    """The swap ensemble's field from the field on the pair and the field on the pair swapped."""
    return (forward - backward) / 2


def ensemble_averaged(predict: Callable[[Tensor, Tensor], Tensor], fixed: Tensor, moving: Tensor, flips: int,
                      swap: bool, plain: Tensor) -> Tensor:
    """``register``'s ensemble of the network's field: the mirror ensemble over ``flips`` axes, wrapped in the
    swap ensemble when ``swap``."""
    return (swap_averaged if swap else flip_averaged)(predict, fixed, moving, flips, plain)


class SwapEnsemble(nn.Module):
    """``network``'s swap ensemble (no mirrors) as a network: its displacement is the antisymmetric mean of the
    passes on the pair and on the pair swapped, its auxiliary loss their mean; routing and maps are the plain
    pass's, as in ``register``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, fixed: Tensor, moving: Tensor) -> ModelOutput:
        plain, swapped = self.network(fixed, moving), self.network(moving, fixed)
        return ModelOutput(antisymmetric_mean(plain.displacement, swapped.displacement), plain.routing,
                           (plain.auxiliary_loss + swapped.auxiliary_loss) / 2, plain.maps)
