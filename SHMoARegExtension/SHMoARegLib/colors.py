"""Colour nodes: one named colour per category for categorical maps (e.g. the expert chosen), Viridis for gate
probabilities and other scalar maps, Inferno for magnitudes (the uncertainty map, a residual's length), and a
diverging map for the Jacobian determinant that marks folding."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import slicer

# Slicer's own Viridis and Inferno tables (loaded from its ColorFiles folder by the Colors module).
SLICER_VIRIDIS_ID = "vtkMRMLColorTableNodeFileViridis.txt"
SLICER_INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"
VIRIDIS_NAME = "SHMoAReg Viridis"
INFERNO_NAME = "SHMoAReg Inferno"
JACOBIAN_NAME = "SHMoAReg Jacobian"
_OWNER_ATTRIBUTE = "SHMoAReg.ColorTable"

# Matplotlib's maps (CC0) sampled at 17 evenly spaced points; interpolated to 256 entries.
_VIRIDIS_ANCHORS = np.array([
    (0.267004, 0.004874, 0.329415), (0.282327, 0.094955, 0.417331), (0.278826, 0.175490, 0.483397),
    (0.258965, 0.251537, 0.524736), (0.229739, 0.322361, 0.545706), (0.199430, 0.387607, 0.554642),
    (0.172719, 0.448791, 0.557885), (0.149039, 0.508051, 0.557250), (0.127568, 0.566949, 0.550556),
    (0.120638, 0.625828, 0.533488), (0.157851, 0.683765, 0.501686), (0.246070, 0.738910, 0.452024),
    (0.369214, 0.788888, 0.382914), (0.515992, 0.831158, 0.294279), (0.678489, 0.863742, 0.189503),
    (0.845561, 0.887322, 0.099702), (0.993248, 0.906157, 0.143936),
])
_INFERNO_ANCHORS = np.array([
    (0.001462, 0.000466, 0.013866), (0.042253, 0.028139, 0.141141), (0.129285, 0.047293, 0.290788),
    (0.238273, 0.036621, 0.396353), (0.341500, 0.062325, 0.429425), (0.441207, 0.099338, 0.431594),
    (0.540920, 0.134729, 0.415123), (0.640135, 0.171438, 0.381065), (0.735683, 0.215906, 0.330245),
    (0.822386, 0.275197, 0.266085), (0.894305, 0.353399, 0.193584), (0.946965, 0.449191, 0.115272),
    (0.978422, 0.557937, 0.034931), (0.987874, 0.675267, 0.065257), (0.974638, 0.797692, 0.206332),
    (0.947594, 0.917399, 0.410665), (0.988362, 0.998364, 0.644924),
])

# Jacobian determinant J: the display window [0, 2] spans the table, so J = 1 (no volume change) is its
# centre entry, white; shrinkage (J < 1) turns blue, expansion (J > 1) red, saturating at J = 2. The first
# entry, where J <= 0 (and J below half an entry, 1/256) falls, is the folding colour.
JACOBIAN_WINDOW = (0.0, 2.0)
JACOBIAN_ENTRIES = 257
JACOBIAN_SHRINK_COLOR = (0.230, 0.299, 0.754)
JACOBIAN_NEUTRAL_COLOR = (1.0, 1.0, 1.0)
JACOBIAN_EXPAND_COLOR = (0.706, 0.016, 0.150)
FOLDING_COLOR = (0.0, 1.0, 0.0)


def viridisColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """Slicer's Viridis node when the scene has it, else this module's own 256-entry equivalent."""
    return _sampledColorNode(scene, SLICER_VIRIDIS_ID, VIRIDIS_NAME, "viridis", _VIRIDIS_ANCHORS)


def infernoColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorNode:
    """Slicer's Inferno node when the scene has it, else this module's own 256-entry equivalent."""
    return _sampledColorNode(scene, SLICER_INFERNO_ID, INFERNO_NAME, "inferno", _INFERNO_ANCHORS)


def jacobianColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The diverging Jacobian table (see ``JACOBIAN_WINDOW``), made once per scene."""
    existing = _ownedTable(scene, "jacobian")
    if existing is not None:
        return existing
    table = _newOwnedTable(scene, JACOBIAN_NAME, "jacobian", JACOBIAN_ENTRIES)
    low, high = JACOBIAN_WINDOW
    centre = 0.5 * (low + high)
    table.SetColor(0, "folding (J <= 0)", *FOLDING_COLOR, 1.0)
    for index in range(1, JACOBIAN_ENTRIES):
        value = low + (high - low) * index / (JACOBIAN_ENTRIES - 1)
        far = JACOBIAN_SHRINK_COLOR if value < centre else JACOBIAN_EXPAND_COLOR
        weight = abs(value - centre) / (centre - low)
        color = [(1.0 - weight) * neutral + weight * end for neutral, end in zip(JACOBIAN_NEUTRAL_COLOR, far)]
        table.SetColor(index, f"J {value:.3f}", *color, 1.0)
    return table


def showWithJacobianColors(display: slicer.vtkMRMLScalarVolumeDisplayNode) -> None:
    """Show a Jacobian determinant volume with :func:`jacobianColorNode` over ``JACOBIAN_WINDOW``."""
    display.SetAndObserveColorNodeID(jacobianColorNode(display.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*JACOBIAN_WINDOW)


def _sampledColorNode(scene: slicer.vtkMRMLScene, builtInId: str, name: str, owner: str,
                      anchors: np.ndarray) -> slicer.vtkMRMLColorNode:
    """Slicer's node ``builtInId`` when present, else a 256-entry table interpolated from ``anchors``."""
    builtIn = scene.GetNodeByID(builtInId)
    if builtIn is not None:
        return builtIn
    existing = _ownedTable(scene, owner)
    if existing is not None:
        return existing
    table = _newOwnedTable(scene, name, owner, 256)
    positions = np.linspace(0.0, 1.0, len(anchors))
    for index, x in enumerate(np.linspace(0.0, 1.0, 256)):
        red, green, blue = (np.interp(x, positions, anchors[:, channel]) for channel in range(3))
        table.SetColor(index, f"{x:.3f}", red, green, blue, 1.0)
    return table


def categoryColorTable(scene: slicer.vtkMRMLScene, name: str,
                       categories: Sequence[tuple[str, Sequence[float]]]) -> slicer.vtkMRMLColorTableNode:
    """Label colours for a categorical map: 0 transparent ("outside"), category ``v`` (its name and RGB colour,
    in order) at index ``v``."""
    table = _newOwnedTable(scene, name, "categories", len(categories) + 1)
    table.SetColor(0, "outside", 0.0, 0.0, 0.0, 0.0)
    for index, (categoryName, (red, green, blue)) in enumerate(categories, start=1):
        table.SetColor(index, categoryName, red, green, blue, 1.0)
    return table


def _ownedTable(scene: slicer.vtkMRMLScene, owner: str) -> Optional[slicer.vtkMRMLColorTableNode]:
    """The scene's colour table made by this module for ``owner``, if any."""
    className = "vtkMRMLColorTableNode"
    for index in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(index, className)
        if node.GetAttribute(_OWNER_ATTRIBUTE) == owner:
            return node
    return None


def _newOwnedTable(scene: slicer.vtkMRMLScene, name: str, owner: str, entries: int) -> slicer.vtkMRMLColorTableNode:
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetAttribute(_OWNER_ATTRIBUTE, owner)
    table.SetTypeToUser()
    table.SetNumberOfColors(entries)
    return table
