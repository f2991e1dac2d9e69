"""From a network-grid voxel displacement to the written physical transform on the fixed grid.

The written transform is one ITK displacement field (LPS millimetres, resampling
convention: it maps fixed-space points to moving-space points). The affine initialisation is
baked in: ``T(x) = A(x + u(x))``, so ``d(x) = A(x + u(x)) - x`` on the fixed image's grid.
Outside the fixed grid ITK extrapolates a zero displacement.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.grid import Grid, from_array, resample
from shmoareg.spatial import jacobian_determinant


def physical_from_voxel(displacement: torch.Tensor, grid: Grid) -> np.ndarray:
    """Voxel field ``(1, 3, Z, Y, X)`` on ``grid`` -> physical LPS vectors ``(Z, Y, X, 3)`` in mm."""
    voxel = displacement[0].detach().cpu().double().numpy().transpose(1, 2, 3, 0)
    return (voxel * np.asarray(grid.spacing)) @ grid.direction_matrix.T


def voxel_from_physical(field: np.ndarray, grid: Grid) -> np.ndarray:
    """Physical vectors ``(Z, Y, X, 3)`` -> voxel units of ``grid`` ``(Z, Y, X, 3)``, in the field's dtype."""
    return (field @ grid.direction_matrix.astype(field.dtype)) / np.asarray(grid.spacing, dtype=field.dtype)


def total_displacement(displacement: Optional[torch.Tensor], network: Optional[Grid], fixed: Grid,
                       affine: Optional[sitk.Transform]) -> np.ndarray:
    """``d(x) = A(x + u(x)) - x`` on the fixed grid, ``(Z, Y, X, 3)`` float64 in mm (LPS).

    Computed as ``(A(x) - x) + M u(x)`` (``M`` the affine's matrix), so no array of every fixed
    point's coordinates is needed; ``M u`` is taken on the (smaller) network grid, as linear
    interpolation commutes with a linear map.
    """
    linear = sitk.AffineTransform(affine) if affine is not None else None
    field = np.zeros((*fixed.shape, 3))
    if displacement is not None:
        vectors = physical_from_voxel(displacement, network)
        if linear is not None:
            vectors = vectors @ np.asarray(linear.GetMatrix()).reshape(3, 3).T
        # A grid cropped to the fixed foreground ends inside the image: extend its border values.
        on_fixed = resample(from_array(vectors, network, is_vector=True), fixed, sitk.Transform(3, sitk.sitkIdentity),
                            sitk.sitkLinear, extrapolate=True)
        field = sitk.GetArrayFromImage(on_fixed)
    if linear is not None:
        field += sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
            linear, sitk.sitkVectorFloat64, fixed.size, fixed.origin, fixed.spacing, fixed.direction))
    return field


def displacement_image(field: np.ndarray, grid: Grid) -> sitk.Image:
    """A physical field ``(Z, Y, X, 3)`` as a float64 vector image on ``grid``."""
    return from_array(np.ascontiguousarray(field, dtype=np.float64), grid, is_vector=True)


def displacement_transform(field: np.ndarray, grid: Grid) -> sitk.DisplacementFieldTransform:
    """The ITK displacement-field transform of a physical field on ``grid`` (linear interpolation)."""
    return sitk.DisplacementFieldTransform(displacement_image(field, grid))


def jacobian_image(field: np.ndarray, grid: Grid) -> sitk.Image:
    """Jacobian determinant of ``x -> x + d(x)`` on ``grid`` as a float32 image."""
    voxel = voxel_from_physical(field.astype(np.float32), grid)  # float32: half the time of float64
    voxel = torch.from_numpy(voxel.transpose(3, 0, 1, 2).copy())[None]
    det = jacobian_determinant(voxel)[0, 0].numpy().astype(np.float32)
    return from_array(det, grid)
