"""Known-answer tests of shmoareg.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.metrics import (
    dice_per_label,
    hd95_per_label,
    jacobian_statistics,
    mean_dice,
    target_registration_error,
)

SPACING = (0.7, 1.5, 2.0)  # (x, y, z): x is the smallest on purpose


def _cube(shape=(8, 8, 10), start=(2, 2, 2), size=4, label=1):
    """A ``size``^3 cube of ``label`` with its first voxel at (z, y, x) = ``start``."""
    array = np.zeros(shape, dtype=np.int32)
    z, y, x = start
    array[z:z + size, y:y + size, x:x + size] = label
    return array


# --- Dice -----------------------------------------------------------------------------------

def test_dice_half_overlap_and_missing_labels():
    reference = np.zeros((4, 4, 8), dtype=np.int32)
    prediction = np.zeros_like(reference)
    reference[:, :, 0:4] = 1  # 64 voxels
    prediction[:, :, 2:6] = 1  # 64 voxels, 32 shared -> 2 * 32 / 128
    reference[0, 0, 7] = 2  # only in the reference
    prediction[3, 3, 7] = 4  # only in the prediction
    assert dice_per_label(reference, prediction) == {1: 0.5, 2: 0.0}
    explicit = dice_per_label(reference, prediction, labels=[1, 3, 4])
    assert explicit == {1: 0.5, 4: 0.0}  # 3 is in neither map: left out


def test_dice_identical_maps():
    labels = _cube(label=3)
    assert dice_per_label(labels, labels) == {3: 1.0}


def test_dice_shape_mismatch():
    with pytest.raises(InputError, match="differ in shape"):
        dice_per_label(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_mean_dice_ignores_nan_and_empty_is_nan():
    assert mean_dice({1: 0.5, 2: 0.0, 3: math.nan}) == 0.25
    assert math.isnan(mean_dice({}))
    assert math.isnan(mean_dice({1: math.nan}))


# --- HD95 -----------------------------------------------------------------------------------

def test_hd95_single_voxels_use_xyz_spacing():
    # A single voxel is its own surface, so HD95 is the distance between the two voxels.
    reference = np.zeros((6, 6, 8), dtype=np.int32)
    prediction = np.zeros_like(reference)
    reference[1, 1, 1] = 1
    prediction[1, 1, 5] = 1  # 4 voxels along x: 4 * 0.7 mm
    reference[4, 4, 1] = 2
    prediction[5, 4, 1] = 2  # 1 voxel along z: 2.0 mm
    result = hd95_per_label(reference, prediction, SPACING)
    assert result[1] == pytest.approx(2.8)
    assert result[2] == pytest.approx(2.0)


def test_hd95_cube_shifted_along_x():
    # Cube x in [2, 5] against x in [3, 6], same y and z. Each surface has 4^3 - 2^3 = 56 voxels.
    # Reference -> prediction: the x = 2 face (16 voxels) is sx from the prediction's x = 3 face;
    # the 4 inner voxels of the x = 5 face lie inside the prediction, min(sx, sy, sz) = sx from
    # its surface; the other 36 voxels are on the prediction surface (0). Symmetrically for the
    # prediction. Pooled: 40 distances of sx and 72 of 0, so the 95th percentile is sx.
    reference = _cube(start=(2, 2, 2))
    prediction = _cube(start=(2, 2, 3))
    assert hd95_per_label(reference, prediction, SPACING)[1] == pytest.approx(SPACING[0])


def test_hd95_is_a_percentile_not_the_maximum():
    # One far outlier voxel among 113 pooled distances (112 zeros): the 95th percentile is 0.
    reference = _cube(shape=(8, 8, 20))
    prediction = reference.copy()
    reference[4, 4, 18] = 1
    assert hd95_per_label(reference, prediction, SPACING)[1] == 0.0


def test_hd95_image_edge_counts_as_outside():
    # A 3 x 3 (z, y) block filling the image cross-section: reference x in [0, 3], prediction
    # x in [0, 4]. With the image edge as surface, the reference surface has 34 voxels (all but
    # the 2 centre voxels of x = 1, 2) and the prediction 42. Reference -> prediction: only the
    # centre of x = 3 is off the prediction surface, at min(sx, sy, sz) = sx. Prediction ->
    # reference: the 9 voxels of x = 4 are sx away. Pooled: 66 zeros and 10 of sx; the 95th
    # percentile (position 71.25 of 0..75) is sx.
    reference = np.zeros((3, 3, 6), dtype=np.int32)
    prediction = np.zeros_like(reference)
    reference[:, :, 0:4] = 1
    prediction[:, :, 0:5] = 1
    assert hd95_per_label(reference, prediction, SPACING)[1] == pytest.approx(SPACING[0])


def test_hd95_missing_labels():
    reference = _cube(label=1)
    prediction = _cube(label=2)
    result = hd95_per_label(reference, prediction, SPACING, labels=[1, 2, 5])
    assert set(result) == {1, 2}
    assert math.isnan(result[1]) and math.isnan(result[2])


def test_hd95_bad_spacing():
    labels = _cube()
    with pytest.raises(InputError, match="spacing"):
        hd95_per_label(labels, labels, (1.0, 0.0, 1.0))


# --- Jacobian statistics --------------------------------------------------------------------

def test_jacobian_statistics_with_mask():
    e = math.e
    jacobian = np.array([e, 1 / e, e, 1 / e, -3.0]).reshape(1, 1, 1, 1, 5)
    mask = np.array([True, True, True, True, False]).reshape(1, 1, 5)  # broadcasts
    stats = jacobian_statistics(jacobian, mask)
    # log J = [1, -1, 1, -1]: mean 0, standard deviation 1.
    assert stats["sdlogj"] == pytest.approx(1.0)
    assert stats["fraction_nonpositive"] == 0.0
    assert stats["jacobian_min"] == pytest.approx(1 / e)
    assert stats["jacobian_max"] == pytest.approx(e)
    assert stats["jacobian_mean"] == pytest.approx((e + 1 / e) / 2)

    unmasked = jacobian_statistics(jacobian)
    assert unmasked["fraction_nonpositive"] == pytest.approx(0.2)
    assert unmasked["jacobian_min"] == -3.0


def test_jacobian_statistics_clips_log_at_1e9():
    # log J = [log 1e-9, 0] -> standard deviation |log 1e-9| / 2 = 9 ln(10) / 2.
    stats = jacobian_statistics(np.array([0.0, 1.0]))
    assert stats["sdlogj"] == pytest.approx(9 * math.log(10) / 2)
    assert stats["fraction_nonpositive"] == 0.5


def test_jacobian_statistics_bad_mask():
    with pytest.raises(InputError, match="mask shape"):
        jacobian_statistics(np.ones((2, 3)), np.ones((3, 2), dtype=bool))
    with pytest.raises(InputError, match="no voxel"):
        jacobian_statistics(np.ones((2, 3)), np.zeros((2, 3), dtype=bool))


# --- Target registration error --------------------------------------------------------------

def test_tre_with_translation():
    transform = sitk.TranslationTransform(3, (1.0, 2.0, 2.0))
    fixed = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # T(f0) = (1, 2, 2) matches exactly; T(f1) = (2, 3, 3) is sqrt(4 + 9 + 9) from the origin.
    moving = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(target_registration_error(fixed, moving, transform), [0.0, math.sqrt(22)])


def test_tre_bad_inputs():
    transform = sitk.TranslationTransform(3)
    with pytest.raises(InputError, match="2 fixed landmarks but 1 moving"):
        target_registration_error(np.zeros((2, 3)), np.zeros((1, 3)), transform)
    with pytest.raises(InputError, match="no landmarks"):
        target_registration_error(np.zeros((0, 3)), np.zeros((0, 3)), transform)
    with pytest.raises(InputError, match=r"shape \(2, 2\)"):
        target_registration_error(np.zeros((2, 2)), np.zeros((2, 3)), transform)
