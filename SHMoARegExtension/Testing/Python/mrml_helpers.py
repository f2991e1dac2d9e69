"""Helpers of the MRML logic tests: engine commands, scene state, geometry and label comparisons."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from SHMoARegLib import RegistrationOptions, RegistrationRunner
from SHMoARegLib.scene import SceneChanges, subjectHierarchy

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
# Small enough that a real engine run takes a few seconds on two CPU cores.
FAST = RegistrationOptions(device="cpu", refineSteps=60)


def fakeEngine(mode: str, *options: str) -> list[str]:
    """Engine command prefix of the protocol stand-in in ``mode`` (with its own ``options``, e.g. --translation)."""
    return [sys.executable, str(FAKE_ENGINE), "--mode", mode, *options]


def logicFor(scene: slicer.vtkMRMLScene, temporaryDirectory: Path, engineCommand=None,
             keepEngineWarm: bool = False) -> RegistrationRunner:
    logic = RegistrationRunner(scene, engineCommand, keepEngineWarm)
    logic.temporaryDirectory = str(temporaryDirectory)
    return logic


def sceneState(scene: slicer.vtkMRMLScene) -> tuple[int, int]:
    """Number of nodes and of subject-hierarchy items."""
    items = subjectHierarchy(scene).GetNumberOfItems()  # first: it may create the hierarchy node
    return scene.GetNumberOfNodes(), items


def ijkToRas(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sameGeometry(a: slicer.vtkMRMLVolumeNode, b: slicer.vtkMRMLVolumeNode) -> bool:
    """Same voxel grid: dimensions and IJK-to-RAS matrix."""
    return (a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()
            and np.allclose(ijkToRas(a), ijkToRas(b), atol=1e-4))


def onGridInFrameOf(node: slicer.vtkMRMLVolumeNode, fixed: slicer.vtkMRMLVolumeNode, spacing) -> bool:
    """``node``'s voxels are ``spacing`` mm (per axis, or one number) along ``fixed``'s axes and its centre lies inside
    ``fixed``: how the engine writes a network's maps, on the network's own grids in the fixed image's frame."""
    axes, fixedAxes = ijkToRas(node)[:3, :3], ijkToRas(fixed)[:3, :3]
    sizes, fixedSizes = np.linalg.norm(axes, axis=0), np.linalg.norm(fixedAxes, axis=0)
    dimensions, fixedDimensions = (np.asarray(volume.GetImageData().GetDimensions()) for volume in (node, fixed))
    centre = np.linalg.inv(ijkToRas(fixed)) @ ijkToRas(node) @ np.array([*((dimensions - 1) / 2), 1.0])
    return (np.allclose(axes / sizes, fixedAxes / fixedSizes, atol=1e-4) and np.allclose(sizes, spacing, atol=1e-4)
            and bool(np.all(np.abs(centre[:3] - (fixedDimensions - 1) / 2) < fixedDimensions / 2)))


def segmentArrays(segmentation: slicer.vtkMRMLSegmentationNode,
                  reference: slicer.vtkMRMLVolumeNode) -> dict[str, np.ndarray]:
    """Binary array of each segment (by name) on ``reference``'s grid."""
    changes = SceneChanges(segmentation.GetScene())
    arrays = {}
    segments = segmentation.GetSegmentation()
    for index in range(segments.GetNumberOfSegments()):
        labelmap = segmentation.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation, [segments.GetNthSegmentID(index)], labelmap, reference,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        arrays[segments.GetNthSegment(index).GetName()] = slicer.util.arrayFromVolume(labelmap) > 0
    changes.rollback()
    return arrays


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def addPointList(scene: slicer.vtkMRMLScene, name: str, points, labels) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A point list with RAS ``points`` labelled ``labels`` (Slicer's own label where a label is None)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for point, label in zip(points, labels):
        index = node.AddControlPoint(*(float(value) for value in point))
        if label is not None:
            node.SetNthControlPointLabel(index, label)
    return node


def displayedColors(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """RGBA (0-255) of each voxel as the volume's display node colours it for the slice views, in voxel order."""
    display = volume.GetDisplayNode()
    display.SetInputImageDataConnection(volume.GetImageDataConnection())
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    return vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())
