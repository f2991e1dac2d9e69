"""Landmark point lists to the engine's files: checked before anything runs, paired by label or by order, LPS."""

from __future__ import annotations

import numpy as np
import pytest

from mrml_helpers import addPointList, fakeEngine, logicFor
from SHMoARegLib.landmarks import CSV_COORDINATE_COMMENT, pairLandmarks, writeLandmarks

POINTS = [np.array([10.0, -20.0, 15.0]), np.array([-3.5, 4.25, 0.0]), np.array([1.0, 2.0, 3.0])]


def test_labelled_lists_pair_by_label_in_lps_world_coordinates(scene):
    parent = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = parent.GetMatrixTransformToParent()
    matrix.SetElement(0, 3, 5.0)
    parent.SetMatrixTransformToParent(matrix)
    fixed = addPointList(scene, "F", POINTS, ["a", "b", "c"])
    fixed.SetAndObserveTransformNodeID(parent.GetID())  # world = point + (5, 0, 0) RAS
    moving = addPointList(scene, "M", POINTS[::-1], ["c", "b", "a"])
    pairs = pairLandmarks(fixed, moving)
    assert pairs.byLabel
    assert [label for label, _ in pairs.fixedRows] == ["a", "b", "c"]
    assert [label for label, _ in pairs.movingRows] == ["c", "b", "a"]
    assert pairs.fixedRows[0][1] == pytest.approx([-15.0, 20.0, 15.0])  # RAS (15, -20, 15) in LPS
    assert pairs.movingRows[0][1] == pytest.approx([-1.0, -2.0, 3.0])
    assert pairs.displayNames == {"a": "a", "b": "b", "c": "c"}


def test_lists_without_unique_labels_pair_by_order_and_are_numbered(scene):
    fixed = addPointList(scene, "F", POINTS, ["a", "a", "b"])  # a repeated label
    moving = addPointList(scene, "M", POINTS, ["x", "y", "z"])
    pairs = pairLandmarks(fixed, moving)
    assert not pairs.byLabel
    assert [label for label, _ in pairs.fixedRows] == [label for label, _ in pairs.movingRows] == ["1", "2", "3"]
    assert pairs.displayNames == {"1": "a", "2": "a", "3": "b"}
    unlabelled = addPointList(scene, "U", POINTS, ["", "", ""])
    assert pairLandmarks(unlabelled, moving).displayNames == {"1": "1", "2": "2", "3": "3"}
    # Slicer's own labels (F-1, F-2... and M-1, M-2...) share none: by order.
    pairs = pairLandmarks(addPointList(scene, "F", POINTS, [None] * 3), addPointList(scene, "M", POINTS, [None] * 3))
    assert not pairs.byLabel and pairs.displayNames == {"1": "F-1", "2": "F-2", "3": "F-3"}


def test_unpairable_lists_are_refused_with_the_reason(scene):
    fixed = addPointList(scene, "F", POINTS, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"labels do not match \(fixed only: b, c; moving only: d\)"):
        pairLandmarks(fixed, addPointList(scene, "M", POINTS[:2], ["a", "d"]))
    for labels in (["", ""], ["x", "y"]):  # no labels, or none shared: by order
        with pytest.raises(ValueError, match="'F' has 3 points and the moving list 'M2' 2"):
            pairLandmarks(fixed, addPointList(scene, "M2", POINTS[:2], labels))
    with pytest.raises(ValueError, match="moving landmark list 'E' has no points"):
        pairLandmarks(fixed, scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "E"))
    unplaced = addPointList(scene, "P", POINTS, ["a", "b", "c"])
    unplaced.UnsetNthControlPointPosition(1)
    with pytest.raises(ValueError, match="point b of the moving landmark list 'P' has no position"):
        pairLandmarks(fixed, unplaced)


def test_register_checks_landmarks_before_anything_runs(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("crash"))
    fixed = addPointList(scene, "F", POINTS, ["a", "b", "c"])
    with pytest.raises(ValueError, match="choose the moving landmarks too"):
        logic.register(pair.fixed, pair.moving, fixedLandmarks=fixed)
    with pytest.raises(ValueError, match="labels do not match"):
        logic.register(pair.fixed, pair.moving, fixedLandmarks=fixed,
                       movingLandmarks=addPointList(scene, "M", POINTS, ["a", "b", "x"]))
    with pytest.raises(ValueError, match="must be a point list"):
        logic.register(pair.fixed, pair.moving, fixedLandmarks=fixed, movingLandmarks=pair.fixed)
    assert not logic.isRunning and list(tmp_path.iterdir()) == []


def test_written_file_reads_back_in_the_engine_as_lps_with_labels(tmp_path):
    rows = [("apex, left", POINTS[0]), ("2", POINTS[1])]
    path = tmp_path / "points.csv"
    writeLandmarks(rows, path)
    assert path.read_text().splitlines()[:3] == [CSV_COORDINATE_COMMENT, "label,x,y,z",
                                                 '"apex, left",10.0,-20.0,15.0']
    engineLandmarks = pytest.importorskip("shmoareg.landmarks")
    points, labels = engineLandmarks.read_labeled_landmarks(path)
    assert labels == ["apex, left", "2"]
    assert points == pytest.approx(np.array([POINTS[0], POINTS[1]]))  # the engine takes them as LPS, unchanged
