"""SHMoAReg's expert routing: ``routing.json`` and the gate maps.

Layout written by the engine (each map on its level's grid in the fixed image's frame)::

    routing.json                              experts, utilisation, moa_utilisation, network_share
    routing/level{L}_{a}_gate{E}.nii.gz       gate probability of expert E (1-based), with gate maps asked for

with ``a`` in x, y, z. The arg-max expert per level and axis is one of the network's maps
(``maps/level{L}_{a}_expert.nii.gz``, named :func:`routingKey` ``(L, a)``; :mod:`SHMoARegLib.maps`). A run
without expert routing (e.g. ``--model none`` or ``unet``) has no ``routing.json``. The maps are those of the
network's prediction, before its refinement on the pair; ``network_share`` (0 to 1) is how much of the final
deformation that prediction accounts for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import slicer

from SHMoARegLib.colors import viridisColorNode
from SHMoARegLib.volumes import readVolume
from shmoareg.protocol import ROUTING_FILE, ROUTING_FOLDER

AXES = ("x", "y", "z")
_ROUTING_KEY = r"level(?P<level>\d+)_(?P<axis>[xyz])_(?:expert|gate(?P<expert>\d+))"
_GATE_FILE = re.compile(r"^level\d+_[xyz]_gate\d+\.nii\.gz$")


@dataclass(frozen=True)
class Expert:
    """One flow-head expert: a convolution with its own receptive field."""

    name: str
    kernelSize: int
    dilation: int
    receptiveField: int


@dataclass
class RoutingInfo:
    """Contents of ``routing.json``; utilisation is ``{level: {axis: [fraction per expert]}}``.

    ``networkShare`` is the share of the final deformation that the network's prediction accounts
    for (None when the engine did not report it).
    """

    experts: list[Expert]
    utilisation: dict[int, dict[str, list[float]]]
    moaUtilisation: dict
    networkShare: Optional[float] = None


@dataclass(frozen=True)
class RoutingFile:
    """One gate map file: the probability of ``expert`` (1-based) at a level and axis."""

    level: int
    axis: str
    expert: int
    path: Path

    @property
    def key(self) -> str:
        return routingKey(self.level, self.axis, self.expert)


def routingKey(level: int, axis: str, expert: Optional[int] = None) -> str:
    """Key of a routing map (its file name without extension): ``level0_x_expert``, ``level0_x_gate2``."""
    return f"level{level}_{axis}_expert" if expert is None else f"level{level}_{axis}_gate{expert}"


def parseRoutingKey(key: str) -> tuple[int, str, Optional[int]]:
    """Level, axis and expert (None for the arg-max map) of a :func:`routingKey`."""
    match = re.fullmatch(_ROUTING_KEY, key)
    if match is None:
        raise ValueError(f"not a routing map key: {key!r}")
    expert = match.group("expert")
    return int(match.group("level")), match.group("axis"), int(expert) if expert is not None else None


def readRoutingInfo(outputDirectory: Path) -> Optional[RoutingInfo]:
    """``routing.json`` of a run, or None when the run wrote no routing outputs."""
    path = Path(outputDirectory) / ROUTING_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
        experts = [Expert(str(entry["name"]), int(entry["kernel_size"]), int(entry["dilation"]),
                          int(entry["receptive_field"])) for entry in content["experts"]]
        utilisation = {int(level): {axis: [float(value) for value in values] for axis, values in axes.items()}
                       for level, axes in content["utilisation"].items()}
        networkShare = content.get("network_share")
        networkShare = float(networkShare) if networkShare is not None else None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a valid routing description ({type(error).__name__}: {error})") from None
    if not experts:
        raise ValueError(f"{path} lists no experts")
    for level, axes in utilisation.items():
        for axis, fractions in axes.items():
            if axis not in AXES or len(fractions) != len(experts):
                raise ValueError(f"{path}: utilisation of level {level} axis {axis!r} has {len(fractions)} "
                                 f"values for {len(experts)} experts")
    if networkShare is not None and not 0.0 <= networkShare <= 1.0:
        raise ValueError(f"{path}: network_share {networkShare} is not between 0 and 1")
    return RoutingInfo(experts, dict(sorted(utilisation.items())), content.get("moa_utilisation", {}), networkShare)


def routingFiles(outputDirectory: Path) -> list[RoutingFile]:
    """Gate map files of a run, ordered by level, axis, then expert."""
    folder = Path(outputDirectory) / ROUTING_FOLDER
    if not folder.is_dir():
        return []
    found = [RoutingFile(*parseRoutingKey(path.name[:-len(".nii.gz")]), path)
             for path in folder.glob("*.nii.gz") if _GATE_FILE.match(path.name)]
    return sorted(found, key=lambda f: (f.level, AXES.index(f.axis), f.expert))


def importGateMaps(scene: slicer.vtkMRMLScene, outputDirectory: Path, info: RoutingInfo,
                   baseName: str) -> dict[str, slicer.vtkMRMLScalarVolumeNode]:
    """Load the gate maps as scalar volumes shown with Viridis over [0, 1]; returns them by :func:`routingKey`."""
    nodes: dict[str, slicer.vtkMRMLScalarVolumeNode] = {}
    for routingFile in routingFiles(outputDirectory):
        if not 1 <= routingFile.expert <= len(info.experts):
            raise ValueError(f"{routingFile.path.name}: expert {routingFile.expert} is not one of the "
                             f"{len(info.experts)} experts in {ROUTING_FILE}")
        expert = info.experts[routingFile.expert - 1]
        node = readVolume(scene, routingFile.path, scene.GenerateUniqueName(
            f"{baseName} L{routingFile.level} {routingFile.axis} gate {expert.name}"))
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(viridisColorNode(scene).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        nodes[routingFile.key] = node
    return nodes


def gateDescription(key: str, info: RoutingInfo) -> str:
    """What a gate map shows, from its :func:`routingKey`."""
    level, axis, expert = parseRoutingKey(key)
    return (f"decoder level {level}, {axis} displacement: the gate probability of expert "
            f"{info.experts[expert - 1].name}")
