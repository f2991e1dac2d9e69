"""A network's per-voxel maps (its :class:`~shmoareg.models.base.MapSpec` list), written on the fixed image's grid.

Every map of the prediction becomes ``maps/<name>.nii.gz`` on the fixed image's grid, and ``maps.json`` lists
them all: name, file, kind, level (and that level's spacing), units, description, displacement axis, and

- for a categorical map (value ``v`` = category ``v``, 1-based; 0 outside the fixed foreground), each
  category's name, colour (:data:`CATEGORY_COLOURS`, in order) and share of the fixed foreground's voxels;
- for a scalar map, its colour map (:func:`colour_map_for`) and the mean, minimum, maximum and percentiles
  (:data:`MAP_PERCENTILES`) of its values over the fixed foreground.

Level 1 is the network input's grid (the working grid, or that grid averaged down 2x when the network saw it
so); level ``L`` is that grid averaged down ``2**(L-1)`` times, cell-centred (:meth:`Grid.coarsened`).
Categorical maps are placed nearest, scalar maps linearly; scalar maps are written everywhere, rounded to
:data:`SCALAR_SIGNIFICANT_DIGITS` significant digits of their largest magnitude (which keeps the files small).
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
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
CONVENTIONS = ("every map on the fixed image's grid; level 1 is the network input's resolution (the working grid, or "
               "it averaged down 2x), level L is 2^(L-1) times coarser; categorical maps: value v is category v "
               "(1-based), 0 outside the fixed foreground, placed nearest; scalar maps: placed linearly, written "
               f"everywhere, rounded to {SCALAR_SIGNIFICANT_DIGITS} significant digits of their largest magnitude; "
               "shares and statistics over the fixed foreground (Otsu)")


def place_on_fixed(values: torch.Tensor, network: Grid, fixed: Grid, mode: str) -> torch.Tensor:
    """Maps ``values`` ``(C, z, y, x)`` on ``network`` sampled at every voxel of ``fixed``: ``(C, Z, Y, X)``.

    ``mode`` is ``linear`` (trilinear) or ``nearest``; beyond ``network``'s outer voxel centres its border
    values extend, as ``grid_sample`` with border padding would sample. The grids share their axes (a network
    grid is built in the fixed image's frame), so the sampling is separable, axis by axis: a gather for
    ``nearest``, a small interpolation matrix for ``linear``, without a coordinate per fixed voxel and axis.
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"unknown placement mode {mode!r}; use linear or nearest")
    x, y, z = _network_indices(network, fixed)
    if mode == "nearest":
        nearest = [torch.from_numpy(index).to(values.device) for index in _nearest_indices(network, fixed)]
        return values.index_select(3, nearest[2]).index_select(2, nearest[1]).index_select(1, nearest[0])
    x, y, z = (_linear_weights(index, network.size[axis]).to(values) for axis, index in enumerate((x, y, z)))
    placed = torch.matmul(y, values @ x.T)  # (C, z, Y, X)
    channels, _, rows, columns = placed.shape
    return torch.matmul(z, placed.reshape(channels, placed.shape[1], rows * columns)).reshape(
        channels, z.shape[0], rows, columns)


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
    ``(z, y, x)`` counts, so that a nearest-placed map's share of the foreground is a weighted count on
    ``network``. Nearest placement is separable, so the counts are three sums along one axis each."""
    counts = torch.from_numpy(np.ascontiguousarray(inside)).to(torch.int32)
    for axis, index in enumerate(_nearest_indices(network, fixed)):
        shape = list(counts.shape)
        shape[axis] = network.size[2 - axis]
        counts = torch.zeros(shape, dtype=torch.int32).index_add_(axis, torch.from_numpy(index), counts)
    return counts.numpy()


def _linear_weights(index: np.ndarray, size: int) -> torch.Tensor:
    """``(len(index), size)`` weights sampling a line of ``size`` voxels linearly at ``index`` (in [0, size - 1])."""
    lower = np.floor(index).astype(int)
    fraction = index - lower
    weights = np.zeros((len(index), size))
    rows = np.arange(len(index))
    weights[rows, lower] = 1.0 - fraction
    weights[rows, np.minimum(lower + 1, size - 1)] += fraction
    return torch.from_numpy(weights)


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
    """Put every map of ``maps`` (``(B, 1, Z_l, Y_l, X_l)``, batch item 0, described by ``specs``) on ``fixed``'s
    grid, write it through ``output_path(relative path)`` unless ``write_files`` is False, and return the content
    of ``maps.json``. ``network`` is the network input's grid (level 1), ``foreground`` the fixed foreground on
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
    entries: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as writer:  # gzip runs outside the GIL
        pending: list[Future] = []
        for (level, shape, kind), group in groups.items():
            grid = level_grid(network, level, shape)
            stacked = torch.cat([maps[spec.name][0] for spec in group]).float()  # (C, z, y, x)
            if kind == "categorical":
                stacked = _category_values(group, stacked)
                cells = foreground_per_cell(inside, grid, fixed)
            mode = "nearest" if kind == "categorical" else "linear"
            placed = place_on_fixed(stacked, grid, fixed, mode).cpu().numpy()
            for spec, values, network_values in zip(group, placed, stacked.cpu().numpy()):
                units = spec.units
                if kind == "categorical":
                    image_values, details = _categorical(spec, values, network_values, cells, inside)
                else:
                    if units == NETWORK_VOXELS:
                        values, units = values * float(np.mean(network.spacing)), "mm"
                    image_values, details = _scalar(values, units, inside)
                entry = {"name": spec.name, "file": map_file(spec.name) if write_files else None, "kind": spec.kind,
                         "level": spec.level, "spacing_mm": list(grid.spacing), "units": units,
                         "description": spec.description, "axis": spec.axis, **details}
                entries[spec.name] = entry
                if write_files:
                    pending.append(writer.submit(write_image, from_array(image_values, fixed),
                                                 output_path(map_file(spec.name))))
        for write in pending:
            write.result()  # re-raises a failed write
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


