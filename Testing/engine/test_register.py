"""End to end: known translations and rotations are recovered and the written transform file
moves the moving image onto the fixed one in physical space (anisotropic, rotated grids)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import phantom_image, phantom_labels, rotation_direction
from shmoareg.errors import InputError
from shmoareg.fields import sampled_field
from shmoareg.landmarks import write_landmarks_csv
from shmoareg.resources import SAMPLE_PAIR
from shmoareg.metrics import dice_per_label, mean_dice
from shmoareg.optimise import structured
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.progress import Progress

FIXED_GEOMETRY = dict(size=(44, 40, 30), spacing=(1.5, 1.6, 2.2), origin=(-32.0, -30.0, -31.0),
                      direction=rotation_direction((0.15, -0.1, 0.25)))
MOVING_GEOMETRY = dict(size=(46, 42, 32), spacing=(1.6, 1.5, 2.0), origin=(-36.0, -34.0, -30.0))


def interior_points(image: sitk.Image, margin: int = 6) -> np.ndarray:
    """Physical points of a regular sub-sample of the image's interior voxels."""
    size = image.GetSize()
    indices = [(i, j, k) for i in range(margin, size[0] - margin, 5) for j in range(margin, size[1] - margin, 5)
               for k in range(margin, size[2] - margin, 4)]
    return np.array([image.TransformIndexToPhysicalPoint(index) for index in indices])


def point_errors(written: sitk.Transform, truth: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(np.subtract(written.TransformPoint(p.tolist()), truth.TransformPoint(p.tolist())))
                     for p in points])


def write_pair(tmp_path, truth: sitk.Transform) -> tuple[sitk.Image, sitk.Image]:
    fixed = phantom_image(**FIXED_GEOMETRY)
    moving = phantom_image(**MOVING_GEOMETRY, moved_by=truth)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(tmp_path / "moving.nrrd"))
    return fixed, moving


def written_field(output: Path, fixed: sitk.Image) -> np.ndarray:
    """The displacement of the run's transform.h5 at every voxel of ``fixed``, ``(Z, Y, X, 3)`` mm."""
    return sitk.GetArrayFromImage(sampled_field(sitk.ReadTransform(str(output / "transform.h5")), fixed))


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images lie on one grid, up to NIfTI's single-precision geometry."""
    return a.GetSize() == b.GetSize() and all(np.allclose(x, y, atol=1e-4) for x, y in (
        (a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection())))


def interior_rmse(a: sitk.Image, b: sitk.Image, margin: int = 5) -> float:
    region = (slice(margin, -margin),) * 3
    return float(np.sqrt(np.mean((sitk.GetArrayFromImage(a)[region] - sitk.GetArrayFromImage(b)[region]) ** 2)))


@pytest.mark.parametrize("affine", [False, True], ids=["deformable-only", "with-affine"])
def test_known_translation_is_recovered(tmp_path, affine):
    truth = sitk.TranslationTransform(3, (4.0, -3.0, 2.5))
    fixed, moving = write_pair(tmp_path, truth)
    summary = register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nrrd", tmp_path / "out",
                                           model="none", affine=affine, device="cpu", refine_steps=100))
    written = sitk.ReadTransform(str(tmp_path / "out" / "transform.h5"))
    errors = point_errors(written, truth, interior_points(fixed))
    assert np.median(errors) < 0.5 and np.percentile(errors, 95) < min(FIXED_GEOMETRY["spacing"])
    applied = sitk.Resample(moving, fixed, written, sitk.sitkLinear, 0.0)
    identity = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0)
    assert interior_rmse(applied, fixed) < 0.25 * interior_rmse(identity, fixed)
    assert summary["metrics"]["fraction_nonpositive"] == 0.0


def test_known_rotation_is_recovered_with_affine_initialisation(tmp_path):
    truth = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.12, -0.08, 0.1, (2.0, -1.5, 1.0))
    fixed, moving = write_pair(tmp_path, truth)
    summary = register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nrrd", tmp_path / "out",
                                           model="none", device="cpu", refine_steps=60))
    written = sitk.ReadTransform(str(tmp_path / "out" / "transform.h5"))
    errors = point_errors(written, truth, interior_points(fixed))
    assert np.percentile(errors, 95) < min(FIXED_GEOMETRY["spacing"])
    recovered = np.asarray(summary["affine"]["matrix"])
    assert np.allclose(recovered, np.asarray(truth.GetMatrix()).reshape(3, 3), atol=0.03)
    warped = sitk.ReadImage(str(tmp_path / "out" / "warped_moving.nii.gz"))
    assert warped.GetSize() == fixed.GetSize() and np.allclose(warped.GetDirection(), fixed.GetDirection())
    identity = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0)
    assert interior_rmse(warped, fixed) < 0.25 * interior_rmse(identity, fixed)


