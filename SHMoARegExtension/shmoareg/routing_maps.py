"""Expert-routing maps of a network's forward pass, written on the fixed image's grid.

For decoder level ``L`` (1 = full resolution) and axis ``a`` in x, y, z:
``routing/level{L}_{a}_expert.nii.gz`` (arg-max expert, 1-based, 0 outside the fixed foreground)
and ``routing/level{L}_{a}_gate{E}.nii.gz`` (probability of expert ``E``, 1-based, rounded to
0.01 and 0 outside the fixed foreground, which keeps the files small). Utilisation is the
fraction of fixed-foreground voxels whose arg-max is each expert (each list sums to 1).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg.grid import Grid, from_array
from shmoareg.models.base import AXES, RoutingRecord

MODES = ("full", "experts", "none")


def fixed_sampling_grid(network: Grid, fixed: Grid) -> torch.Tensor:
    """``grid_sample`` coordinates (align_corners=False) of every fixed voxel in the network grid.

    Levels are cell-centred (a level ``f`` times coarser has voxel ``j`` covering network voxels
    ``[j f, (j + 1) f)``), so these normalised coordinates hold for every level.
    """
    network_matrix = network.direction_matrix * np.asarray(network.spacing)
    continuous = (fixed.physical_points() - np.asarray(network.origin)) @ np.linalg.inv(network_matrix).T
    normalised = 2.0 * (continuous + 0.5) / np.asarray(network.size, dtype=np.float64) - 1.0
    return torch.from_numpy(normalised.astype(np.float32))[None]


def write_routing_maps(routing: RoutingRecord, experts: list[dict[str, Any]], network: Grid, fixed: Grid,
                       foreground: np.ndarray, output_path: Callable[[str], Any],
                       mode: str = "full") -> dict[str, Any]:
    """Write every level's and axis's maps through ``output_path(name)``; returns ``routing.json``'s content."""
    if mode not in MODES:
        raise ValueError(f"unknown routing-map mode {mode!r}; use one of {', '.join(MODES)}")
    inside = np.asarray(foreground) > 0
    utilisation: dict[str, dict[str, list[float]]] = {}
    coordinates = fixed_sampling_grid(network, fixed)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as writer:  # gzip runs outside the GIL
        pending: list[Future] = []
        for level, gates in sorted(routing.decoder_gates.items()):
            utilisation[str(level)] = _write_level(level, gates, coordinates, fixed, inside, len(experts),
                                                   output_path, mode, writer, pending)
        for write in pending:
            write.result()  # re-raises a failed write
    return {
        "experts": experts,
        "levels": {str(level): {"spacing_mm": network.spacing[0] * 2 ** (level - 1)}
                   for level in routing.decoder_gates},
        "utilisation": utilisation,
        "moa_utilisation": routing.moa_utilisation(),
        "maps": mode,
        "conventions": "expert maps: arg-max expert, 1-based, 0 outside the fixed foreground; gate maps: "
                       "probabilities rounded to 0.01, 0 outside the fixed foreground; all on the fixed "
                       "image's grid; level 1 is full resolution",
    }


def _write_level(level: int, gates: torch.Tensor, coordinates: torch.Tensor, fixed: Grid, inside: np.ndarray,
                 experts: int, output_path: Callable[[str], Any], mode: str, writer: ThreadPoolExecutor,
                 pending: list[Future]) -> dict[str, list[float]]:
    """Resample one level's gates to the fixed grid, queue its files on ``writer`` (appending the
    futures to ``pending``) and return its utilisation."""
    channels = gates[0].reshape(-1, *gates.shape[3:]).float()[None]  # (1, 3E, z, y, x)
    sampled = F.grid_sample(channels, coordinates.to(gates.device), mode="bilinear", padding_mode="border",
                            align_corners=False)
    probabilities = sampled[0].reshape(3, gates.shape[2], *fixed.shape).cpu().numpy()
    utilisation = {}
    for axis, name in enumerate(AXES):
        winners = probabilities[axis].argmax(axis=0).astype(np.uint8) + 1
        winners[~inside] = 0
        counts = np.bincount(winners[inside].ravel(), minlength=experts + 1)[1:].astype(float)
        utilisation[name] = (counts / max(counts.sum(), 1.0)).tolist()
        if mode == "none":
            continue
        pending.append(writer.submit(_write, from_array(winners, fixed),
                                     output_path(f"routing/level{level}_{name}_expert.nii.gz")))
        if mode == "full":
            for expert, gate in enumerate(probabilities[axis]):
                rounded = np.where(inside, np.round(gate, 2), 0.0).astype(np.float32)
                pending.append(writer.submit(_write, from_array(rounded, fixed),
                                             output_path(f"routing/level{level}_{name}_gate{expert + 1}.nii.gz")))
    return utilisation


def _write(image: sitk.Image, path: Any) -> None:
    sitk.WriteImage(image, str(path), True)
