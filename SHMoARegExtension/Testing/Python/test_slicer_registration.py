"""End to end with the real engine on a synthetic pair (non-identity directions, a known RAS shift)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from mrml_helpers import FAST, addPointList, dice, logicFor, onGridInFrameOf, sameGeometry, segmentArrays
from SHMoARegLib import routingKey
from SHMoARegLib.evaluation import LANDMARK_COLUMN, TRE_AFTER_COLUMN, TRE_BEFORE_COLUMN
from SHMoARegLib.scene import folderChildren, subjectHierarchy
from SHMoARegLib.synthetic import addSyntheticPair


LANDMARKS = ["bright centre", "dark centre"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One real registration (with segmentations and landmarks) shared by the tests of this file."""
    scene = slicer.vtkMRMLScene()
    pair = addSyntheticPair(scene)
    movingBefore = slicer.util.arrayFromVolume(pair.moving).copy()
    logic = logicFor(scene, tmp_path_factory.mktemp("work"))
    progress = []
    fixedList = addPointList(scene, "F", [fixedPoint for fixedPoint, _ in pair.landmarks], LANDMARKS)
    movingList = addPointList(scene, "M", [movingPoint for _, movingPoint in pair.landmarks], LANDMARKS)
    result = logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation,
                            fixedList, movingList, progressCallback=lambda fraction, message: progress.append(fraction),
                            options=replace(FAST, keepTemporaryFiles=True))
    return scene, pair, result, movingBefore, progress, logic


def resampleToFixed(scene, pair, transformNode):
    """A clone of the moving volume resampled onto the fixed grid by Slicer, through ``transformNode``."""
    clone = slicer.vtkSlicerVolumesLogic.CloneVolume(scene, pair.moving, "clone")
    clone.SetAndObserveTransformNodeID(transformNode.GetID() if transformNode else None)
    resampled = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(clone, pair.fixed)
    return slicer.util.arrayFromVolume(resampled).astype(float)


def test_transform_brings_moving_closer_to_fixed(registered):
    scene, pair, result, _, _, _ = registered
    fixed = slicer.util.arrayFromVolume(pair.fixed).astype(float)
    before = np.mean((resampleToFixed(scene, pair, None) - fixed) ** 2)
    after = np.mean((resampleToFixed(scene, pair, result.transformNode) - fixed) ** 2)
    assert after < 0.3 * before


def test_slicer_resampling_matches_the_engines_warped_volume(registered):
    """Slicer's reading of transform.h5 (LPS -> RAS, FromParent) equals the engine's own resampling."""
    scene, pair, result, _, _, _ = registered
    throughSlicer = resampleToFixed(scene, pair, result.transformNode)
    warped = slicer.util.arrayFromVolume(result.warpedVolumeNode).astype(float)
    inside = slicer.util.arrayFromVolume(pair.fixed) > 20
    assert np.mean(np.abs(throughSlicer - warped)[inside]) < 0.5  # intensities span 0..180; inverse: ~50


def test_known_points_land_where_they_should(registered):
    _, pair, result, _, _, _ = registered
    fromParent = result.transformNode.GetTransformFromParent()
    for fixedPoint, movingPoint in pair.landmarks:
        assert np.linalg.norm(movingPoint - fixedPoint) > 5.0
        # The transform maps fixed points to moving points (resampling convention)...
        assert np.linalg.norm(np.array(fromParent.TransformPoint(fixedPoint)) - movingPoint) < 1.5
        # ...so the moving volume under it is displayed aligned with the fixed one.
        world = [0.0, 0.0, 0.0]
        pair.moving.TransformPointToWorld(movingPoint, world)
        assert np.linalg.norm(np.array(world) - fixedPoint) < 1.5


def test_engines_tre_is_the_distance_through_the_mrml_transform(registered):
    """The engine read the module's landmark files as meant: its TRE equals the one computed in Slicer."""
    _, pair, result, _, _, _ = registered
    fromParent = result.transformNode.GetTransformFromParent()
    table = result.landmarkTableNode
    names = table.GetTable().GetColumnByName(LANDMARK_COLUMN)
    before = table.GetTable().GetColumnByName(TRE_BEFORE_COLUMN)
    after = table.GetTable().GetColumnByName(TRE_AFTER_COLUMN)
    for row, (fixedPoint, movingPoint) in enumerate(pair.landmarks):
        assert names.GetValue(row) == LANDMARKS[row]
        assert before.GetValue(row) == pytest.approx(np.linalg.norm(pair.shift), abs=1e-4)
        expected = np.linalg.norm(np.array(fromParent.TransformPoint(fixedPoint)) - movingPoint)
        # ITK (the engine) and VTK (the MRML grid transform) interpolate the field differently: a few
        # hundredths of a mm apart; a point paired wrongly or read in RAS would be millimetres off.
        assert after.GetValue(row) == pytest.approx(expected, abs=0.05) and expected < 1.5


