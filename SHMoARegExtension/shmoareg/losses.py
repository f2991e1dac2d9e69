"""Registration losses: similarity (local NCC, MSE, MIND-SSC, NGF), field smoothness and soft Dice."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


SPATIAL_DIMS = (2, 3, 4)


def _window_sums(volumes: torch.Tensor, dim: int, half: int) -> torch.Tensor:
    """Sum over ``2 * half + 1`` neighbours along ``dim`` (zero padding), added in ascending order of the offset."""
    size = volumes.shape[dim]
    sums = torch.zeros_like(volumes)
    for offset in range(-min(half, size - 1), min(half, size - 1) + 1):
        length = size - abs(offset)
        sums.narrow(dim, max(-offset, 0), length).add_(volumes.narrow(dim, max(offset, 0), length))
    return sums


class _BoxMean(torch.autograd.Function):
    """The box mean and its adjoint (the same filter: it is symmetric), each one pass of sums per axis.

    The numbers of a zero padding and a 1D ``avg_pool3d`` per axis, forward and backward (the sums run in the
    pool's order, and its backward divides before it sums), in a third of their time on CPU.
    """

    @staticmethod
    def forward(ctx, volumes: torch.Tensor, window: int) -> torch.Tensor:
        ctx.window = window
        for dim in SPATIAL_DIMS:
            volumes = _window_sums(volumes, dim, window // 2).div_(window)
        return volumes

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        for dim in reversed(SPATIAL_DIMS):
            gradient = _window_sums(gradient / ctx.window, dim, ctx.window // 2)
        return gradient, None


def box_mean(volumes: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over ``window``^3 boxes (zero padding: a box reaching outside counts zeros there), separably per axis."""
    return _BoxMean.apply(volumes, window)


def weighted_mean(values: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mean of ``values``, or their ``weight``-weighted mean (a weight sum below 1 counts as 1)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


class LocalNCC(torch.nn.Module):
    """Negative squared local normalised cross-correlation over ``window``^3 boxes; -1 is perfect.

    The same quantity as MONAI's ``LocalNormalizedCrossCorrelationLoss`` (rectangular kernel;
    a test checks they agree), computed with separable box means, several times faster on CPU than its convolution.
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
        return weighted_mean(-(cross * cross) / (variance_w * variance_f), weight)


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


def _shifted(padded: torch.Tensor, reach: int, offset: tuple[int, int, int]) -> torch.Tensor:
    """The volume at ``p + offset`` (offset in (z, y, x) voxels, at most ``reach``), a view of the volume padded by
    ``reach`` on every side."""
    z, y, x = (n - 2 * reach for n in padded.shape[2:])
    dz, dy, dx = (reach + o for o in offset)
    return padded[:, :, dz:dz + z, dy:dy + y, dx:dx + x]


def _ssc_pairs(dilation: int) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 pairs of six-neighbourhood offsets that are ``dilation * sqrt(2)`` apart."""
    six = [tuple(sign * dilation * (axis == a) for a in range(3)) for axis in range(3) for sign in (-1, 1)]
    return [(six[i], six[j]) for i in range(6) for j in range(i + 1, 6)
            if sum((a - b) ** 2 for a, b in zip(six[i], six[j])) == 2 * dilation ** 2]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2, epsilon: float = 1e-6) -> torch.Tensor:
    """MIND self-similarity-context descriptor ``(B, 12, Z, Y, X)`` of a one-channel image ``(B, 1, Z, Y, X)``.

    Channel ``c`` compares the patches (``2 * radius + 1`` voxels per side) around two
    six-neighbourhood points ``a_c``, ``b_c`` of each voxel: ``exp(-D_c / V)`` with
    ``D_c = mean_patch (I(p + a_c) - I(p + b_c))^2`` and ``V`` the mean of the 12 ``D_c`` at the voxel
    (floored for flat regions), scaled so the largest channel is 1. Invariant to ``I -> s * I + t``.
    """
    padded = F.pad(image, [dilation] * 6, mode="replicate")  # edges replicated
    distances = box_mean(torch.cat([(_shifted(padded, dilation, a) - _shifted(padded, dilation, b)) ** 2
                                    for a, b in _ssc_pairs(dilation)], dim=1), 2 * radius + 1)
    variance = distances.mean(dim=1, keepdim=True)
    floor = epsilon + 1e-3 * variance.mean(dim=SPATIAL_DIMS, keepdim=True)
    descriptor = torch.exp(distances / -torch.maximum(variance, floor))
    return descriptor / descriptor.amax(dim=1, keepdim=True)


class MINDSSC(torch.nn.Module):
    """Mean squared difference of the MIND-SSC descriptors of two images: a multi-modal similarity, 0 is perfect."""

    def __init__(self, radius: int = 1, dilation: int = 2) -> None:
        super().__init__()
        self.radius, self.dilation = radius, dilation

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return torch.mean((mind_ssc(warped, self.radius, self.dilation)
                           - mind_ssc(fixed, self.radius, self.dilation)) ** 2)


def image_gradient(image: torch.Tensor) -> torch.Tensor:
    """Central differences ``(B, 3, Z, Y, X)`` (channels z, y, x) of a one-channel image, replicated edges."""
    padded = F.pad(image, (1, 1, 1, 1, 1, 1), mode="replicate")
    return torch.cat([(padded[:, :, 2:, 1:-1, 1:-1] - padded[:, :, :-2, 1:-1, 1:-1]) / 2,
                      (padded[:, :, 1:-1, 2:, 1:-1] - padded[:, :, 1:-1, :-2, 1:-1]) / 2,
                      (padded[:, :, 1:-1, 1:-1, 2:] - padded[:, :, 1:-1, 1:-1, :-2]) / 2], dim=1)


def ngf_per_voxel(warped: torch.Tensor, fixed_gradient: torch.Tensor, fixed_edge: float,
                  moving_edge: float) -> torch.Tensor:
    """``-cos^2`` of the angle between the two images' gradients, ``(B, 1, Z, Y, X)``: -1 where edges align.

    Each gradient norm is regularised by its image's ``edge`` (gradients much weaker than it,
    such as noise in a flat region, count as no edge), so a region flat in either image gives 0
    whatever the displacement: normalised gradient fields (Haber and Modersitzki, 2006), with the
    sign and offset of local NCC, so that a region the images do not share weighs nothing.
    """
    moving_gradient = image_gradient(warped)
    dot = (moving_gradient * fixed_gradient).sum(dim=1, keepdim=True)
    norms = ((moving_gradient.square().sum(dim=1, keepdim=True) + moving_edge ** 2)
             * (fixed_gradient.square().sum(dim=1, keepdim=True) + fixed_edge ** 2))
    return -dot.square() / norms


def edge_scale(image: torch.Tensor, fraction: float) -> float:
    """An edge parameter for NGF: ``fraction`` of the mean gradient norm of ``image`` where it is not flat
    (norm above 1 % of its maximum), so that an empty border does not change it."""
    norms = image_gradient(image).square().sum(dim=1).sqrt()
    textured = norms[norms > 0.01 * norms.max()]
    return fraction * float(textured.mean()) if textured.numel() else 1.0


def soft_dice_loss(warped_onehot: torch.Tensor, fixed_onehot: torch.Tensor, epsilon: float = 1e-5) -> torch.Tensor:
    """``1 -`` the mean soft Dice over batch and channels of two ``(B, L, Z, Y, X)`` one-hot (or soft) maps.

    A channel empty in both maps counts as a perfect match; 0 means identical maps.
    """
    overlap = torch.sum(warped_onehot * fixed_onehot, dim=SPATIAL_DIMS)
    total = torch.sum(warped_onehot, dim=SPATIAL_DIMS) + torch.sum(fixed_onehot, dim=SPATIAL_DIMS)
    return 1.0 - torch.mean((2.0 * overlap + epsilon) / (total + epsilon))