def test_outputs_summary_segmentations_and_landmarks(tmp_path):
    truth = sitk.TranslationTransform(3, (3.0, 2.0, -2.0))
    fixed, moving = write_pair(tmp_path, truth)
    sitk.WriteImage(phantom_labels(fixed), str(tmp_path / "fixed_seg.nii.gz"))
    sitk.WriteImage(phantom_labels(moving), str(tmp_path / "moving_seg.nii.gz"))
    landmarks = np.array([[0.0, 0.0, 0.0], [8.0, -6.0, 4.0], [-10.0, 5.0, -3.0]])
    # The moving file lists the same labelled points in another order: they are paired by label.
    moved = np.array([truth.TransformPoint(p.tolist()) for p in landmarks])
    write_landmarks_csv(landmarks, tmp_path / "fixed.csv", ["a", "b", "c"])
    write_landmarks_csv(moved[[2, 0, 1]], tmp_path / "moving.csv", ["c", "a", "b"])
    register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nrrd", tmp_path / "out",
                                 fixed_segmentation=tmp_path / "fixed_seg.nii.gz",
                                 moving_segmentation=tmp_path / "moving_seg.nii.gz",
                                 fixed_landmarks=tmp_path / "fixed.csv", moving_landmarks=tmp_path / "moving.csv",
                                 model="none", affine=False, device="cpu", refine_steps=80,
                                 extra_outputs=("jacobian", "displacement")))
    out = tmp_path / "out"
    expected = {"transform.h5", "displacement.nii", "warped_moving.nii.gz", "warped_moving_seg.nii.gz",
                "jacobian.nii", "summary.json"}
    assert {p.name for p in out.iterdir()} == expected
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    # Nearest-neighbour resampling between different grids caps Dice even for the true transform.
    true_warp = sitk.Resample(phantom_labels(moving), fixed, truth, sitk.sitkNearestNeighbor)
    ceiling = mean_dice(dice_per_label(sitk.GetArrayFromImage(phantom_labels(fixed)), sitk.GetArrayFromImage(true_warp)))
    assert metrics["mean_dice"] > ceiling - 0.03 and metrics["mean_dice"] > metrics["mean_dice_before"] + 0.1
    assert set(metrics["dice"]) == {"1", "2"} and set(metrics["hd95_mm"]) == {"1", "2"}
    assert metrics["tre_mm"] < 1.0 < metrics["tre_before_mm"]
    assert metrics["landmark_labels"] == ["a", "b", "c"] and metrics["tre_max_mm"] < 1.5
    np.testing.assert_allclose(metrics["tre_before_per_point_mm"], np.linalg.norm(moved - landmarks, axis=1))
    assert set(metrics["hd95_before_mm"]) == {"1", "2"} and metrics["mean_hd95_before_mm"] > metrics["mean_hd95_mm"]
    assert summary["memory"]["host_peak_mb"] > 0 and summary["seconds"]["register"] > 0
    assert "network_share" in summary and summary["network_share"] is None  # no network
    warped_seg = sitk.ReadImage(str(out / "warped_moving_seg.nii.gz"))
    assert warped_seg.GetPixelID() == sitk.sitkInt32
    assert set(np.unique(sitk.GetArrayFromImage(warped_seg))) <= {0, 1, 2}
    field = sitk.ReadImage(str(out / "displacement.nii"))
    written = sitk.DisplacementFieldTransform(sitk.ReadTransform(str(out / "transform.h5")))
    lattice = written.GetDisplacementField()
    assert field.GetNumberOfComponentsPerPixel() == 3 and same_grid(field, lattice)
    assert np.allclose(sitk.GetArrayFromImage(field), sitk.GetArrayFromImage(lattice), atol=1e-5)  # float32 copy
    assert same_grid(sitk.ReadImage(str(out / "jacobian.nii")), lattice)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    assert np.allclose(np.subtract(written.TransformPoint(centre), centre), truth.GetOffset(), atol=0.6)


