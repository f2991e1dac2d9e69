"""Colour nodes: one named colour per expert for arg-max maps, Viridis for gate probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import slicer

# Slicer's own Viridis table (loaded from its ColorFiles folder by the Colors module).
SLICER_VIRIDIS_ID = "vtkMRMLColorTableNodeFileViridis.txt"
VIRIDIS_NAME = "SHMoAReg Viridis"
_OWNER_ATTRIBUTE = "SHMoAReg.ColorTable"

# Viridis (matplotlib, CC0) sampled at 17 evenly spaced points; interpolated to 256 entries.
_VIRIDIS_ANCHORS = np.array([
    (0.267004, 0.004874, 0.329415), (0.282327, 0.094955, 0.417331), (0.278826, 0.175490, 0.483397),
    (0.258965, 0.251537, 0.524736), (0.229739, 0.322361, 0.545706), (0.199430, 0.387607, 0.554642),
    (0.172719, 0.448791, 0.557885), (0.149039, 0.508051, 0.557250), (0.127568, 0.566949, 0.550556),
    (0.120638, 0.625828, 0.533488), (0.157851, 0.683765, 0.501686), (0.246070, 0.738910, 0.452024),
    (0.369214, 0.788888, 0.382914), (0.515992, 0.831158, 0.294279), (0.678489, 0.863742, 0.189503),
    (0.845561, 0.887322, 0.099702), (0.993248, 0.906157, 0.143936),
])

# Distinct colours for up to ten experts (Tableau 10), repeated beyond that.
_EXPERT_COLORS = (
    (0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173), (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741), (0.549, 0.337, 0.294), (0.890, 0.467, 0.761), (0.498, 0.498, 0.498),
    (0.737, 0.741, 0.133), (0.090, 0.745, 0.812),
)


def viridisColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """Slicer's Viridis node when the scene has it, else this module's own 256-entry equivalent."""
    builtIn = scene.GetNodeByID(SLICER_VIRIDIS_ID)
    if builtIn is not None:
        return builtIn
    for node in _nodesByClass(scene, "vtkMRMLColorTableNode"):
        if node.GetAttribute(_OWNER_ATTRIBUTE) == "viridis":
            return node
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", VIRIDIS_NAME)
    table.SetAttribute(_OWNER_ATTRIBUTE, "viridis")
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    positions = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    for index, x in enumerate(np.linspace(0.0, 1.0, 256)):
        red, green, blue = (np.interp(x, positions, _VIRIDIS_ANCHORS[:, channel]) for channel in range(3))
        table.SetColor(index, f"{x:.3f}", red, green, blue, 1.0)
    return table


def expertColorName(kernelSize: int, dilation: int, receptiveField: int) -> str:
    """Colour name of an expert: its receptive field first, then how it gets it."""
    return f"RF {receptiveField} (k{kernelSize} d{dilation})"


def expertColorTable(scene: slicer.vtkMRMLScene, name: str, expertNames: Sequence[str]) -> slicer.vtkMRMLColorTableNode:
    """Label colours for arg-max maps: 0 transparent ("outside"), expert ``e`` at index ``e``."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetAttribute(_OWNER_ATTRIBUTE, "experts")
    table.SetTypeToUser()
    table.SetNumberOfColors(len(expertNames) + 1)
    table.SetColor(0, "outside", 0.0, 0.0, 0.0, 0.0)
    for index, expertName in enumerate(expertNames, start=1):
        red, green, blue = _EXPERT_COLORS[(index - 1) % len(_EXPERT_COLORS)]
        table.SetColor(index, expertName, red, green, blue, 1.0)
    return table


def _nodesByClass(scene: slicer.vtkMRMLScene, className: str) -> list[slicer.vtkMRMLNode]:
    return [scene.GetNthNodeByClass(index, className) for index in range(scene.GetNumberOfNodesByClass(className))]