def _categorical(spec: MapSpec, values: np.ndarray, network_values: np.ndarray, cells: np.ndarray,
                 inside: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The map's voxels on the fixed grid (0 outside the foreground) and its categories with their shares of the
    foreground, counted on the network's grid (``cells``: foreground voxels nearest to each network voxel)."""
    count = len(spec.categories)
    values = values.astype(np.uint8 if count < 256 else np.uint16)
    values[~inside] = 0
    counts = np.bincount(network_values.ravel(), weights=cells.ravel(), minlength=count + 1)[1:]
    shares = counts / max(int(cells.sum()), 1)
    categories = [{"value": value, "name": name, "colour": category_colour(value), "share": float(share)}
                  for value, (name, share) in enumerate(zip(spec.categories, shares), start=1)]
    return values, {"categories": categories}


def _scalar(values: np.ndarray, units: str, inside: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The map's voxels (rounded) and the statistics of those inside the foreground."""
    values = _rounded(values.astype(np.float32))
    chosen = values[inside].astype(np.float64)
    chosen = chosen[np.isfinite(chosen)]
    statistics: dict[str, Optional[float]] = {"mean": None, "min": None, "max": None,
                                               **{f"p{p}": None for p in MAP_PERCENTILES}}
    if chosen.size:
        statistics.update(mean=float(chosen.mean()), min=float(chosen.min()), max=float(chosen.max()))
        statistics.update({f"p{p}": float(v) for p, v in zip(MAP_PERCENTILES, np.percentile(chosen, MAP_PERCENTILES))})
    return values, {"colour_map": colour_map_for(units), "statistics": statistics}


def _rounded(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to :data:`SCALAR_SIGNIFICANT_DIGITS` significant digits of their largest magnitude."""
    finite = values[np.isfinite(values)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    if largest == 0.0:
        return values
    step = 10.0 ** (math.floor(math.log10(largest)) - SCALAR_SIGNIFICANT_DIGITS + 1)
    return (np.round(values / step) * step).astype(np.float32)
