"""Intensity normalisation to [0, 1] and foreground masks."""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.protocol import INTENSITY_MODES

CT_WINDOW = (-1000.0, 1000.0)
MR_PERCENTILES = (0.5, 99.5)


def detect_modality(image: sitk.Image) -> str:
    """``ct`` when the values look like Hounsfield units (air near -1000), else ``mr``."""
    values = sitk.GetArrayViewFromImage(image)
    low = float(np.percentile(values, 1))
    return "ct" if low <= -900.0 and float(values.max()) >= 200.0 else "mr"


def normalise(image: sitk.Image, mode: str = "auto", window: Optional[tuple[float, float]] = None) -> sitk.Image:
    """Map intensities to [0, 1]: a user ``window``, a CT window, or robust MR percentiles."""
    if mode not in INTENSITY_MODES:
        raise InputError(f"unknown intensity mode {mode!r}; use one of {', '.join(INTENSITY_MODES)}")
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    if window is not None:
        low, high = window
    elif mode == "none":
        return sitk.Cast(image, sitk.sitkFloat32)
    elif (detect_modality(image) if mode == "auto" else mode) == "ct":
        low, high = CT_WINDOW
    else:
        low = float(np.percentile(values, MR_PERCENTILES[0]))
        above = values[values > low]
        high = float(np.percentile(above, MR_PERCENTILES[1])) if above.size else low
    if not high > low:
        raise InputError(f"intensity window [{low:g}, {high:g}] is empty; give --window LOW HIGH with LOW < HIGH")
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    result = sitk.GetImageFromArray(scaled)
    result.CopyInformation(image)
    return result


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
