"""Visual checks of a result (AAPM TG-132): checkerboard and difference of the fixed and warped volumes.

Both are new scalar volumes on the fixed grid, placed next to the warped volume (in the run's folder)
and under the fixed volume's parent transform, like the run's other outputs.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from SHMoARegLib.scene import placeInFolder, subjectHierarchy
from SHMoARegLib.volumes import copyDisplay


def checkerboardVolume(scene: slicer.vtkMRMLScene, fixed: slicer.vtkMRMLScalarVolumeNode,
                       warped: slicer.vtkMRMLScalarVolumeNode, squares: int = 8) -> slicer.vtkMRMLScalarVolumeNode:
    """Blocks of the fixed and the warped volume alternating along each voxel axis, ``squares`` per axis.

    Voxel ``(i, j, k)`` lies in block ``(i * squares // ni, ...)``; blocks whose indices sum to an even
    number show the fixed volume, the others the warped one. Shown like the fixed volume.
    """
    if squares < 1:
        raise ValueError(f"the checkerboard needs at least 1 square per axis, not {squares}")
    fixedValues, warpedValues = _onSameGrid(fixed, warped)
    blocks = [(np.arange(size) * squares) // size for size in fixedValues.shape]  # array axes k, j, i
    odd = (blocks[0][:, None, None] + blocks[1][None, :, None] + blocks[2][None, None, :]) % 2 == 1
    values = np.where(odd, warpedValues, fixedValues).astype(np.result_type(fixedValues, warpedValues))
    node = _newVolumeLike(scene, fixed, warped, values, f"{warped.GetName()} checkerboard")
    copyDisplay(fixed, node)
    return node


def differenceVolume(scene: slicer.vtkMRMLScene, fixed: slicer.vtkMRMLScalarVolumeNode,
                     warped: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLScalarVolumeNode:
    """Fixed minus warped, voxel by voxel (float32), shown in grey with zero at mid-grey."""
    fixedValues, warpedValues = _onSameGrid(fixed, warped)
    values = fixedValues.astype(np.float32) - warpedValues.astype(np.float32)
    node = _newVolumeLike(scene, fixed, warped, values, f"{warped.GetName()} difference")
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    largest = float(np.abs(values).max()) or 1.0
    display.SetWindowLevel(2.0 * largest, 0.0)
    return node


def _onSameGrid(fixed: slicer.vtkMRMLScalarVolumeNode,
                warped: slicer.vtkMRMLScalarVolumeNode) -> tuple[np.ndarray, np.ndarray]:
    """Voxel arrays of two volumes that share one grid (dimensions and IJK-to-RAS matrix)."""
    fixedValues, warpedValues = slicer.util.arrayFromVolume(fixed), slicer.util.arrayFromVolume(warped)
    fixedMatrix, warpedMatrix = _ijkToRas(fixed), _ijkToRas(warped)
    if fixedValues.shape != warpedValues.shape or not np.allclose(fixedMatrix, warpedMatrix, atol=1e-4):
        raise ValueError(f"{warped.GetName()!r} is not on the grid of {fixed.GetName()!r}; "
                         "choose the warped volume of a registration to it")
    return fixedValues, warpedValues


def _ijkToRas(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _newVolumeLike(scene: slicer.vtkMRMLScene, fixed: slicer.vtkMRMLScalarVolumeNode,
                   warped: slicer.vtkMRMLScalarVolumeNode, values: np.ndarray,
                   name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """A scalar volume with ``values`` on ``fixed``'s grid, beside ``warped`` in the subject hierarchy."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    node.CopyOrientation(fixed)
    slicer.util.updateVolumeFromArray(node, values)
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(fixed.GetTransformNodeID())
    hierarchy = subjectHierarchy(scene)
    warpedItem = hierarchy.GetItemByDataNode(warped)
    placeInFolder(scene, node, hierarchy.GetItemParent(warpedItem) if warpedItem else hierarchy.GetSceneItemID())
    return node