def test_only_the_transform_and_warped_image_are_written_unless_more_is_asked(tmp_path):
    fixed, _ = write_pair(tmp_path, sitk.TranslationTransform(3, (2.0, 0.0, 0.0)))
    summary = register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nrrd", tmp_path / "out",
                                           model="none", device="cpu", refine_steps=5))
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"transform.h5", "warped_moving.nii.gz", "summary.json"}
    assert summary["files"] == ["transform.h5", "warped_moving.nii.gz", "summary.json"]
    assert 0.5 < summary["metrics"]["jacobian_min"] <= 1.0 <= summary["metrics"]["jacobian_max"] < 2.0
    with pytest.raises(InputError, match="--extra-outputs takes jacobian, displacement, not 'warp'"):
        register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nrrd", tmp_path / "out2",
                                     extra_outputs=("warp",)))


def test_the_write_stage_reports_progress_per_segment(tmp_path):
    """HD95 takes seconds per label on large images: the write stage reports each one (issue 13)."""
    fixed = phantom_image(**FIXED_GEOMETRY)
    labels = sitk.GetArrayFromImage(phantom_labels(fixed))
    stripes = (np.indices(labels.shape)[2] // 4 + 1) * (labels > 0)  # about 10 labels
    segmentation = sitk.GetImageFromArray(stripes.astype(np.int16))
    segmentation.CopyInformation(fixed)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(segmentation, str(tmp_path / "seg.nii.gz"))
    stream = io.StringIO()
    register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "fixed.nii.gz", tmp_path / "out",
                                 fixed_segmentation=tmp_path / "seg.nii.gz", moving_segmentation=tmp_path / "seg.nii.gz",
                                 model="none", refine_steps=2, device="cpu"), Progress("json", stream=stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    segment_events = [e for e in events if e["stage"] == "write" and "segment overlap" in e["message"]]
    assert len(segment_events) == 2 * len(np.unique(stripes[stripes > 0]))  # before and after, per label
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions)


def test_an_image_registered_to_itself_stays_where_it_is(tmp_path):
    """Issue 13: the zero background of a skull-stripped brain moved by up to 47 mm, pulled by the similarity's
    overlap weighting (the similarity now counts only where the fixed image has structure); Mattes MI's bias
    made the affine's determinant 0.994; and the network predicted up to 4.7 mm on the identical pair."""
    brain = str(SAMPLE_PAIR["fixed"])
    summary = register(RegistrationRequest(brain, brain, tmp_path / "out", device="cpu"))
    assert summary["affine"]["determinant"] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(summary["affine"]["translation_mm"], 0.0, atol=1e-9)
    assert summary["network_prediction"] == "rejected" and summary["network_share"] == 0.0
    field = written_field(tmp_path / "out", sitk.ReadImage(brain))
    assert float(np.linalg.norm(field, axis=-1).max()) < 0.05 * 2.0  # a twentieth of a 2 mm voxel (was 1.5 mm)


def test_a_phantom_registered_to_itself_moves_under_a_twentieth_of_a_voxel(tmp_path):
    """The optimisation from zero on an image and itself (anisotropic, rotated grid): every stage, the affine, the
    working grid, the optimisation and the written field, keeps the identity."""
    fixed = phantom_image(**FIXED_GEOMETRY)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "fixed.nii.gz", tmp_path / "out",
                                 model="none", device="cpu"))
    field = written_field(tmp_path / "out", fixed)
    assert float(np.linalg.norm(field, axis=-1).max()) < 0.05 * min(fixed.GetSpacing())  # mm


def test_structure_is_where_the_image_is_not_exactly_flat():
    image = torch.zeros(1, 1, 12, 12, 12)
    image[:, :, 4:8, 4:8, 4:8] = torch.rand(1, 1, 4, 4, 4) + 1.0
    mask = structured(image)
    assert mask[0, 0, 6, 6, 6] == 1 and mask[0, 0, 3, 6, 6] == 1  # inside, and one voxel out (its box sees it)
    assert mask[0, 0, 0, 0, 0] == 0 and mask[0, 0, 10, 6, 6] == 0  # flat zero background
