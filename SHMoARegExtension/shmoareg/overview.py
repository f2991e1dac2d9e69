"""A PNG overview of a registration: fixed, moving, warped, differences, the Jacobian and,
for mixture-of-experts networks, the routing arg-max overlay per axis and the expert utilisation."""

from __future__ import annotations

import json
import os
from pathlib import Path
import numpy as np
import SimpleITK as sitk

from shmoareg.grid import Grid, resample
from shmoareg.model_maps import category_colour, map_file
from shmoareg.models.shmoareg_net import expert_map_name
from shmoareg.protocol import JACOBIAN_FILE, ROUTING_FILE, WARPED_FILE

ROUTING_LEVEL = 1  # the full-resolution decoder level is shown


def _middle_slices(image: sitk.Image) -> list[np.ndarray]:
    """Axial, coronal and sagittal middle slices of an image's array (Z, Y, X)."""
    array = sitk.GetArrayFromImage(image)
    z, y, x = (n // 2 for n in array.shape)
    return [array[z], array[:, y][::-1], array[:, :, x][::-1]]


def _image_columns(fixed: sitk.Image, moving: sitk.Image, output_dir: Path) -> list[tuple[str, list, str, tuple]]:
    warped = sitk.ReadImage(str(output_dir / WARPED_FILE))
    # On the transform's lattice (a folder of an earlier version: the fixed grid): shown on the fixed grid as the rest.
    jacobian = resample(sitk.ReadImage(str(output_dir / JACOBIAN_FILE)), Grid.of(fixed), None, sitk.sitkLinear, 1.0)
    moving_on_fixed = resample(moving, Grid.of(fixed), None, sitk.sitkLinear,
                               float(sitk.GetArrayViewFromImage(moving).min()))
    fixed_slices, moving_slices, warped_slices = (_middle_slices(i) for i in (fixed, moving_on_fixed, warped))
    before = [np.abs(a - b) for a, b in zip(fixed_slices, moving_slices)]
    after = [np.abs(a - b) for a, b in zip(fixed_slices, warped_slices)]
    intensity = tuple(np.percentile(sitk.GetArrayViewFromImage(fixed), [1, 99]))
    difference = (0.0, max(float(np.percentile(np.concatenate([b.ravel() for b in before]), 99.5)), 1e-6))
    return [
        ("fixed", fixed_slices, "gray", intensity),
        ("moving (before)", moving_slices, "gray", intensity),
        ("warped moving", warped_slices, "gray", intensity),
        ("|fixed - moving|", before, "magma", difference),
        ("|fixed - warped|", after, "magma", difference),
        ("Jacobian determinant", _middle_slices(jacobian), "RdBu_r", (0.0, 2.0)),
    ]


def _routing_row(axes: list, fixed: sitk.Image, output_dir: Path) -> None:
    routing = json.loads((output_dir / ROUTING_FILE).read_text())
    experts = [expert["name"] for expert in routing["experts"]]
    background = _middle_slices(fixed)[0]
    colours = [category_colour(value) for value in range(1, len(experts) + 1)]  # as maps.json and Slicer show them
    from matplotlib.colors import ListedColormap

    colour_map = ListedColormap(colours[: len(experts)])
    for column, axis in enumerate("xyz"):
        path = output_dir / map_file(expert_map_name(ROUTING_LEVEL, axis))
        winners = _middle_slices(sitk.ReadImage(str(path)))[0].astype(float)
        axes[column].imshow(background, cmap="gray")
        axes[column].imshow(np.ma.masked_equal(winners, 0), cmap=colour_map, vmin=0.5, vmax=len(experts) + 0.5,
                            alpha=0.6, interpolation="nearest")
        axes[column].set_title(f"level {ROUTING_LEVEL} expert for {axis}")
        axes[column].axis("off")
    chart = axes[3]
    levels = sorted(routing["utilisation"], key=int)
    groups = [(level, axis) for level in levels for axis in "xyz"]
    bottom = np.zeros(len(groups))
    for index, name in enumerate(experts):
        shares = np.array([routing["utilisation"][level][axis][index] for level, axis in groups])
        chart.bar(range(len(groups)), shares, bottom=bottom, color=colours[index], label=name)
        bottom += shares
    chart.set_xticks(range(len(groups)), [f"L{level}{axis}" for level, axis in groups], rotation=90, fontsize=7)
    chart.set_ylabel("share of foreground voxels")
    chart.set_title("expert utilisation")
    chart.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for unused in axes[4:]:
        unused.axis("off")


def write_overview(fixed: sitk.Image, moving: sitk.Image, output_dir: str | os.PathLike,
                   path: str | os.PathLike) -> Path:
    """Write a PNG of a finished run in ``output_dir``: three rows of middle slices (axial, coronal,
    sagittal) and, when the run wrote routing maps, a fourth row with the overlays and the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    columns = _image_columns(fixed, moving, output_dir)
    has_routing = (output_dir / ROUTING_FILE).is_file() and all(
        (output_dir / map_file(expert_map_name(ROUTING_LEVEL, axis))).is_file() for axis in "xyz")
    rows = 4 if has_routing else 3
    figure, axes = plt.subplots(rows, len(columns), figsize=(3 * len(columns), 3 * rows), squeeze=False)
    for column, (title, slices, colour_map, value_range) in enumerate(columns):
        for row, data in enumerate(slices):
            shown = axes[row][column].imshow(data, cmap=colour_map, vmin=value_range[0], vmax=value_range[1],
                                             interpolation="nearest")
            axes[row][column].axis("off")
        axes[0][column].set_title(title)
    figure.colorbar(shown, ax=[axes[r][-1] for r in range(3)], fraction=0.05)
    if has_routing:
        _routing_row(list(axes[3]), fixed, output_dir)
    figure.suptitle("SHMoAReg registration overview (rows: axial, coronal, sagittal middle slices)")
    path = Path(path)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path


def write_thumbnail(overview: str | os.PathLike, path: str | os.PathLike, width: int = 360) -> Path:
    """Write a copy of the PNG ``overview`` scaled down to at most ``width`` pixels across (Pillow, which
    matplotlib brings)."""
    from PIL import Image

    with Image.open(overview) as picture:
        picture.thumbnail((width, picture.height))
        picture.save(path)
    return Path(path)
