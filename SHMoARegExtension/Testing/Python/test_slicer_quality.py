"""The checks a clinician makes before trusting a result: Jacobian and uncertainty maps, landmark TRE and segment
overlap tables, checkerboard and difference volumes (outputs written by the protocol stand-in)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import slicer
import vtk

import fake_engine
from mrml_helpers import addPointList, displayedColors, fakeEngine, ijkToRas, logicFor, sameGeometry
from SHMoARegLib import RegistrationOptions
from SHMoARegLib.colors import FOLDING_COLOR, INFERNO_NAME, SLICER_INFERNO_ID, showWithJacobianColors
from SHMoARegLib.evaluation import (
    DICE_AFTER_COLUMN,
    DICE_BEFORE_COLUMN,
    FAIL,
    HD95_AFTER_COLUMN,
    HD95_BEFORE_COLUMN,
    LANDMARK_COLUMN,
    MAXIMUM_ROW,
    MEAN_ROW,
    PASS,
    SEGMENT_COLUMN,
    TG132_MAX_TOLERANCE_MM,
    TG132_MEAN_TOLERANCE_MM,
    TOLERANCE_COLUMN,
    TRE_AFTER_COLUMN,
    TRE_BEFORE_COLUMN,
    VERDICT_COLUMN,
    describeMetrics,
    landmarkTable,
    tg132Passed,
)
from SHMoARegLib.qa import checkerboardVolume, differenceVolume
from SHMoARegLib.results import RunInputs
from SHMoARegLib.scene import folderChildren
from SHMoARegLib.segmentations import SegmentInfo
from SHMoARegLib.synthetic import BRIGHT_CENTRE, CENTRE, DARK_CENTRE

TRANSLATION_LPS = (3.0, -2.0, 1.5)
LANDMARK_LABELS = ["bright", "dark", "centre", "top"]


def column(table: slicer.vtkMRMLTableNode, name: str) -> list:
    """A table column's values: floats (NaN kept) for numbers, strings otherwise."""
    array = table.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name!r}"
    values = [array.GetValue(row) for row in range(array.GetNumberOfValues())]
    return values if isinstance(array, vtk.vtkStringArray) else [float(value) for value in values]


@pytest.fixture
def landmarkPoints(pair):
    """Fixed RAS points and their moving counterparts (the pair's shift plus a different offset each)."""
    fixed = [BRIGHT_CENTRE, DARK_CENTRE, CENTRE, CENTRE + np.array([0.0, 2.0, 6.0])]
    offsets = [np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, -2.0, 1.0]),
               np.array([0.5, 0.5, -3.0])]
    return [np.array(point) for point in fixed], [point + pair.shift + offset for point, offset in zip(fixed, offsets)]


@pytest.fixture
def checked(scene, pair, tmp_path, landmarkPoints):
    """A run with segmentations, landmarks (the moving list in another order) and an uncertainty map."""
    fixedPoints, movingPoints = landmarkPoints
    fixedList = addPointList(scene, "F", fixedPoints, LANDMARK_LABELS)
    movingList = addPointList(scene, "M", movingPoints[::-1], LANDMARK_LABELS[::-1])
    logic = logicFor(scene, tmp_path, fakeEngine("routing", "--translation", *map(str, TRANSLATION_LPS)))
    return logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation,
                          fixedList, movingList,
                          options=RegistrationOptions(uncertainty=True, similarity="mind", smoothness=0.5))


def test_jacobian_volume_is_on_the_fixed_grid_with_the_engines_values(checked, pair, scene):
    jacobian = checked.jacobianNode
    assert np.allclose(ijkToRas(jacobian), ijkToRas(pair.fixed), atol=1e-4)  # origin, spacing, directions
    assert sameGeometry(jacobian, pair.fixed)
    values = slicer.util.arrayFromVolume(jacobian)
    assert values.dtype == np.float32
    assert np.array_equal(values, fake_engine.jacobianField(values.shape))
    assert jacobian in folderChildren(scene, checked.folderItemId)


def test_jacobian_colours_centre_on_one_and_mark_folding(checked, scene):
    probe = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "probe")
    slicer.util.updateVolumeFromArray(probe, np.array([[[1.0, 0.5, 2.0, -0.1]]], dtype=np.float32))
    probe.CreateDefaultDisplayNodes()
    showWithJacobianColors(probe.GetDisplayNode())
    neutral, shrink, expand, folded = displayedColors(probe)[:, :3] / 255.0
    assert neutral == pytest.approx([1.0, 1.0, 1.0], abs=0.02)  # J = 1: no volume change, white
    assert shrink[2] > shrink[0] + 0.2 and shrink[2] > shrink[1] + 0.2  # J = 0.5: blue
    assert expand[0] > 0.6 and expand[1] < 0.2 and expand[2] < 0.2  # J = 2: red
    assert folded == pytest.approx(FOLDING_COLOR, abs=0.01)  # J <= 0: folding
    # The run's Jacobian volume is shown the same way.
    shown, probed = checked.jacobianNode.GetDisplayNode(), probe.GetDisplayNode()
    assert shown.GetColorNodeID() == probed.GetColorNodeID()
    assert (shown.GetWindow(), shown.GetLevel()) == pytest.approx((2.0, 1.0))


