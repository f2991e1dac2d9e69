"""From a network-grid voxel displacement to the written physical transform.

The written transform is one ITK displacement field (LPS millimetres, resampling
convention: it maps fixed-space points to moving-space points). The affine initialisation is
baked in: ``T(x) = A(x + u(x))``, so ``d(x) = A(x + u(x)) - x``. It is sampled on the
*transform lattice* (:func:`transform_lattice`): the working grid's points, extended to cover the
fixed image. Its linear interpolation equals, at every fixed voxel, the field sampled there (``u`` is
interpolated linearly from the working grid either way, and the affine part is linear), at a fraction
of the fixed grid's voxels. Outside the lattice ITK extrapolates a zero displacement.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.grid import Grid, from_array, resample
from shmoareg.spatial import jacobian_determinant


def physical_from_voxel(displacement: torch.Tensor, grid: Grid, then: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxel field ``(1, 3, Z, Y, X)`` on ``grid`` -> physical LPS vectors ``(Z, Y, X, 3)`` in mm (float64), mapped
    by the 3x3 matrix ``then`` after when it is given (one matrix product in torch, threaded)."""
    matrix = grid.direction_matrix * np.asarray(grid.spacing)
    if then is not None:
        matrix = np.asarray(then) @ matrix
    voxel = displacement[0].detach().cpu().double()
    vectors = torch.from_numpy(np.ascontiguousarray(matrix)) @ voxel.reshape(3, -1)
    return vectors.T.reshape(*voxel.shape[1:], 3).numpy()


def total_displacement(displacement: Optional[torch.Tensor], network: Optional[Grid], fixed: Grid,
                       affine: Optional[sitk.Transform]) -> np.ndarray:
    """``d(x) = A(x + u(x)) - x`` on the grid ``fixed`` (the fixed image's, or the transform lattice), ``(Z, Y, X, 3)``
    float64 in mm (LPS).

    Computed as ``(A(x) - x) + M u(x)`` (``M`` the affine's matrix), so no array of every fixed
    point's coordinates is needed; ``M u`` is taken on the (smaller) network grid, as linear
    interpolation commutes with a linear map.
    """
    linear = sitk.AffineTransform(affine) if affine is not None else None
    if displacement is None:
        return affine_displacement(linear, fixed) if linear is not None else np.zeros((*fixed.shape, 3))
    vectors = physical_from_voxel(displacement, network,
                                  np.asarray(linear.GetMatrix()).reshape(3, 3) if linear is not None else None)
    # A grid cropped to the fixed foreground ends inside the image: extend its border values.
    padding = extension_padding(network, fixed)
    if padding is not None:  # the transform lattice: the network grid's own points, extended
        field = np.pad(vectors, [*padding, (0, 0)], mode="edge")
    else:
        on_fixed = resample(from_array(vectors, network, is_vector=True), fixed, sitk.Transform(3, sitk.sitkIdentity),
                            sitk.sitkLinear, extrapolate=True)
        field = sitk.GetArrayFromImage(on_fixed)
    return add_affine_displacement(field, linear, fixed) if linear is not None else field


def extension_padding(inner: Grid, outer: Grid) -> Optional[list[tuple[int, int]]]:
    """When ``outer`` is ``inner`` extended by whole voxels (same spacing and axes, containing it), the voxels
    added before and after it along z, y and x; else None. Linear resampling from ``inner`` with its border values
    extended is then ``inner``'s values padded with its edges (a copy instead of an interpolation per voxel)."""
    if not (np.allclose(inner.spacing, outer.spacing, rtol=1e-9, atol=0)
            and np.allclose(inner.direction, outer.direction, atol=1e-12)):
        return None
    offset = np.linalg.solve(outer.direction_matrix * np.asarray(outer.spacing),
                             np.asarray(inner.origin) - np.asarray(outer.origin))
    before = np.rint(offset)
    after = np.asarray(outer.size) - np.asarray(inner.size) - before
    if not np.allclose(offset, before, atol=1e-6) or (before < 0).any() or (after < 0).any():
        return None
    return [(int(b), int(a)) for b, a in zip(before[::-1], after[::-1])]


