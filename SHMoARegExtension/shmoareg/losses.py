"""Registration losses: similarity (local NCC, MSE) and field smoothness."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def box_mean(volumes: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over ``window``^3 boxes (zero padding), as three separable 1D average pools."""
    half = window // 2
    for axis, kernel in enumerate(((window, 1, 1), (1, window, 1), (1, 1, window))):
        padding = [0, 0] * 3
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = half  # F.pad lists the last axis first
        volumes = F.avg_pool3d(F.pad(volumes, padding), kernel, stride=1)
    return volumes


class LocalNCC(torch.nn.Module):
    """Negative squared local normalised cross-correlation over ``window``^3 boxes; -1 is perfect.

    The same quantity as MONAI's ``LocalNormalizedCrossCorrelationLoss`` (rectangular kernel;
    a test checks they agree), computed with pooling, which is about four times faster on CPU.
    An optional ``weight`` map (e.g. where both images have data) restricts the mean.
    """

    def __init__(self, window: int = 9, epsilon: float = 1e-5) -> None:
        super().__init__()
        if window % 2 == 0:
            raise ValueError(f"the NCC window must be odd, not {window}")
        self.window, self.epsilon = window, epsilon

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        means = box_mean(torch.cat([warped, fixed, warped * warped, fixed * fixed, warped * fixed], dim=1),
                         self.window)
        mean_w, mean_f, mean_ww, mean_ff, mean_wf = means.split(warped.shape[1], dim=1)
        count = float(self.window ** 3)  # box sums, variances floored at epsilon, as MONAI does
        cross = count * (mean_wf - mean_w * mean_f)
        variance_w = (count * (mean_ww - mean_w * mean_w)).clamp(min=self.epsilon)
        variance_f = (count * (mean_ff - mean_f * mean_f)).clamp(min=self.epsilon)
        per_voxel = -(cross * cross) / (variance_w * variance_f)
        if weight is None:
            return per_voxel.mean()
        return (per_voxel * weight).sum() / weight.sum().clamp(min=1.0)


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