def test_uncertainty_map_is_loaded_with_inferno_only_when_asked_for(checked, pair, scene, tmp_path):
    uncertainty = checked.uncertaintyNode
    assert sameGeometry(uncertainty, pair.fixed)
    values = slicer.util.arrayFromVolume(uncertainty)
    assert np.array_equal(values, fake_engine.uncertaintyField(values.shape))
    display = uncertainty.GetDisplayNode()
    colors = scene.GetNodeByID(display.GetColorNodeID())
    assert colors.GetID() == SLICER_INFERNO_ID or colors.GetName() == INFERNO_NAME
    first, last = [0.0] * 4, [0.0] * 4
    colors.GetColor(0, first)
    colors.GetColor(255, last)
    assert first[:3] == pytest.approx([0.001, 0.000, 0.014], abs=5e-3)  # black ...
    assert last[:3] == pytest.approx([0.988, 0.998, 0.645], abs=5e-3)  # ... to pale yellow
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, values.max()))
    assert uncertainty in folderChildren(scene, checked.folderItemId)
    plain = logicFor(scene, tmp_path, fakeEngine("routing")).register(pair.fixed, pair.moving)
    assert plain.uncertaintyNode is None
    assert plain.landmarkTableNode is None and plain.segmentTableNode is None


def test_landmark_tre_after_is_the_distance_through_the_mrml_transform(checked, landmarkPoints):
    """By hand: map each fixed point through the imported transform (RAS, fixed -> moving) to its moving point."""
    fixedPoints, movingPoints = landmarkPoints
    fromParent = checked.transformNode.GetTransformFromParent()
    expectedAfter = [np.linalg.norm(np.array(fromParent.TransformPoint(f)) - m)
                     for f, m in zip(fixedPoints, movingPoints)]
    expectedBefore = [np.linalg.norm(m - f) for f, m in zip(fixedPoints, movingPoints)]
    table = checked.landmarkTableNode
    assert column(table, LANDMARK_COLUMN) == [*LANDMARK_LABELS, MEAN_ROW, MAXIMUM_ROW]
    assert column(table, TRE_AFTER_COLUMN) == pytest.approx(
        [*expectedAfter, np.mean(expectedAfter), np.max(expectedAfter)], abs=1e-4)
    assert column(table, TRE_BEFORE_COLUMN) == pytest.approx(
        [*expectedBefore, np.mean(expectedBefore), np.max(expectedBefore)], abs=1e-4)
    assert not np.allclose(expectedAfter, expectedBefore, atol=0.5)  # the translation changed the distances
    tolerances = column(table, TOLERANCE_COLUMN)
    assert tolerances == [TG132_MAX_TOLERANCE_MM] * 4 + [TG132_MEAN_TOLERANCE_MM, TG132_MAX_TOLERANCE_MM]
    assert column(table, VERDICT_COLUMN) == [PASS if value <= tolerance else FAIL for value, tolerance in
                                             zip(column(table, TRE_AFTER_COLUMN), tolerances)]


def test_segment_table_names_segments_and_keeps_missing_values(checked, pair):
    table = checked.segmentTableNode
    assert column(table, SEGMENT_COLUMN) == ["bright sphere", "dark sphere", MEAN_ROW]  # moving labels 1, 2
    expected = fake_engine.segmentMetrics([1, 2])
    assert column(table, DICE_BEFORE_COLUMN) == pytest.approx([0.41, 0.42, expected["mean_dice_before"]])
    assert column(table, DICE_AFTER_COLUMN) == pytest.approx([0.81, 0.82, expected["mean_dice"]])
    assert column(table, HD95_AFTER_COLUMN) == pytest.approx([1.6, 1.7, expected["mean_hd95_mm"]])
    hd95Before = column(table, HD95_BEFORE_COLUMN)
    assert hd95Before[0] == pytest.approx(7.0) and math.isnan(hd95Before[1])  # null in summary.json
    assert hd95Before[2] == pytest.approx(7.0)


def test_segment_names_cover_segments_only_the_fixed_segmentation_has(pair):
    moving = [SegmentInfo("m1", "liver", (1.0, 0.0, 0.0), 1), SegmentInfo("m2", "kidney", (0.0, 1.0, 0.0), 2)]
    fixed = [SegmentInfo("f1", "kidney", (0.0, 1.0, 0.0), 2), SegmentInfo("f2", "spleen", (0.0, 0.0, 1.0), 3)]
    inputs = RunInputs(pair.fixed, pair.moving, movingSegments=moving, fixedSegments=fixed)
    assert inputs.segmentNames == {1: "liver", 2: "kidney", 3: "spleen"}


