"""The affine stage's rotation search: native-space brains rotated 15-25 degrees from each other (issue 24)."""

import numpy as np
import pytest
import SimpleITK as sitk

from shmoareg import affine
from shmoareg.resources import SAMPLE_PAIR

LARGE_ROTATIONS = [(0.4, 0.0, 0.25), (0.35, -0.3, 0.2)]  # radians about x, y, z: up to 23 degrees


@pytest.fixture(scope="module")
def brain() -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE_PAIR["fixed"]), sitk.sitkFloat32)


def _mean_error_mm(brain: sitk.Image, found: sitk.Transform, truth: sitk.Transform) -> float:
    """Mean distance between the two transforms' images of every 997th brain voxel."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(brain) > 0)[::997]
    points = [brain.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]) for index in indices]
    return float(np.mean([np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))
                          for p in points]))


def _rotated(brain: sitk.Image, angles: tuple[float, float, float]) -> tuple[sitk.Image, sitk.Transform]:
    """``brain`` rotated about its centre by ``angles`` and shifted; the transform maps fixed to moving points."""
    centre = brain.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in brain.GetSize()])
    truth = sitk.Euler3DTransform(centre, *angles, (6.0, -4.0, 3.0))
    return sitk.Resample(brain, brain, truth.GetInverse(), sitk.sitkLinear, 0.0), truth


@pytest.mark.parametrize("angles", LARGE_ROTATIONS)
def test_a_large_rotation_is_found(brain, angles):
    moving, truth = _rotated(brain, angles)
    assert _mean_error_mm(brain, affine.initialise_affine(brain, moving), truth) < 0.5


def test_without_the_rotation_search_the_descent_misses_it(brain, monkeypatch):
    """The known answer the search is there for: from the centres of mass alone Mattes MI stops centimetres off."""
    moving, truth = _rotated(brain, LARGE_ROTATIONS[0])
    monkeypatch.setattr(affine, "ROTATION_STEPS", 0)
    assert _mean_error_mm(brain, affine.initialise_affine(brain, moving), truth) > 5.0
