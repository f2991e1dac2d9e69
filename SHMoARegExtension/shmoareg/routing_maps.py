"""SHMoAReg's expert routing: ``routing.json`` and, with ``--routing-maps full``, the gate maps.

The arg-max expert per decoder level ``L`` (1 = the network input's resolution) and axis ``a`` in x, y, z is
one of the network's maps (``maps/level{L}_{a}_expert.nii.gz``, :mod:`shmoareg.model_maps`);
``routing.json``'s utilisation is those maps' shares per expert (fractions of fixed-foreground voxels, each
list sums to 1). ``routing/level{L}_{a}_gate{E}.nii.gz`` is the probability of expert ``E`` (1-based), rounded
to 0.01 and 0 outside the fixed foreground (which keeps the files small), on the fixed image's grid.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

import numpy as np
import torch

from shmoareg.grid import Grid, from_array
from shmoareg.imageio import write_image
from shmoareg.model_maps import level_grid, place_on_fixed
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
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as writer:  # gzip runs outside the GIL
            pending: list[Future] = []
            for level in levels:
                _write_gates(level, routing.decoder_gates[level], network, fixed, inside, output_path, writer, pending)
            for write in pending:
                write.result()  # re-raises a failed write
    return {
        "experts": experts,
        "levels": {str(level): {"spacing_mm": network.spacing[0] * 2 ** (level - 1)} for level in levels},
        "utilisation": expert_utilisation(maps, levels),
        "moa_utilisation": routing.moa_utilisation(),
        "maps": mode,
        "conventions": "utilisation: shares of the arg-max expert maps (maps.json) over the fixed foreground; "
                       "gate maps: probabilities rounded to 0.01, 0 outside the fixed foreground, on the fixed "
                       "image's grid; level 1 is the network input's resolution",
    }


def _write_gates(level: int, gates: torch.Tensor, network: Grid, fixed: Grid, inside: np.ndarray,
                 output_path: Callable[[str], Any], writer: ThreadPoolExecutor, pending: list[Future]) -> None:
    """Resample one level's gates ``(B, 3, E, z, y, x)`` linearly to the fixed grid and queue their files on
    ``writer`` (appending the futures to ``pending``)."""
    grid = level_grid(network, level, tuple(gates.shape[3:]))
    for axis, name in enumerate(AXES):
        probabilities = place_on_fixed(gates[0, axis].float(), grid, fixed, "linear").cpu().numpy()  # (E, Z, Y, X)
        for expert, gate in enumerate(probabilities):
            rounded = np.where(inside, np.round(gate, 2), 0.0).astype(np.float32)
            pending.append(writer.submit(write_image, from_array(rounded, fixed),
                                         output_path(gate_map_file(level, name, expert + 1))))
