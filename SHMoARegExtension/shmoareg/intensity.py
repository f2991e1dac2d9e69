"""Intensity normalisation to [0, 1] and foreground masks."""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.protocol import INTENSITY_MODES

CT_WINDOW = (-1000.0, 1000.0)
MR_PERCENTILES = (0.5, 99.5)
# Percentiles are taken on at most about this many voxels, every n-th one (n odd, so rows do not alias): the
# same window to a fraction of a percent, at a tenth of the time on a 1 mm head.
PERCENTILE_VOXELS = 1_000_000


def detect_modality(image: sitk.Image) -> str:
    """``ct`` when the values look like Hounsfield units (air near -1000), else ``mr``."""
    low = float(np.percentile(_every_nth_voxel(image), 1))
    return "ct" if low <= -900.0 and float(sitk.GetArrayViewFromImage(image).max()) >= 200.0 else "mr"


def _every_nth_voxel(image: sitk.Image) -> np.ndarray:
    """A regular sample of ``image``'s values, at most about ``PERCENTILE_VOXELS`` of them."""
    values = sitk.GetArrayViewFromImage(image).ravel()
    return values[::(values.size // PERCENTILE_VOXELS) | 1]


def normalise(image: sitk.Image, mode: str = "auto", window: Optional[tuple[float, float]] = None) -> sitk.Image:
    """Map intensities to [0, 1]: a user ``window``, a CT window, or robust MR percentiles."""
    if mode not in INTENSITY_MODES:
        raise InputError(f"unknown intensity mode {mode!r}; use one of {', '.join(INTENSITY_MODES)}")
    if window is not None:
        low, high = window
    elif mode == "none":
        return sitk.Cast(image, sitk.sitkFloat32)
    elif (detect_modality(image) if mode == "auto" else mode) == "ct":
        low, high = CT_WINDOW
    else:
        values = _every_nth_voxel(image).astype(np.float32)
        low = float(np.percentile(values, MR_PERCENTILES[0]))
        above = values[values > low]
        high = float(np.percentile(above, MR_PERCENTILES[1])) if above.size else low
    if not high > low:
        raise InputError(f"intensity window [{low:g}, {high:g}] is empty; give --window LOW HIGH with LOW < HIGH")
    return sitk.IntensityWindowing(sitk.Cast(image, sitk.sitkFloat32), low, high, 0.0, 1.0)


def foreground_mask(normalised: sitk.Image) -> sitk.Image:
    """Foreground of a [0, 1] image: Otsu threshold, holes filled (UInt8, 1 inside)."""
    mask = sitk.OtsuThreshold(normalised, 0, 1)
    mask = sitk.BinaryFillhole(mask)
    return sitk.Cast(mask, sitk.sitkUInt8)


def field_of_view(image: sitk.Image) -> sitk.Image:
    """1.0 on every voxel of ``image``'s grid (resampled elsewhere, it is 0 outside the imaged region)."""
    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)
    return ones