def transform_lattice(working: Grid, fixed: Grid) -> Grid:
    """The written transform's grid: the points of ``working`` (which shares the fixed image's axes), extended by
    whole voxels until it covers the fixed image to its outer voxel faces."""
    spacing = np.asarray(working.spacing)
    to_index = np.linalg.inv(working.direction_matrix * spacing)
    faces = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in fixed.size], indexing="ij")).reshape(3, -1)
    points = np.asarray(fixed.origin)[:, None] + (fixed.direction_matrix * np.asarray(fixed.spacing)) @ faces
    indices = to_index @ (points - np.asarray(working.origin)[:, None])
    lower = np.minimum(np.floor(indices.min(axis=1) + 1e-6), 0).astype(int)
    upper = np.maximum(np.ceil(indices.max(axis=1) - 1e-6), np.asarray(working.size) - 1).astype(int)
    origin = np.asarray(working.origin) + working.direction_matrix @ (lower * spacing)
    return Grid(tuple(int(n) for n in upper - lower + 1), working.spacing, tuple(float(v) for v in origin),
                working.direction)


def affine_displacement(affine: sitk.AffineTransform, grid: Grid) -> np.ndarray:
    """``A(x) - x`` at every voxel of ``grid``, ``(Z, Y, X, 3)`` float64 in mm."""
    return add_affine_displacement(np.zeros((*grid.shape, 3)), affine, grid)


def add_affine_displacement(field: np.ndarray, affine: sitk.AffineTransform, grid: Grid) -> np.ndarray:
    """``field`` (``(Z, Y, X, 3)`` float64 in mm on ``grid``) plus ``A(x) - x``, in place; returns ``field``.

    ``A(x) - x`` is affine in the voxel index, ``c + sum_i k_i a_i`` (``a_i`` the change per step along
    index axis ``i``), so it is added as three broadcast rows instead of one point per voxel (about a
    third of the time of ``TransformToDisplacementField`` at 1 mm, which it matches).
    """
    matrix = np.asarray(affine.GetMatrix()).reshape(3, 3)
    change = matrix - np.eye(3)
    start = change @ (np.asarray(grid.origin) - np.asarray(affine.GetCenter())) + np.asarray(affine.GetTranslation())
    steps = change @ (grid.direction_matrix * np.asarray(grid.spacing))  # column i: one step along index axis i
    z, y, x = (np.arange(n, dtype=np.float64) for n in grid.shape)
    field += (z[:, None] * steps[:, 2] + start)[:, None, None, :]
    field += (y[:, None] * steps[:, 1])[None, :, None, :]
    field += (x[:, None] * steps[:, 0])[None, None, :, :]
    return field


def sampled_field(transform: sitk.Transform, reference: sitk.Image) -> sitk.Image:
    """Any transform's displacement sampled on ``reference``'s grid (float64 vectors, LPS mm)."""
    return sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                             reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())


def displacement_image(field: np.ndarray, grid: Grid) -> sitk.Image:
    """A physical field ``(Z, Y, X, 3)`` as a float64 vector image on ``grid``."""
    return from_array(np.ascontiguousarray(field, dtype=np.float64), grid, is_vector=True)


def displacement_transform(field: np.ndarray, grid: Grid) -> sitk.DisplacementFieldTransform:
    """The ITK displacement-field transform of a physical field on ``grid`` (linear interpolation)."""
    return sitk.DisplacementFieldTransform(displacement_image(field, grid))


def jacobian_image(field: np.ndarray, grid: Grid) -> sitk.Image:
    """Jacobian determinant of ``x -> x + d(x)`` on ``grid`` as a float32 image."""
    # float32 and torch (threaded): a third of the time of numpy in float64 at 1 mm.
    to_voxel = torch.from_numpy((grid.direction_matrix / np.asarray(grid.spacing)).astype(np.float32))
    voxel = (torch.from_numpy(field.astype(np.float32)) @ to_voxel).permute(3, 0, 1, 2)[None]
    det = jacobian_determinant(voxel)[0, 0].numpy()
    return from_array(det, grid)
