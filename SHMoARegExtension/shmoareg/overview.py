"""A PNG overview of a registration: fixed, moving, warped, differences and the Jacobian."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmoareg.grid import Grid, resample


def _middle_slices(image: sitk.Image) -> list[np.ndarray]:
    """Axial, coronal and sagittal middle slices of an image's array (Z, Y, X)."""
    array = sitk.GetArrayFromImage(image)
    z, y, x = (n // 2 for n in array.shape)
    return [array[z], array[:, y][::-1], array[:, :, x][::-1]]


def write_overview(fixed: sitk.Image, moving: sitk.Image, output_dir: str | os.PathLike,
                   path: str | os.PathLike) -> Path:
    """Write a 3-row (axial, coronal, sagittal) by 6-column PNG from a finished run's ``output_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    warped = sitk.ReadImage(str(output_dir / "warped_moving.nii.gz"))
    jacobian = sitk.ReadImage(str(output_dir / "jacobian.nii.gz"))
    moving_on_fixed = resample(moving, Grid.of(fixed), None, sitk.sitkLinear,
                               float(sitk.GetArrayViewFromImage(moving).min()))
    columns = [
        ("fixed", _middle_slices(fixed), "gray", None),
        ("moving (before)", _middle_slices(moving_on_fixed), "gray", None),
        ("warped moving", _middle_slices(warped), "gray", None),
        ("|fixed - moving|", [np.abs(a - b) for a, b in zip(_middle_slices(fixed), _middle_slices(moving_on_fixed))],
         "magma", None),
        ("|fixed - warped|", [np.abs(a - b) for a, b in zip(_middle_slices(fixed), _middle_slices(warped))],
         "magma", None),
        ("Jacobian determinant", _middle_slices(jacobian), "RdBu_r", (0.0, 2.0)),
    ]
    intensity_range = np.percentile(sitk.GetArrayViewFromImage(fixed), [1, 99])
    difference_max = max(float(np.percentile(columns[3][1][0], 99.5)), 1e-6)
    figure, axes = plt.subplots(3, len(columns), figsize=(3 * len(columns), 9), squeeze=False)
    for column, (title, slices, colour_map, value_range) in enumerate(columns):
        for row, data in enumerate(slices):
            if value_range is None:
                value_range_here = (0.0, difference_max) if "|" in title else tuple(intensity_range)
            else:
                value_range_here = value_range
            shown = axes[row][column].imshow(data, cmap=colour_map, vmin=value_range_here[0],
                                             vmax=value_range_here[1], interpolation="nearest")
            axes[row][column].axis("off")
        axes[0][column].set_title(title)
        if title.startswith("Jacobian"):
            figure.colorbar(shown, ax=[axes[r][column] for r in range(3)], fraction=0.05)
    figure.suptitle("SHMoAReg registration overview (rows: axial, coronal, sagittal middle slices)")
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
