"""Nodes for and from the engine (issue 12): storage nodes released (4c), the default fixed volume (4h), the
segmentation export on copies (4g)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from SHMoARegLib.segmentations import segmentInfos, writeLabelmap
from SHMoARegLib.volumes import defaultFixedVolume, defaultStorageNode, writeVolume


def test_a_default_storage_node_is_freed_when_python_lets_go(pair):
    """``CreateDefaultStorageNode`` hands over a reference: without releasing it, one node leaked per file."""
    storage = defaultStorageNode(pair.fixed)
    assert storage.IsA("vtkMRMLVolumeArchetypeStorageNode")
    alive = vtk.vtkWeakReference()
    alive.Set(storage)
    del storage
    assert alive.Get() is None


def test_writing_a_volume_keeps_working(pair, tmp_path):
    writeVolume(pair.fixed, tmp_path / "fixed.nrrd")
    assert (tmp_path / "fixed.nrrd").stat().st_size > 0


def test_the_default_fixed_volume_is_never_a_label_map(scene):
    """Issue 12, 4h: a label map is a scalar volume node too, and may come first in the scene."""
    assert defaultFixedVolume(scene) is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    assert defaultFixedVolume(scene) is None
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    assert defaultFixedVolume(scene) is image


def test_exporting_a_segmentation_for_the_engine_leaves_the_users_node_as_it_was(scene, pair, tmp_path):
    """Issue 12, 4g: the export ran on the user's node (in the application it could gain a display node that a
    rollback then removed); it runs on a copy in a scratch scene."""
    segmentation = pair.movingSegmentation
    display = segmentation.GetDisplayNode()  # a segmentation made by a script may have none
    segmentation.RemoveAllDisplayNodeIDs()
    scene.RemoveNode(display)
    modified, nodes = segmentation.GetMTime(), scene.GetNumberOfNodes()
    writeLabelmap(segmentation, segmentInfos(segmentation), pair.moving, tmp_path / "labels.nrrd")
    assert segmentation.GetMTime() == modified and segmentation.GetNumberOfDisplayNodes() == 0
    assert scene.GetNumberOfNodes() == nodes
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nrrd")))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels.shape == slicer.util.arrayFromVolume(pair.moving).shape


def test_the_exported_labels_follow_the_segmentations_transform(scene, pair, tmp_path):
    """A segmentation under a translation is exported where it is displayed, as Slicer's export does."""
    segmentation = pair.movingSegmentation
    writeLabelmap(segmentation, segmentInfos(segmentation), pair.moving, tmp_path / "plain.nrrd")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    step = 2 * pair.moving.GetSpacing()[0]
    matrix.SetElement(0, 3, step)
    shift.SetMatrixTransformToParent(matrix)
    segmentation.SetAndObserveTransformNodeID(shift.GetID())
    writeLabelmap(segmentation, segmentInfos(segmentation), pair.moving, tmp_path / "shifted.nrrd")
    plain, shifted = (sitk.ReadImage(str(tmp_path / name)) for name in ("plain.nrrd", "shifted.nrrd"))

    def centroid(image: sitk.Image) -> np.ndarray:
        statistics = sitk.LabelShapeStatisticsImageFilter()
        statistics.Execute(image > 0)
        return np.asarray(statistics.GetCentroid(1))  # LPS mm

    moved = centroid(shifted) - centroid(plain)
    assert np.allclose(moved, [-step, 0.0, 0.0], atol=0.5 * step)  # RAS +x is LPS -x
