"""Registration losses: similarity (local NCC from MONAI, MSE) and field smoothness."""

from __future__ import annotations

import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss


def local_ncc(window: int = 9) -> torch.nn.Module:
    """Negative local normalised cross-correlation over ``window``^3 boxes (MONAI; -1 is perfect)."""
    return LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=window, kernel_type="rectangular")


def mse(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Mean squared intensity difference."""
    return torch.mean((warped - fixed) ** 2)


def _differences(field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (field[:, :, 1:] - field[:, :, :-1],
            field[:, :, :, 1:] - field[:, :, :, :-1],
            field[:, :, :, :, 1:] - field[:, :, :, :, :-1])


def diffusion(field: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of a field (first-order smoothness)."""
    return sum(torch.mean(d ** 2) for d in _differences(field)) / 3.0


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean squared second differences (pure and mixed) of a field: second-order smoothness."""
    total = field.new_zeros(())
    for first in _differences(field):
        for second in _differences(first):
            total = total + torch.mean(second ** 2)
    return total / 9.0
