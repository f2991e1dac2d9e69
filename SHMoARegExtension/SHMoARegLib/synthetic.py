"""A small synthetic fixed/moving pair with a known shift, for the module's self-test and the tests.

Both images sample the same smooth phantom (an ellipsoid with a bright and a dark sphere)
defined in RAS millimetres; the moving image shows it moved by ``shift``. The two volumes
have different sizes, spacings and non-identity (rotated, flipped) directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import slicer
import vtk

from SHMoARegLib.scene import SceneChanges

CENTRE = np.array([10.0, -20.0, 15.0])
BRIGHT_CENTRE = CENTRE + np.array([5.0, 3.0, 0.0])
DARK_CENTRE = CENTRE + np.array([-5.0, -3.0, 3.0])
SEGMENT_NAMES = ("bright sphere", "dark sphere")


@dataclass
class SyntheticPair:
    """Nodes of the pair; ``landmarks`` holds (fixed RAS point, corresponding moving RAS point)."""

    fixed: slicer.vtkMRMLScalarVolumeNode
    moving: slicer.vtkMRMLScalarVolumeNode
    shift: np.ndarray
    fixedSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None
    movingSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None
    landmarks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def _smoothInside(distance: np.ndarray, width: float = 1.0) -> np.ndarray:
    """1 inside (negative distance), 0 outside, a smooth step of ``width`` mm between."""
    return 1.0 / (1.0 + np.exp(np.clip(distance / width, -50, 50)))


def _phantom(ras: np.ndarray) -> np.ndarray:
    radii = np.array([15.0, 12.0, 11.0])
    body = np.linalg.norm((ras - CENTRE) / radii, axis=-1) - 1.0
    bright = np.linalg.norm(ras - BRIGHT_CENTRE, axis=-1) - 5.0
    dark = np.linalg.norm(ras - DARK_CENTRE, axis=-1) - 4.0
    gradient = 0.5 * (ras[..., 0] - CENTRE[0])
    return (100.0 + gradient) * _smoothInside(body * 10.0) + 80.0 * _smoothInside(bright) - 60.0 * _smoothInside(dark)


def _gridRas(size: tuple[int, int, int], spacing: np.ndarray, direction: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """RAS of every voxel, indexed [k, j, i] like slicer.util.arrayFromVolume."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * spacing
    return origin + ijk @ direction.T


def _addVolume(scene: slicer.vtkMRMLScene, name: str, size: tuple[int, int, int], spacing: tuple[float, float, float],
               direction: np.ndarray, centre: np.ndarray,
               shift: np.ndarray) -> tuple[slicer.vtkMRMLScalarVolumeNode, np.ndarray]:
    """A volume sampling the phantom moved by ``shift``; also returns each voxel's phantom coordinates."""
    spacing = np.asarray(spacing, dtype=float)
    origin = centre - direction @ (spacing * (np.asarray(size) - 1) / 2.0)
    ras = _gridRas(size, spacing, direction, origin)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetOrigin(*origin)
    node.SetSpacing(*spacing)
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            matrix.SetElement(row, column, direction[row, column])
    node.SetIJKToRASDirectionMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, _phantom(ras - shift).astype(np.float32))
    node.CreateDefaultDisplayNodes()
    return node, ras - shift


def _addSegmentation(volume: slicer.vtkMRMLScalarVolumeNode, phantomRas: np.ndarray,
                     order: tuple[int, int]) -> slicer.vtkMRMLSegmentationNode:
    """Segments of the two spheres (in ``order`` of SEGMENT_NAMES) on ``volume``'s grid."""
    scene = volume.GetScene()
    labels = np.zeros(phantomRas.shape[:3], dtype=np.int16)
    for label, index in enumerate(order, start=1):
        centre, radius = ((BRIGHT_CENTRE, 5.0), (DARK_CENTRE, 4.0))[index]
        labels[np.linalg.norm(phantomRas - centre, axis=-1) <= radius] = label
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.CreateDefaultDisplayNodes()
    temporary = SceneChanges(scene)
    try:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        labelmap.CopyOrientation(volume)
        slicer.util.updateVolumeFromArray(labelmap, labels)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise RuntimeError("cannot build the synthetic segmentation")
    finally:
        temporary.rollback()
    colours = ((0.9, 0.2, 0.1), (0.1, 0.6, 0.9))
    for position, index in enumerate(order):
        segment = segmentation.GetSegmentation().GetNthSegment(position)
        segment.SetName(SEGMENT_NAMES[index])
        segment.SetColor(*colours[index])
    return segmentation


def addSyntheticPair(scene: slicer.vtkMRMLScene, shift: tuple[float, float, float] = (4.0, -3.0, 2.0),
                     withSegmentations: bool = True, name: str = "synthetic") -> SyntheticPair:
    """Add a fixed and a moving volume (about 32^3 voxels) whose content differs by ``shift`` mm (RAS)."""
    shiftRas = np.asarray(shift, dtype=float)
    fixedDirection = _rotation(2, 20.0) @ np.diag([-1.0, -1.0, 1.0])
    movingDirection = _rotation(0, 10.0) @ _rotation(2, -15.0)
    fixed, fixedPhantom = _addVolume(scene, f"{name} fixed", (34, 34, 28), (1.5, 1.5, 1.8), fixedDirection,
                                     CENTRE, np.zeros(3))
    moving, movingPhantom = _addVolume(scene, f"{name} moving", (30, 34, 26), (1.6, 1.5, 2.0), movingDirection,
                                       CENTRE + np.array([1.0, 0.0, -1.0]), shiftRas)
    pair = SyntheticPair(fixed, moving, shiftRas,
                         landmarks=[(centre, centre + shiftRas) for centre in (BRIGHT_CENTRE, DARK_CENTRE)])
    if withSegmentations:
        # Segments in opposite orders: the logic must match them by name, not by position.
        pair.fixedSegmentation = _addSegmentation(fixed, fixedPhantom, (1, 0))
        pair.movingSegmentation = _addSegmentation(moving, movingPhantom, (0, 1))
    return pair
