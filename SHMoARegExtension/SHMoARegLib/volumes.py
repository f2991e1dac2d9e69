"""Volumes and transforms to and from files, through MRML storage nodes only.

Storage nodes convert between Slicer's RAS and the files' LPS, the same inside Slicer and
in a headless scene. Nodes read here are added to the scene only once their data loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import slicer
import vtk


def defaultStorageNode(node: slicer.vtkMRMLStorableNode) -> slicer.vtkMRMLStorageNode:
    """``node.CreateDefaultStorageNode()``, owned by Python alone.

    The method hands over a reference that the caller must release (Slicer's own code calls
    ``UnRegister``); the Python wrapper takes one more, so without this every call leaked a storage node.
    """
    storage = node.CreateDefaultStorageNode()
    storage.UnRegister(None)
    return storage


def writeVolume(node: slicer.vtkMRMLVolumeNode, path: Path,
                toFrame: Optional[vtk.vtkMatrix4x4] = None) -> None:
    """Write a volume to NRRD or NIfTI in its own geometry, or with ``toFrame`` (see :func:`frameMatrix`)
    folded into its geometry: the voxels are not resampled, and the node is not touched."""
    if toFrame is not None and not isIdentity(toFrame):
        scratch = slicer.vtkMRMLScene()  # storage nodes are made for nodes in a scene; not the user's
        placed = scratch.AddNewNodeByClass(node.GetClassName(), node.GetName())
        own = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(own)
        combined = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Multiply4x4(toFrame, own, combined)
        placed.SetIJKToRASMatrix(combined)
        placed.SetAndObserveImageData(node.GetImageData())
        node = placed
    storage = defaultStorageNode(node)
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(node):
        raise RuntimeError(f"cannot write volume {node.GetName()!r} to {path}")


def frameMatrix(node: slicer.vtkMRMLTransformableNode,
                frame: Optional[slicer.vtkMRMLTransformNode]) -> vtk.vtkMatrix4x4:
    """The matrix from ``node``'s coordinates to those under ``frame`` (None: the world) through their
    transforms: how the node is displayed relative to that frame. ValueError when that is not linear."""
    matrix = vtk.vtkMatrix4x4()
    if node.GetParentTransformNode() is frame:
        return matrix
    between = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(), frame, between)
    if not slicer.vtkMRMLTransformNode.IsGeneralTransformLinear(between):
        raise ValueError(f"{node.GetName()!r} is placed by a nonlinear transform; harden it first (Transforms "
                         "module) or remove it: only a linear pre-alignment is kept")
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(node.GetParentTransformNode(), frame, matrix)
    return matrix


# Marks the transform nodes a registration made, so that registering a moving volume again replaces them.
RESULT_ATTRIBUTE = "SHMoAReg.RegistrationResult"


def prealignment(node: slicer.vtkMRMLTransformableNode,
                 fixedFrame: Optional[slicer.vtkMRMLTransformNode]) -> vtk.vtkMatrix4x4:
    """How the user placed ``node`` relative to the fixed volume's frame: its transforms up to that frame, or up to
    an earlier registration's result (which a new registration replaces, while the placement below it stays)."""
    frame = node.GetParentTransformNode()
    while frame is not None and frame is not fixedFrame and frame.GetAttribute(RESULT_ATTRIBUTE) is None:
        frame = frame.GetParentTransformNode()
    return frameMatrix(node, frame if frame is not None and frame.GetAttribute(RESULT_ATTRIBUTE) else fixedFrame)


def isIdentity(matrix: vtk.vtkMatrix4x4) -> bool:
    """Whether a 4x4 matrix is the identity (to 1e-9)."""
    return all(abs(matrix.GetElement(row, column) - (row == column)) < 1e-9 for row in range(4) for column in range(4))


def readVolume(scene: slicer.vtkMRMLScene, path: Path, name: str,
               className: str = "vtkMRMLScalarVolumeNode") -> slicer.vtkMRMLVolumeNode:
    """Read a scalar or label-map volume into a new node (with a display node) in ``scene``."""
    node = getattr(slicer, className)()
    node.SetName(name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"cannot read volume {path}")
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def readTransform(scene: slicer.vtkMRMLScene, path: Path, name: str) -> slicer.vtkMRMLGridTransformNode:
    """Read the engine's ITK displacement-field transform (.h5, resampling convention) into a new grid
    transform node.

    Slicer stores such a file as the node's *FromParent* transform, so a node placed under
    the result (e.g. the moving volume) is displayed in the fixed image's space.
    """
    node = slicer.vtkMRMLGridTransformNode()  # what Slicer's loader makes of a displacement field: CLI modules
    node.SetName(name)                         # that take a nonlinear transform list only this class
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"cannot read transform {path}")
    scene.AddNode(node)
    return node


def writeTransform(node: slicer.vtkMRMLTransformNode, path: Path) -> None:
    """Write a transform node to an ITK file (.h5 or .tfm), as Slicer's Save dialog does."""
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise RuntimeError(f"cannot write transform {node.GetName()!r} to {path}")


def copyDisplay(source: slicer.vtkMRMLScalarVolumeNode, target: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Show ``target`` with ``source``'s colour map and window/level."""
    sourceDisplay, targetDisplay = source.GetDisplayNode(), target.GetDisplayNode()
    if sourceDisplay is None or targetDisplay is None:
        return
    if sourceDisplay.GetColorNodeID():
        targetDisplay.SetAndObserveColorNodeID(sourceDisplay.GetColorNodeID())
    targetDisplay.SetAutoWindowLevel(sourceDisplay.GetAutoWindowLevel())
    if not sourceDisplay.GetAutoWindowLevel():
        targetDisplay.SetWindowLevel(sourceDisplay.GetWindow(), sourceDisplay.GetLevel())


def defaultFixedVolume(scene: slicer.vtkMRMLScene) -> Optional[slicer.vtkMRMLScalarVolumeNode]:
    """The first scalar volume of ``scene`` that is not a label map (a label map is a scalar volume node too)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
    return None
