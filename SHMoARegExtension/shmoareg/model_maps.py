"""A network's per-voxel maps (its :class:`~shmoareg.models.base.MapSpec` list), written on the network's own grids.

Every map of the prediction becomes ``maps/<name>.nii.gz`` on its level's grid (one voxel per network voxel, in
the fixed image's frame, so a viewer overlays it on the fixed image by its geometry), and ``maps.json`` lists
them all: name, file, kind, level (and that level's spacing), units, description, displacement axis, and

- for a categorical map (value ``v`` = category ``v``, 1-based; 0 where no fixed-foreground voxel lies nearest
  to the network voxel), each category's name, colour (:data:`CATEGORY_COLOURS`, in order) and share of the
  fixed foreground's voxels;
- for a scalar map, its colour map (:func:`colour_map_for`) and the mean, minimum, maximum and percentiles
  (:data:`MAP_PERCENTILES`) of its values over the fixed foreground.

Shares and statistics count every fixed-foreground voxel once, with the value of the network voxel nearest to
it (:func:`foreground_per_cell`), so they do not depend on the network's resolution. Level 1 is the network
input's grid (the working grid, or that grid averaged down 2x when the network saw it so); level ``L`` is that
grid averaged down ``2**(L-1)`` times, cell-centred (:meth:`Grid.coarsened`). Scalar maps are written everywhere,
rounded to :data:`SCALAR_SIGNIFICANT_DIGITS` significant digits of their largest magnitude (which keeps the files
small). Runs before this version wrote the same maps resampled onto the fixed image's grid; both load by geometry.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional

import numpy as np
import torch

from shmoareg.grid import Grid, from_array
from shmoareg.imageio import write_image
from shmoareg.models.base import MapSpec
from shmoareg.protocol import COLOUR_MAPS, MAP_PERCENTILES, MAPS_FOLDER

# Tableau 10: category v gets entry (v - 1) mod 10.
CATEGORY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SCALAR_SIGNIFICANT_DIGITS = 4
# A scalar map in one of these units is a magnitude (Inferno: dark is none); any other (a probability, a gate,
# an entropy in nats) is shown with Viridis.
LENGTH_UNITS = ("mm", "cm", "m", "um", "voxel", "voxels")
# A scalar map in these units is a length in voxels of the network input (a network does not know the spacing):
# it is written in mm.
NETWORK_VOXELS = "voxels"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CONVENTIONS = ("every map on its level's grid in the fixed image's frame; level 1 is the network input's resolution "
               "(the working grid, or it averaged down 2x), level L is 2^(L-1) times coarser; categorical maps: value "
               "v is category v (1-based), 0 where no fixed-foreground (Otsu) voxel lies nearest; scalar maps: "
               f"written everywhere, rounded to {SCALAR_SIGNIFICANT_DIGITS} significant digits of their largest "
               "magnitude; shares and statistics over the fixed foreground's voxels, each with its nearest network "
               "voxel's value")


def _network_indices(network: Grid, fixed: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each fixed voxel index along x, y and z, the (fractional) index of ``network`` it lies at, clamped to
    ``network``'s outer voxel centres."""
    to_network_index = np.linalg.inv(network.direction_matrix * np.asarray(network.spacing))
    index_matrix = to_network_index @ (fixed.direction_matrix * np.asarray(fixed.spacing))
    if not np.allclose(index_matrix, np.diag(np.diag(index_matrix)), atol=1e-6):
        raise ValueError("the network grid's axes are not the fixed image's: the maps cannot be placed axis by axis")
    index_offset = to_network_index @ (np.asarray(fixed.origin) - np.asarray(network.origin))
    x, y, z = (np.clip(np.arange(fixed.size[axis]) * index_matrix[axis, axis] + index_offset[axis], 0.0,
                       network.size[axis] - 1.0) for axis in range(3))
    return x, y, z


