"""SHMoAReg's expert routing: ``routing.json`` and, with ``--routing-maps full``, the gate maps.

The arg-max expert per decoder level ``L`` (1 = the network input's resolution) and axis ``a`` in x, y, z is
one of the network's maps (``maps/level{L}_{a}_expert.nii.gz``, :mod:`shmoareg.model_maps`);
``routing.json``'s utilisation is those maps' shares per expert (fractions of fixed-foreground voxels, each
list sums to 1). ``routing/level{L}_{a}_gate{E}.nii.gz`` is the probability of expert ``E`` (1-based) on the
level's grid, like the maps, rounded to 0.01 and 0 where no fixed-foreground voxel lies nearest (which keeps the
files small).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from shmoareg.grid import Grid, from_array
from shmoareg.imageio import write_image
from shmoareg.model_maps import foreground_per_cell, level_grid
from shmoareg.models.base import AXES, RoutingRecord
from shmoareg.models.shmoareg_net import expert_map_name
from shmoareg.protocol import ROUTING_FOLDER, ROUTING_MAP_MODES


def gate_map_file(level: int, axis: str, expert: int) -> str:
    """The relative path of a gate map (expert 1-based)."""
    return f"{ROUTING_FOLDER}/level{level}_{axis}_gate{expert}.nii.gz"


def expert_utilisation(maps: Optional[dict[str, Any]], levels: list[int]) -> dict[str, dict[str, list[float]]]:
    """``{level: {axis: [share per expert]}}`` from ``maps.json``'s content (its arg-max expert maps)."""
    entries = {entry["name"]: entry for entry in (maps or {}).get("maps", [])}
    utilisation: dict[str, dict[str, list[float]]] = {}
    for level in levels:
        per_axis = {}
        for axis in AXES:
            entry = entries.get(expert_map_name(level, axis))
            if entry is not None:
                shares = np.array([category["share"] for category in entry["categories"]], dtype=np.float64)
                per_axis[axis] = (shares / max(shares.sum(), 1e-12)).tolist()
        utilisation[str(level)] = per_axis
    return utilisation


def write_routing_maps(routing: RoutingRecord, experts: list[dict[str, Any]], network: Grid, fixed: Grid,
                       foreground: np.ndarray, output_path: Callable[[str], Any], mode: str = "full",
                       maps: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write the gate maps through ``output_path(relative path)`` when ``mode`` is ``full``; returns the content of
    ``routing.json``, its utilisation taken from ``maps`` (``maps.json``'s content)."""
    if mode not in ROUTING_MAP_MODES:
        raise ValueError(f"unknown routing-map mode {mode!r}; use one of {', '.join(ROUTING_MAP_MODES)}")
    inside = np.asarray(foreground) > 0
    levels = sorted(routing.decoder_gates)
    if mode == "full":
        for level in levels:
            _write_gates(level, routing.decoder_gates[level], network, fixed, inside, output_path)
    return {
        "experts": experts,
        "levels": {str(level): {"spacing_mm": network.spacing[0] * 2 ** (level - 1)} for level in levels},
        "utilisation": expert_utilisation(maps, levels),
        "moa_utilisation": routing.moa_utilisation(),
        "maps": mode,
        "conventions": "utilisation: shares of the arg-max expert maps (maps.json) over the fixed foreground; "
                       "gate maps: probabilities rounded to 0.01 on the level's grid, 0 where no fixed-foreground "
                       "voxel lies nearest; level 1 is the network input's resolution",
    }


def _write_gates(level: int, gates: torch.Tensor, network: Grid, fixed: Grid, inside: np.ndarray,
                 output_path: Callable[[str], Any]) -> None:
    """Write one level's gates ``(B, 3, E, z, y, x)`` on the level's grid, 0 where no fixed-foreground voxel of
    ``inside`` lies nearest."""
    grid = level_grid(network, level, tuple(gates.shape[3:]))
    covered = foreground_per_cell(inside, grid, fixed) > 0
    for axis, name in enumerate(AXES):
        for expert, gate in enumerate(gates[0, axis].float().cpu().numpy()):
            rounded = np.where(covered, np.round(gate, 2), 0.0).astype(np.float32)
            write_image(from_array(rounded, grid), output_path(gate_map_file(level, name, expert + 1)))