def test_jacobian_volume_is_on_the_transforms_grid_over_the_fixed_image(registered):
    """The engine writes the field and its Jacobian on the working grid's points, extended over the fixed image."""
    _, pair, result, _, _, _ = registered
    grid = result.transformNode.GetTransformFromParent().GetDisplacementGrid()
    assert result.jacobianNode.GetImageData().GetDimensions() == grid.GetDimensions()
    assert np.allclose(result.jacobianNode.GetSpacing(), grid.GetSpacing(), atol=1e-4)
    jacobianBounds, fixedBounds = [0.0] * 6, [0.0] * 6
    result.jacobianNode.GetRASBounds(jacobianBounds)
    pair.fixed.GetRASBounds(fixedBounds)
    assert all(j <= f + 1e-3 for j, f in zip(jacobianBounds[0::2], fixedBounds[0::2]))
    assert all(j >= f - 1e-3 for j, f in zip(jacobianBounds[1::2], fixedBounds[1::2]))
    values = slicer.util.arrayFromVolume(result.jacobianNode)
    assert values.dtype == np.float32 and 0.0 < np.median(values) < 2.0


def test_moving_volume_observes_the_transform_and_is_not_modified(registered):
    _, pair, result, movingBefore, _, _ = registered
    transform = result.transformNode
    assert not transform.IsLinear()
    # Issue 12, 4f: the class Slicer's own loader gives a displacement field, which CLI modules list.
    assert transform.IsA("vtkMRMLGridTransformNode")
    assert pair.moving.GetTransformNodeID() == transform.GetID()
    assert pair.movingSegmentation.GetTransformNodeID() == transform.GetID()
    assert transform.GetNodeReference(transform.GetMovingNodeReferenceRole()) is pair.moving
    assert transform.GetNodeReference(transform.GetFixedNodeReferenceRole()) is pair.fixed
    assert np.array_equal(slicer.util.arrayFromVolume(pair.moving), movingBefore)
    assert pair.fixed.GetTransformNodeID() is None


def test_warped_segmentation_keeps_segments_and_overlaps_the_fixed_one(registered):
    _, pair, result, _, _, _ = registered
    original = pair.movingSegmentation.GetSegmentation()
    warped = result.warpedSegmentationNode.GetSegmentation()
    assert [warped.GetNthSegmentID(i) for i in range(warped.GetNumberOfSegments())] == \
        [original.GetNthSegmentID(i) for i in range(original.GetNumberOfSegments())]
    for index in range(original.GetNumberOfSegments()):
        assert warped.GetNthSegment(index).GetName() == original.GetNthSegment(index).GetName()
        assert warped.GetNthSegment(index).GetColor() == pytest.approx(original.GetNthSegment(index).GetColor())
    warpedArrays = segmentArrays(result.warpedSegmentationNode, pair.fixed)
    fixedArrays = segmentArrays(pair.fixedSegmentation, pair.fixed)
    for name in fixedArrays:
        assert dice(warpedArrays[name], fixedArrays[name]) > 0.7, name
    # Fixed segments were written in the other order: the engine's Dice per label must still improve.
    metrics = result.summary["metrics"]
    for label, value in metrics["dice"].items():
        assert value > metrics["dice_before"][label] + 0.3


def test_outputs_are_on_the_fixed_grid_in_one_folder(registered):
    scene, pair, result, _, _, _ = registered
    assert sameGeometry(result.warpedVolumeNode, pair.fixed)
    hierarchy = subjectHierarchy(scene)
    assert hierarchy.GetItemName(result.folderItemId) == "synthetic moving to synthetic fixed"
    children = folderChildren(scene, result.folderItemId)
    for node in (result.transformNode, result.warpedVolumeNode, result.warpedSegmentationNode, result.jacobianNode,
                 result.landmarkTableNode, result.segmentTableNode):
        assert node in children
    # The default model (shipped shmoareg weights): maps.json's arg-max maps for 4 decoder levels x 3 axes, no gates.
    assert set(result.mapNodes) == {routingKey(level, axis) for level in (1, 2, 3, 4) for axis in "xyz"}
    assert result.gateNodes == {} and [info.name for info in result.maps] == list(result.mapNodes)
    assert result.utilisationTableNode.GetNumberOfRows() == 12
    for info in result.maps:  # each on its level's grid, in the fixed volume's frame
        assert result.mapNodes[info.name].IsA("vtkMRMLLabelMapVolumeNode")
        assert onGridInFrameOf(result.mapNodes[info.name], pair.fixed, info.spacingMm)


def test_progress_reaches_the_end_in_order(registered):
    *_, progress, _ = registered
    assert len(progress) > 5
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_saved_transform_is_the_engines_transform(registered, tmp_path):
    _, pair, result, _, _, logic = registered
    path = tmp_path / "saved.h5"
    logic.saveTransform(result.transformNode, str(path))
    saved = sitk.ReadTransform(str(path))
    engine = sitk.ReadTransform(str(Path(result.outputDirectory) / "transform.h5"))
    lps = np.diag([-1.0, -1.0, 1.0])
    for fixedPoint, movingPoint in pair.landmarks:
        point = (lps @ fixedPoint).tolist()
        assert np.allclose(saved.TransformPoint(point), engine.TransformPoint(point), atol=1e-3)
        assert np.linalg.norm(lps @ np.array(saved.TransformPoint(point)) - movingPoint) < 1.5
