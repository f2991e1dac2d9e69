"""Volumes and transforms to and from files, through MRML storage nodes only.

Storage nodes convert between Slicer's RAS and the files' LPS, the same inside Slicer and
in a headless scene. Nodes read here are added to the scene only once their data loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import slicer


def defaultStorageNode(node: slicer.vtkMRMLStorableNode) -> slicer.vtkMRMLStorageNode:
    """``node.CreateDefaultStorageNode()``, owned by Python alone.

    The method hands over a reference that the caller must release (Slicer's own code calls
    ``UnRegister``); the Python wrapper takes one more, so without this every call leaked a storage node.
    """
    storage = node.CreateDefaultStorageNode()
    storage.UnRegister(None)
    return storage


def writeVolume(node: slicer.vtkMRMLVolumeNode, path: Path) -> None:
    """Write a volume (its own geometry, parent transforms ignored) to NRRD or NIfTI."""
    storage = defaultStorageNode(node)
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(node):
        raise RuntimeError(f"cannot write volume {node.GetName()!r} to {path}")


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
