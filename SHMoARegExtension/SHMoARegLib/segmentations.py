"""Segmentation nodes to label-map files and back, keeping segment IDs, names, colours and terminology.

The engine works on label maps. A moving segmentation is written with label ``i + 1`` for its
``i``-th segment; a fixed segmentation reuses the moving label of the segment with the same
name (so the engine's per-label Dice compares like with like). The warped label map comes back
as a new segmentation node whose segments copy the moving segments' properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import slicer
import vtk

from SHMoARegLib.scene import SceneChanges
from SHMoARegLib.volumes import readVolume, writeVolume

_TERMINOLOGY_TAG = "TerminologyEntry"


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment needs to be recreated: identity, appearance and its label value in the file."""

    segmentId: str
    name: str
    color: tuple[float, float, float]
    label: int
    terminology: str = ""


def segmentInfos(segmentationNode: slicer.vtkMRMLSegmentationNode) -> list[SegmentInfo]:
    """The node's segments in order, labelled 1, 2, ..."""
    segmentation = segmentationNode.GetSegmentation()
    infos = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        terminology = vtk.reference("")
        if not segment.GetTag(_TERMINOLOGY_TAG, terminology):
            terminology = ""
        infos.append(SegmentInfo(segmentation.GetNthSegmentID(index), segment.GetName(),
                                 tuple(segment.GetColor()), index + 1, str(terminology)))
    return infos


def matchLabels(segmentationNode: slicer.vtkMRMLSegmentationNode, reference: list[SegmentInfo]) -> list[SegmentInfo]:
    """The node's segments labelled like the same-named ``reference`` segment; others get new labels."""
    byName = {info.name: info.label for info in reference}
    nextLabel = max((info.label for info in reference), default=0) + 1
    matched = []
    for info in segmentInfos(segmentationNode):
        label = byName.get(info.name)
        if label is None:
            label, nextLabel = nextLabel, nextLabel + 1
        matched.append(SegmentInfo(info.segmentId, info.name, info.color, label, info.terminology))
    return matched


def writeLabelmap(segmentationNode: slicer.vtkMRMLSegmentationNode, infos: list[SegmentInfo],
                  referenceVolume: slicer.vtkMRMLVolumeNode, path: Path,
                  toFrame: Optional[vtk.vtkMatrix4x4] = None) -> None:
    """Write the segments of ``infos`` as one label map on ``referenceVolume``'s grid (placed as
    :func:`SHMoARegLib.volumes.writeVolume` places the reference volume with the same ``toFrame``).

    The export runs on copies in a scratch scene, so the user's nodes are never touched (exporting from the
    user's node could give it a display node, which the rollback of the run's scene changes then removed).
    The transform between the segmentation and the reference volume is applied to the copy, as the export
    would in the user's scene.
    """
    scratch = slicer.vtkMRMLScene()
    segmentation = scratch.AddNewNodeByClass("vtkMRMLSegmentationNode")
    for info in infos:
        if not segmentation.GetSegmentation().CopySegmentFromSegmentation(
                segmentationNode.GetSegmentation(), info.segmentId):
            raise RuntimeError(f"cannot copy segment {info.name!r} of {segmentationNode.GetName()!r}")
    toReference = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
        segmentationNode.GetParentTransformNode(), referenceVolume.GetParentTransformNode(), toReference)
    segmentation.ApplyTransform(toReference)
    reference = scratch.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    reference.CopyOrientation(referenceVolume)
    grid = vtk.vtkImageData()
    grid.SetDimensions(referenceVolume.GetImageData().GetDimensions())
    grid.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    reference.SetAndObserveImageData(grid)
    labelmap = scratch.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation, [info.segmentId for info in infos], labelmap, reference,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
        raise RuntimeError(f"cannot export segmentation {segmentationNode.GetName()!r} to a label map")
    # The export numbers segments 1..N in the order given; map them to the wanted labels.
    values = slicer.util.arrayFromVolume(labelmap)
    lookup = np.zeros(len(infos) + 1, dtype=np.int32)
    lookup[1:] = [info.label for info in infos]
    values[:] = lookup[values].astype(values.dtype)
    slicer.util.arrayFromVolumeModified(labelmap)
    writeVolume(labelmap, path, toFrame)


def readSegmentation(scene: slicer.vtkMRMLScene, path: Path, name: str, infos: list[SegmentInfo],
                     referenceVolume: slicer.vtkMRMLVolumeNode) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node from a label-map file: label ``info.label`` becomes segment ``info``.

    ``infos`` must hold labels 1..N; segments empty after warping are kept, empty.
    """
    ordered = sorted(infos, key=lambda info: info.label)
    if [info.label for info in ordered] != list(range(1, len(ordered) + 1)):
        raise ValueError("segment labels must be 1..N to read a warped segmentation back")
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    segmentationNode.CreateDefaultDisplayNodes()
    segmentIds = vtk.vtkStringArray()
    for info in ordered:
        segmentationNode.GetSegmentation().AddSegment(_emptySegment(info), info.segmentId)
        segmentIds.InsertNextValue(info.segmentId)
    temporary = SceneChanges(scene)
    try:
        labelmap = readVolume(scene, path, "SHMoAReg temporary label map", "vtkMRMLLabelMapVolumeNode")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, segmentationNode, segmentIds):
            raise RuntimeError(f"cannot import the warped label map {path} into a segmentation")
    finally:
        temporary.rollback()
    return segmentationNode


def _emptySegment(info: SegmentInfo) -> slicer.vtkSegment:
    segment = slicer.vtkSegment()
    segment.SetName(info.name)
    segment.SetColor(*info.color)
    if info.terminology:
        segment.SetTag(_TERMINOLOGY_TAG, info.terminology)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                              slicer.vtkOrientedImageData())
    return segment

