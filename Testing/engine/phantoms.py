"""Analytic test images: a smooth phantom defined in physical space, sampled on any grid,
optionally seen through a known transform, so registrations have an exact answer."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from shmoareg.affine import as_affine
from shmoareg.grid import Grid

_RNG = np.random.default_rng(1234)
_CENTRES = _RNG.uniform(-30, 30, (40, 3))
_WIDTHS = _RNG.uniform(4, 8, 40)
_AMPLITUDES = _RNG.uniform(0.3, 1.0, 40)


def phantom_values(points: np.ndarray) -> np.ndarray:
    """Sum of Gaussian blobs at physical points ``(..., 3)`` (LPS mm), values in about [0, 2]."""
    values = np.zeros(points.shape[:-1])
    for centre, width, amplitude in zip(_CENTRES, _WIDTHS, _AMPLITUDES):
        values += amplitude * np.exp(-np.sum((points - centre) ** 2, axis=-1) / (2 * width * width))
    return values


def rotation_direction(angles: Sequence[float]) -> tuple[float, ...]:
    """A direction matrix (flattened) from Euler angles in radians."""
    euler = sitk.Euler3DTransform()
    euler.SetRotation(*angles)
    return tuple(euler.GetMatrix())


def phantom_image(size: Sequence[int], spacing: Sequence[float], origin: Sequence[float],
                  direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
                  moved_by: Optional[sitk.Transform] = None, scale: float = 1000.0) -> sitk.Image:
    """The phantom sampled on a grid. With ``moved_by`` = T (fixed -> moving points), the image is
    the moving image ``m(y) = f(T^-1(y))``, so that ``m(T(x)) = f(x)``."""
    grid = Grid(tuple(size), tuple(spacing), tuple(origin), tuple(direction))
    points = grid.physical_points()
    if moved_by is not None:
        inverse = as_affine(moved_by.GetInverse())
        matrix = np.asarray(inverse.GetMatrix()).reshape(3, 3)
        points = points @ matrix.T + np.asarray(inverse.GetTranslation())
    image = sitk.GetImageFromArray((phantom_values(points) * scale).astype(np.float32))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(direction))
    return image


def phantom_labels(image: sitk.Image, thresholds: Sequence[float] = (300.0, 700.0)) -> sitk.Image:
    """A label map of an image by intensity bands: 1 above the first threshold, 2 above the second."""
    values = sitk.GetArrayFromImage(image)
    labels = np.zeros(values.shape, dtype=np.int32)
    for label, threshold in enumerate(thresholds, start=1):
        labels[values > threshold] = label
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out