def test_tables_are_in_the_runs_folder_and_method_is_reported(checked, scene):
    children = folderChildren(scene, checked.folderItemId)
    assert checked.landmarkTableNode in children and checked.segmentTableNode in children
    assert checked.summary["method"]["similarity"] == "mind"
    assert checked.summary["method"]["smoothness"] == 0.5


def test_status_sentences_report_folding_overlap_and_tg132():
    summary = {"metrics": {"sdlogj": 0.0812, "fraction_nonpositive": 0.00025, "mean_dice_before": 0.5,
                           "mean_dice": 0.8512, "mean_hd95_before_mm": 6.04, "mean_hd95_mm": None,
                           "tre_before_mm": 4.1, "tre_mm": 1.234, "tre_before_max_mm": 6.0, "tre_max_mm": 5.5}}
    assert describeMetrics(summary) == [
        "Smoothness: SDlogJ 0.081; folding: 0.03 % of voxels with J <= 0.",
        "Mean Dice 0.500 -> 0.851.",
        "Landmark TRE mean 4.10 -> 1.23 mm, maximum 6.00 -> 5.50 mm: OUTSIDE the AAPM TG-132 tolerance "
        "(mean <= 2 mm, maximum <= 5 mm).",
    ]
    assert tg132Passed(summary["metrics"]) is False
    assert tg132Passed({"tre_mm": 2.0, "tre_max_mm": 5.0}) is True
    assert tg132Passed({"tre_mm": 1.0}) is None
    assert describeMetrics({"metrics": {}}) == [] and describeMetrics({}) == []


def test_landmark_table_refuses_lists_of_different_lengths(scene):
    with pytest.raises(ValueError, match="2 landmark labels, 3 TRE values before and 3 after"):
        landmarkTable(scene, {"tre_per_point_mm": [1, 2, 3], "tre_before_per_point_mm": [1, 2, 3],
                              "landmark_labels": ["a", "b"]}, {}, "t")


def _grid(scene, name, values, reference=None):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if reference is not None:
        node.CopyOrientation(reference)
    else:
        node.SetSpacing(1.5, 2.0, 2.5)
        node.SetOrigin(10.0, -4.0, 3.0)
    slicer.util.updateVolumeFromArray(node, values)
    node.CreateDefaultDisplayNodes()
    return node


def test_checkerboard_alternates_blocks_of_fixed_and_warped(scene):
    shape = (4, 6, 8)  # k, j, i
    fixed = _grid(scene, "fixed", np.full(shape, 10.0, dtype=np.float32))
    warped = _grid(scene, "warped", np.full(shape, 20.0, dtype=np.float32), fixed)
    board = checkerboardVolume(scene, fixed, warped, squares=2)
    k, j, i = np.indices(shape)
    # Blocks of 2 x 3 x 4 voxels; the first (even) block shows the fixed volume.
    expected = np.where((k // 2 + j // 3 + i // 4) % 2 == 0, 10.0, 20.0)
    assert np.array_equal(slicer.util.arrayFromVolume(board), expected)
    assert sameGeometry(board, fixed)
    with pytest.raises(ValueError, match="at least 1"):
        checkerboardVolume(scene, fixed, warped, squares=0)


def test_difference_is_fixed_minus_warped_on_the_fixed_grid(scene):
    rng = np.random.default_rng(3)
    fixedValues = rng.integers(0, 100, (5, 6, 7)).astype(np.int16)
    warpedValues = rng.normal(50.0, 20.0, (5, 6, 7)).astype(np.float32)
    fixed = _grid(scene, "fixed", fixedValues)
    warped = _grid(scene, "warped", warpedValues, fixed)
    difference = differenceVolume(scene, fixed, warped)
    assert np.array_equal(slicer.util.arrayFromVolume(difference), fixedValues.astype(np.float32) - warpedValues)
    assert sameGeometry(difference, fixed)
    assert difference.GetDisplayNode().GetLevel() == 0.0
    elsewhere = _grid(scene, "elsewhere", warpedValues)
    elsewhere.SetSpacing(1.0, 1.0, 1.0)  # same size, another grid
    with pytest.raises(ValueError, match="not on the grid"):
        differenceVolume(scene, fixed, elsewhere)


def test_qa_volumes_go_to_the_runs_folder_in_the_fixed_space(checked, pair, scene):
    parent = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "fixed placement")
    for node in (pair.fixed, checked.warpedVolumeNode):
        node.SetAndObserveTransformNodeID(parent.GetID())
    board = checkerboardVolume(scene, pair.fixed, checked.warpedVolumeNode)
    difference = differenceVolume(scene, pair.fixed, checked.warpedVolumeNode)
    children = folderChildren(scene, checked.folderItemId)
    for node in (board, difference):
        assert node in children
        assert node.GetTransformNodeID() == parent.GetID()
        assert sameGeometry(node, pair.fixed)
    fixedValues = slicer.util.arrayFromVolume(pair.fixed)
    assert np.array_equal(slicer.util.arrayFromVolume(difference),
                          fixedValues - slicer.util.arrayFromVolume(checked.warpedVolumeNode))
