"""A moving volume the user pre-aligned keeps its pre-alignment (issue 12, defect 4e)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from mrml_helpers import fakeEngine, logicFor, sceneState
from SHMoARegLib import RegistrationOptions

SHIFT_RAS = (6.0, -4.0, 2.0)


def translation(scene, name: str, offset) -> object:
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    matrix = vtk.vtkMatrix4x4()
    for axis, value in enumerate(offset):
        matrix.SetElement(axis, 3, value)
    node.SetMatrixTransformToParent(matrix)
    return node


def toParentTranslation(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToParent(matrix)
    return np.array([matrix.GetElement(axis, 3) for axis in range(3)])


def test_the_moving_volume_is_exported_as_displayed_and_placed_through_a_copy_of_its_pre_alignment(
        scene, pair, tmp_path):
    user = translation(scene, "user pre-alignment", SHIFT_RAS)
    pair.moving.SetAndObserveTransformNodeID(user.GetID())
    pair.movingSegmentation.SetAndObserveTransformNodeID(user.GetID())
    userModified = user.GetMTime()
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    result = logic.register(pair.fixed, pair.moving, movingSegmentation=pair.movingSegmentation,
                            options=RegistrationOptions(keepTemporaryFiles=True))
    # What the engine saw: the moving image where it is displayed (origin moved by the pre-alignment, LPS).
    written = sitk.ReadImage(str(Path(result.outputDirectory).parent / "moving.nrrd"))
    origin = np.array(pair.moving.GetOrigin())
    expected = (origin + SHIFT_RAS) * [-1, -1, 1]
    assert np.allclose(written.GetOrigin(), expected, atol=1e-6)
    labels = sitk.ReadImage(str(Path(result.outputDirectory).parent / "moving_seg.nrrd"))
    assert np.allclose(labels.GetOrigin(), expected, atol=1e-6)
    # Placement: moving -> copy of the pre-alignment -> the registration's transform; the user's node is untouched.
    kept = pair.moving.GetParentTransformNode()
    assert kept is not user and kept.GetParentTransformNode() is result.transformNode
    assert np.allclose(toParentTranslation(kept), SHIFT_RAS)
    assert pair.movingSegmentation.GetParentTransformNode() is kept
    assert user.GetMTime() == userModified and user.GetParentTransformNode() is None


def test_registering_again_replaces_the_earlier_result_and_keeps_the_pre_alignment(scene, pair, tmp_path):
    user = translation(scene, "user pre-alignment", SHIFT_RAS)
    pair.moving.SetAndObserveTransformNodeID(user.GetID())
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    first = logic.register(pair.fixed, pair.moving)
    second = logic.register(pair.fixed, pair.moving)
    kept = pair.moving.GetParentTransformNode()
    assert kept.GetParentTransformNode() is second.transformNode
    assert np.allclose(toParentTranslation(kept), SHIFT_RAS)  # not the earlier result stacked on top
    assert first.transformNode is not second.transformNode


def test_a_moving_volume_without_pre_alignment_goes_straight_under_the_result(scene, pair, tmp_path):
    result = logicFor(scene, tmp_path, fakeEngine("routing")).register(pair.fixed, pair.moving)
    assert pair.moving.GetParentTransformNode() is result.transformNode


def test_a_nonlinear_pre_alignment_is_refused_before_anything_runs(scene, pair, tmp_path):
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "user warp")
    pair.moving.SetAndObserveTransformNodeID(grid.GetID())
    before = sceneState(scene)
    with pytest.raises(ValueError, match="nonlinear transform; harden it first"):
        logicFor(scene, tmp_path, fakeEngine("routing")).register(pair.fixed, pair.moving)
    assert sceneState(scene) == before and list(tmp_path.iterdir()) == []
