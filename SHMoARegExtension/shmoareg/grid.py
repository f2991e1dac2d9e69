"""The network grid: an isotropic grid in the fixed image's physical frame, and resampling onto it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Grid:
    """A 3D sampling grid in physical (LPS) space; ``size`` and ``spacing`` in ITK (x, y, z) order."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        """The grid of a SimpleITK image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(Z, Y, X)``."""
        return self.size[2], self.size[1], self.size[0]

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a 3x3 matrix (columns are the index axes)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def coarsened(self, factor: int, size: tuple[int, int, int]) -> "Grid":
        """The grid of this one averaged down by ``factor`` (cell-centred: coarse voxel ``j`` covers
        voxels ``[j f, (j + 1) f)``), with ``size`` voxels (x, y, z), e.g. after padding."""
        shift = self.direction_matrix @ ((factor - 1) / 2.0 * np.asarray(self.spacing))
        return Grid(tuple(int(n) for n in size), tuple(s * factor for s in self.spacing),
                    tuple(float(v) for v in np.asarray(self.origin) + shift), self.direction)

    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An empty image on this grid, for resampling."""
        image = sitk.Image([int(n) for n in self.size], pixel_type)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def physical_points(self) -> np.ndarray:
        """Physical coordinates of every voxel, ``(Z, Y, X, 3)`` float64, LPS."""
        axes = [np.arange(n, dtype=np.float64) * s for n, s in zip(self.size, self.spacing)]
        zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        scaled = np.stack((xx, yy, zz), axis=-1)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin)


def auto_spacing(fixed: sitk.Image, max_voxels: int) -> float:
    """Finest isotropic spacing, not finer than the fixed image's, whose grid has at most ``max_voxels``."""
    extent = [(n - 1) * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    spacing = min(fixed.GetSpacing())
    volume = np.prod([e + spacing for e in extent])
    budget_spacing = (volume / max_voxels) ** (1.0 / 3.0)
    return float(max(spacing, budget_spacing))


IndexBox = tuple[np.ndarray, np.ndarray]  # lowest and highest voxel index (x, y, z), inclusive


def foreground_box(mask: sitk.Image, margin_mm: float) -> Optional[IndexBox]:
    """The index box of a mask's nonzero voxels grown by ``margin_mm``, clipped to the image (None if empty)."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not statistics.HasLabel(1):
        return None
    box = np.asarray(statistics.GetBoundingBox(1))
    margin = np.ceil(margin_mm / np.asarray(mask.GetSpacing())).astype(int)
    lower = np.maximum(box[:3] - margin, 0)
    upper = np.minimum(box[:3] + box[3:] - 1 + margin, np.asarray(mask.GetSize()) - 1)
    return lower, upper


def network_grid(fixed: sitk.Image, spacing: float, multiple: int = 16, region: Optional[IndexBox] = None) -> Grid:
    """Isotropic grid with the fixed image's direction, covering its extent, padded to ``multiple``.

    ``region`` (an index box of the fixed image) restricts the grid to that part of the image.
    The padding is shared equally on both sides so the grid stays centred on the region.
    """
    direction = np.asarray(fixed.GetDirection(), dtype=np.float64).reshape(3, 3)
    size_in, spacing_in = np.asarray(fixed.GetSize()), np.asarray(fixed.GetSpacing())
    lower, upper = region if region is not None else (np.zeros(3), size_in - 1)
    extent = (np.asarray(upper) - np.asarray(lower)) * spacing_in
    needed = np.ceil(extent / spacing - 1e-6).astype(int) + 1
    size = [int(math.ceil(n / multiple) * multiple) for n in needed]
    centre_index = (np.asarray(lower) + np.asarray(upper)) / 2.0
    centre = np.asarray(fixed.GetOrigin()) + direction @ (centre_index * spacing_in)
    half_extent = (np.asarray(size) - 1) / 2.0 * spacing
    origin = centre - direction @ half_extent
    return Grid(tuple(size), (spacing,) * 3, tuple(float(v) for v in origin), tuple(direction.ravel()))


def resample(image: sitk.Image, grid: Grid, transform: sitk.Transform | None = None,
             interpolator: int = sitk.sitkLinear, default_value: float = 0.0, extrapolate: bool = False) -> sitk.Image:
    """Resample ``image`` onto ``grid``; ``transform`` maps grid points to ``image`` points.

    Outside ``image`` the value is ``default_value``, or with ``extrapolate`` the nearest voxel's.
    """
    transform = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    return sitk.Resample(image, grid.reference_image(), transform, interpolator, default_value,
                         image.GetPixelID(), extrapolate)


def to_tensor(image: sitk.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """A SimpleITK scalar image as a ``(1, 1, Z, Y, X)`` tensor (float32, or int64 for integer images)."""
    import torch  # here, not at the top: the stages before the network use this module while torch loads
    array = sitk.GetArrayFromImage(image)
    tensor = torch.from_numpy(array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64))
    return tensor[None, None].to(device)


def from_array(array: np.ndarray, grid: Grid, is_vector: bool = False) -> sitk.Image:
    """A numpy array ``(Z, Y, X[, 3])`` on ``grid`` as a SimpleITK image."""
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image