def _nearest_indices(network: Grid, fixed: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``network`` voxel nearest to each fixed voxel, per axis: ``(z, y, x)`` integer index arrays."""
    x, y, z = _network_indices(network, fixed)
    return tuple(np.rint(index).astype(np.int64) for index in (z, y, x))


def foreground_per_cell(inside: np.ndarray, network: Grid, fixed: Grid) -> np.ndarray:
    """How many voxels of the fixed-grid mask ``inside`` (``(Z, Y, X)``) lie nearest to each ``network`` voxel:
    ``(z, y, x)`` counts, so that a map's share of the foreground is a weighted count on ``network``. Nearest
    placement is separable, so the counts are three sums along one axis each; the first, over every fixed voxel,
    sums bytes when no count along that axis can pass 255 (half the time of 32-bit sums on a 1 mm head)."""
    counts = torch.from_numpy(np.ascontiguousarray(inside, dtype=bool)).view(torch.uint8)
    for axis, index in enumerate(_nearest_indices(network, fixed)):
        shape = list(counts.shape)
        shape[axis] = network.size[2 - axis]
        dtype = torch.uint8 if axis == 0 and np.bincount(index).max() <= 255 else torch.int32
        counts = torch.zeros(shape, dtype=dtype).index_add_(axis, torch.from_numpy(index), counts.to(dtype))
    return counts.to(torch.int32).numpy()


def level_grid(network: Grid, level: int, shape: tuple[int, ...]) -> Grid:
    """The grid of a network's level ``level`` whose tensors have spatial ``shape`` (Z, Y, X): the network input's
    grid averaged down ``2**(level - 1)`` times, cell-centred (level 1 is the network input's grid)."""
    return network.coarsened(2 ** (level - 1), tuple(int(n) for n in shape[::-1]))


def colour_map_for(units: str) -> str:
    """``inferno`` for a magnitude in a length unit (:data:`LENGTH_UNITS`), ``viridis`` for anything else."""
    viridis, inferno = COLOUR_MAPS
    return inferno if units.strip().lower() in LENGTH_UNITS else viridis


def category_colour(value: int) -> str:
    """The colour of category ``value`` (1-based) as ``#rrggbb``."""
    return CATEGORY_COLOURS[(value - 1) % len(CATEGORY_COLOURS)]


def map_file(name: str) -> str:
    """The relative path of map ``name`` in the output folder."""
    return f"{MAPS_FOLDER}/{name}.nii.gz"


def write_model_maps(maps: dict[str, torch.Tensor], specs: list[MapSpec], network: Grid, fixed: Grid,
                     foreground: np.ndarray, output_path: Callable[[str], Any], write_files: bool = True,
                     model: Optional[str] = None) -> dict[str, Any]:
    """Write every map of ``maps`` (``(B, 1, Z_l, Y_l, X_l)``, batch item 0, described by ``specs``) on its level's
    grid through ``output_path(relative path)`` unless ``write_files`` is False, and return the content of
    ``maps.json``. ``network`` is the network input's grid (level 1), ``foreground`` the fixed foreground on
    ``fixed``'s grid (``(Z, Y, X)``, nonzero inside)."""
    by_name = {spec.name: spec for spec in specs}
    if len(by_name) != len(specs):
        raise ValueError("two maps of the network have the same name")
    if set(maps) != set(by_name):
        raise ValueError(f"the network returned maps {sorted(maps)} but describes {sorted(by_name)}")
    for spec in specs:
        if not _SAFE_NAME.match(spec.name):
            raise ValueError(f"map name {spec.name!r} is not a safe file name")
        if maps[spec.name].dim() != 5 or maps[spec.name].shape[1] != 1:
            raise ValueError(f"map {spec.name!r} has shape {tuple(maps[spec.name].shape)}, not (B, 1, Z, Y, X)")
    inside = np.asarray(foreground) > 0
    groups: dict[tuple[int, tuple[int, ...], str], list[MapSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.level, tuple(maps[spec.name].shape[2:]), spec.kind), []).append(spec)
    cells_by_grid: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
    entries: dict[str, dict[str, Any]] = {}
    for (level, shape, kind), group in groups.items():
        grid = level_grid(network, level, shape)
        if (level, shape) not in cells_by_grid:
            cells_by_grid[level, shape] = foreground_per_cell(inside, grid, fixed)
        cells = cells_by_grid[level, shape]
        stacked = torch.cat([maps[spec.name][0] for spec in group]).float()  # (C, z, y, x)
        if kind == "categorical":
            stacked = _category_values(group, stacked)
        for spec, values in zip(group, stacked.cpu().numpy()):
            units = spec.units
            if kind == "categorical":
                image_values, details = _categorical(spec, values, cells)
            else:
                if units == NETWORK_VOXELS:
                    values, units = values * float(np.mean(network.spacing)), "mm"
                image_values, details = _scalar(values, units, cells)
            entries[spec.name] = {"name": spec.name, "file": map_file(spec.name) if write_files else None,
                                  "kind": spec.kind, "level": spec.level, "spacing_mm": list(grid.spacing),
                                  "units": units, "description": spec.description, "axis": spec.axis, **details}
            if write_files:
                write_image(from_array(image_values, grid), output_path(map_file(spec.name)))
    return {"model": model, "maps": [entries[spec.name] for spec in specs],
            "network_input": {"size": list(network.size), "spacing_mm": list(network.spacing)},
            "foreground_voxels": int(inside.sum()), "conventions": CONVENTIONS}


def _category_values(group: list[MapSpec], stacked: torch.Tensor) -> torch.Tensor:
    """Categorical maps ``stacked`` ``(C, z, y, x)`` rounded to their category numbers, as 8 or 16-bit integers;
    a value outside 0..(number of categories) is an error."""
    most = max(len(spec.categories) for spec in group)
    values = torch.round(stacked)
    for spec, channel in zip(group, values):
        count = len(spec.categories)
        if channel.numel() and (float(channel.min()) < 0 or float(channel.max()) > count):
            raise ValueError(f"map {spec.name!r} has values outside 0..{count} (its categories)")
    return values.to(torch.uint8 if most < 256 else torch.int32)


def _categorical(spec: MapSpec, values: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The map's voxels (0 where ``cells``, the fixed-foreground voxels nearest to each network voxel, is 0) and its
    categories with their shares of the foreground."""
    count = len(spec.categories)
    values = np.where(cells > 0, values, 0).astype(np.uint8 if count < 256 else np.uint16)
    counts = np.bincount(values.ravel(), weights=cells.ravel(), minlength=count + 1)[1:]
    shares = counts / max(int(cells.sum()), 1)
    categories = [{"value": value, "name": name, "colour": category_colour(value), "share": float(share)}
                  for value, (name, share) in enumerate(zip(spec.categories, shares), start=1)]
    return values, {"categories": categories}


def _scalar(values: np.ndarray, units: str, cells: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The map's voxels (rounded) and the statistics of the fixed foreground's voxels, each voxel taking the value
    of its nearest network voxel (``cells``: how many foreground voxels lie nearest to each)."""
    values = _rounded(values.astype(np.float32))
    chosen = np.isfinite(values) & (cells > 0)
    weights, chosen_values = cells[chosen].astype(np.float64), values[chosen].astype(np.float64)
    statistics: dict[str, Optional[float]] = {"mean": None, "min": None, "max": None,
                                               **{f"p{p}": None for p in MAP_PERCENTILES}}
    if chosen_values.size:
        statistics.update(mean=float(np.average(chosen_values, weights=weights)), min=float(chosen_values.min()),
                          max=float(chosen_values.max()))
        percentiles = np.percentile(chosen_values, MAP_PERCENTILES, weights=weights, method="inverted_cdf")
        statistics.update({f"p{p}": float(v) for p, v in zip(MAP_PERCENTILES, percentiles)})
    return values, {"colour_map": colour_map_for(units), "statistics": statistics}


def _rounded(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to :data:`SCALAR_SIGNIFICANT_DIGITS` significant digits of their largest magnitude."""
    finite = values[np.isfinite(values)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    if largest == 0.0:
        return values
    step = 10.0 ** (math.floor(math.log10(largest)) - SCALAR_SIGNIFICANT_DIGITS + 1)
    return (np.round(values / step) * step).astype(np.float32)
