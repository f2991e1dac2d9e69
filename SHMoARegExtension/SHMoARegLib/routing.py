"""Expert-routing outputs of a network model: ``routing.json`` and the per-level, per-axis maps.

Layout written by the engine (all maps on the fixed image's grid)::

    routing.json                              experts, utilisation, moa_utilisation, network_share
    routing/level{L}_{a}_expert.nii.gz        arg-max expert, 1-based; 0 outside the foreground
    routing/level{L}_{a}_gate{E}.nii.gz       gate probability of expert E (1-based)

with ``a`` in x, y, z. A run without routing (e.g. ``--model none``) has neither. The maps are
those of the network's prediction, before its refinement on the pair; ``network_share`` (0 to 1)
is how much of the final deformation that prediction accounts for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import slicer

from SHMoARegLib.colors import expertColorName, expertColorTable, viridisColorNode
from SHMoARegLib.volumes import readVolume

ROUTING_JSON = "routing.json"
ROUTING_FOLDER = "routing"
AXES = ("x", "y", "z")
_ROUTING_KEY = r"level(?P<level>\d+)_(?P<axis>[xyz])_(?:expert|gate(?P<expert>\d+))"
_ROUTING_FILE = re.compile(rf"^{_ROUTING_KEY}\.nii\.gz$")


@dataclass(frozen=True)
class Expert:
    """One flow-head expert: a convolution with its own receptive field."""

    name: str
    kernelSize: int
    dilation: int
    receptiveField: int

    @property
    def colorName(self) -> str:
        return expertColorName(self.kernelSize, self.dilation, self.receptiveField)


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
    """One routing map file: an arg-max map (``expert`` None) or one expert's gate map."""

    level: int
    axis: str
    expert: Optional[int]
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
    path = Path(outputDirectory) / ROUTING_JSON
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
    """Routing map files of a run, ordered by level, axis, then arg-max before gates."""
    folder = Path(outputDirectory) / ROUTING_FOLDER
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.nii.gz"):
        if _ROUTING_FILE.match(path.name):
            found.append(RoutingFile(*parseRoutingKey(path.name[:-len(".nii.gz")]), path))
    return sorted(found, key=lambda f: (f.level, AXES.index(f.axis), f.expert or 0))


def importRoutingMaps(
        scene: slicer.vtkMRMLScene, outputDirectory: Path, info: RoutingInfo, baseName: str, includeGates: bool = True,
) -> tuple[dict[str, slicer.vtkMRMLVolumeNode], slicer.vtkMRMLColorTableNode]:
    """Load the routing maps: arg-max maps as label maps with a colour per expert, gates with Viridis.

    Returns the nodes by :func:`routingKey` and the experts' colour table.
    """
    colors = expertColorTable(scene, f"{baseName} experts", [expert.colorName for expert in info.experts])
    nodes: dict[str, slicer.vtkMRMLVolumeNode] = {}
    for routingFile in routingFiles(outputDirectory):
        if routingFile.expert is None:
            node = readVolume(scene, routingFile.path, f"{baseName} L{routingFile.level} {routingFile.axis} expert",
                              "vtkMRMLLabelMapVolumeNode")
            node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        elif includeGates:
            if not 1 <= routingFile.expert <= len(info.experts):
                raise ValueError(f"{routingFile.path.name}: expert {routingFile.expert} is not one of the "
                                 f"{len(info.experts)} experts in {ROUTING_JSON}")
            expert = info.experts[routingFile.expert - 1]
            node = readVolume(scene, routingFile.path,
                              f"{baseName} L{routingFile.level} {routingFile.axis} gate {expert.colorName}")
            display = node.GetDisplayNode()
            display.SetAndObserveColorNodeID(viridisColorNode(scene).GetID())
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(0.0, 1.0)
        else:
            continue
        nodes[routingFile.key] = node
    return nodes, colors
