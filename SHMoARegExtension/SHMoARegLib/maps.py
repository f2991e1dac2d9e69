"""A network's per-voxel maps: ``maps.json`` and ``maps/<name>.nii.gz``, each on its level's grid in the fixed
image's frame (before issue 24: on the fixed image's grid); a volume node keeps the file's geometry either way.

``maps.json`` lists every map the network offers (``maps``: name, file, kind, level, spacing_mm, units,
description, axis) with, for a categorical map, its categories (value, name, colour ``#rrggbb``, share of
the fixed foreground's voxels) and, for a scalar map, its colour map (``viridis`` or ``inferno``) and
statistics over the fixed foreground (mean, min, max, p5, p25, p50, p75, p95). A run without a network, or
with a network that offers no maps, has neither. ``file`` is null when the engine ran with
``--routing-maps none``. SHMoAReg's maps are its arg-max expert per decoder level and displacement axis,
named ``level{L}_{a}_expert`` (its gate probabilities are in ``routing/``, :mod:`SHMoARegLib.routing`).

Categorical maps load as label maps with a colour table of their categories (0 "outside", transparent);
scalar maps as scalar volumes with their colour map: Inferno (a magnitude, in a length unit) from 0 to the
largest value, Viridis from 0 to 1 for a map within [0, 1] (gates, probabilities), else from the smallest to
the largest value over the foreground.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

import slicer

from SHMoARegLib.colors import categoryColorTable, infernoColorNode, viridisColorNode
from SHMoARegLib.volumes import readVolume
from shmoareg.protocol import AXES, COLOUR_MAPS, MAP_KINDS, MAP_STATISTICS, MAPS_FILE

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Category:
    """One category of a categorical map: its voxel value (1-based), name, colour (RGB 0-1) and share."""

    value: int
    name: str
    color: tuple[float, float, float]
    share: float


@dataclass(frozen=True)
class MapInfo:
    """One entry of ``maps.json``; ``path`` is its file (None when the engine wrote none)."""

    name: str
    kind: str
    level: int
    description: str
    units: str = ""
    axis: Optional[str] = None
    spacingMm: tuple[float, ...] = ()
    path: Optional[Path] = None
    categories: tuple[Category, ...] = ()
    statistics: dict = field(default_factory=dict)
    colorMap: str = "viridis"

    @property
    def label(self) -> str:
        """The map's name with its units, as rows and menus show it."""
        return f"{self.name} ({self.units})" if self.units else self.name


@dataclass
class MapsInfo:
    """Contents of ``maps.json``: the network's name and its maps in the order it lists them."""

    model: Optional[str]
    maps: list[MapInfo]

    @property
    def categorical(self) -> list[MapInfo]:
        return [info for info in self.maps if info.kind == "categorical"]

    @property
    def scalar(self) -> list[MapInfo]:
        return [info for info in self.maps if info.kind == "scalar"]


def hexToRgb(color: str) -> tuple[float, float, float]:
    """``#rrggbb`` as RGB in 0-1."""
    if not _HEX_COLOR.match(color):
        raise ValueError(f"{color!r} is not a #rrggbb colour")
    return tuple(int(color[index:index + 2], 16) / 255.0 for index in (1, 3, 5))


def readMapsInfo(outputDirectory: Path) -> Optional[MapsInfo]:
    """``maps.json`` of a run, or None when the run wrote none."""
    outputDirectory = Path(outputDirectory)
    path = outputDirectory / MAPS_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
        maps = [_mapInfo(entry, outputDirectory) for entry in content["maps"]]
        model = content.get("model")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a valid map description ({type(error).__name__}: {error})") from None
    names = [info.name for info in maps]
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists a map twice")
    return MapsInfo(str(model) if model is not None else None, maps)


def _mapInfo(entry: dict, outputDirectory: Path) -> MapInfo:
    name, kind, level = str(entry["name"]), str(entry["kind"]), int(entry["level"])
    if kind not in MAP_KINDS:
        raise ValueError(f"map {name!r}: kind {kind!r} is not one of {', '.join(MAP_KINDS)}")
    if level < 1:
        raise ValueError(f"map {name!r}: level {level} is not 1 or more")
    axis = entry.get("axis")
    if axis is not None and axis not in AXES:
        raise ValueError(f"map {name!r}: axis {axis!r} is not one of x, y, z")
    path = None
    if entry.get("file") is not None:
        relative = PurePosixPath(str(entry["file"]))
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"map {name!r}: file {entry['file']!r} is not inside the output folder")
        path = outputDirectory / relative
    categories: tuple[Category, ...] = ()
    statistics: dict = {}
    colorMap = "viridis"
    if kind == "categorical":
        categories = tuple(Category(int(c["value"]), str(c["name"]), hexToRgb(str(c["colour"])), float(c["share"]))
                           for c in entry["categories"])
        if [category.value for category in categories] != list(range(1, len(categories) + 1)) or not categories:
            raise ValueError(f"map {name!r}: categories must be numbered 1, 2, ... in order")
    else:
        statistics = {key: _number(entry["statistics"].get(key)) for key in MAP_STATISTICS}
        colorMap = str(entry.get("colour_map", "viridis"))
        if colorMap not in COLOUR_MAPS:
            colorMap = "viridis"
    return MapInfo(name, kind, level, str(entry.get("description", "")), str(entry.get("units") or ""), axis,
                   tuple(float(value) for value in entry.get("spacing_mm") or ()), path, categories, statistics,
                   colorMap)


def _number(value: object) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def scalarWindow(info: MapInfo) -> tuple[float, float]:
    """Display range of a scalar map (see the module docstring)."""
    low, high = info.statistics.get("min"), info.statistics.get("max")
    if low is None or high is None:
        return 0.0, 1.0
    if info.colorMap == "inferno":
        low = min(0.0, low)
    elif low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    return low, high if high > low else low + 1.0


def importModelMaps(scene: slicer.vtkMRMLScene, info: MapsInfo, baseName: str,
                    ) -> tuple[dict[str, slicer.vtkMRMLVolumeNode], list[slicer.vtkMRMLColorTableNode]]:
    """Load every map that has a file: categorical maps as label maps with one colour table per distinct set of
    categories, scalar maps with their colour map. Returns the nodes by map name and the colour tables."""
    tables: dict[tuple, slicer.vtkMRMLColorTableNode] = {}
    nodes: dict[str, slicer.vtkMRMLVolumeNode] = {}
    for mapInfo in info.maps:
        if mapInfo.path is None:
            continue
        name = scene.GenerateUniqueName(f"{baseName} {mapInfo.name}")
        if mapInfo.kind == "categorical":
            key = tuple((category.name, category.color) for category in mapInfo.categories)
            if key not in tables:
                tables[key] = categoryColorTable(scene, scene.GenerateUniqueName(f"{baseName} categories"), key)
            node = readVolume(scene, mapInfo.path, name, "vtkMRMLLabelMapVolumeNode")
            node.GetDisplayNode().SetAndObserveColorNodeID(tables[key].GetID())
        else:
            node = readVolume(scene, mapInfo.path, name)
            display = node.GetDisplayNode()
            colors = infernoColorNode(scene) if mapInfo.colorMap == "inferno" else viridisColorNode(scene)
            display.SetAndObserveColorNodeID(colors.GetID())
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(*scalarWindow(mapInfo))
        node.SetAttribute("SHMoAReg.Map", mapInfo.name)
        nodes[mapInfo.name] = node
    return nodes, list(tables.values())
