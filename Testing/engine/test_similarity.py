"""Similarity across contrasts: the auto rule, NGF's known answers, and known-warp cases in and across contrasts."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg.resources import SAMPLE_PAIR
from shmoareg.known_warps import brain_case, end_point_error, gm_bright, label_case, tissue_labels
from shmoareg.losses import image_gradient, ngf_per_voxel
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.similarity import choose_similarity, linearity
from torch_threads import one_torch_thread  # noqa: F401 (fixture)


IDENTITY = sitk.Transform(3, sitk.sitkIdentity)


@pytest.fixture(scope="module")
def t1() -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE_PAIR["fixed"]))


# --- the auto rule ----------------------------------------------------------------------------

def ramp() -> torch.Tensor:
    return torch.linspace(0, 1, 20 * 20 * 20).reshape(1, 1, 20, 20, 20)


@pytest.mark.parametrize("transfer, expected", [
    (lambda f: 2 * f + 1, "lncc"),  # one contrast
    (lambda f: 1 - f, "lncc"),  # inverted (T1 against T2): local NCC is squared, so still right
    (lambda f: (f - 0.5).square(), "mind"),  # non-monotonic: no linear relation at all
])
def test_auto_picks_by_how_linear_the_intensity_relation_is(transfer, expected):
    fixed = ramp()
    assert choose_similarity(fixed, transfer(fixed)) == expected


def test_linearity_known_values():
    fixed = ramp()
    assert linearity(fixed, 3 * fixed - 2) == pytest.approx(1.0, abs=1e-6)
    # A parabola over a symmetric range has r = 0: nothing of it is linear.
    assert linearity(fixed, (fixed - 0.5).square()) == pytest.approx(0.0, abs=1e-3)
    mask = torch.zeros_like(fixed)
    assert linearity(fixed, (fixed - 0.5).square(), mask) == 1.0  # too few voxels: keep local NCC


def test_the_non_monotonic_contrast_reorders_the_tissues(t1):
    labels = sitk.GetArrayFromImage(tissue_labels(t1))
    remapped = sitk.GetArrayFromImage(gm_bright(t1, tissue_labels(t1)))
    csf, grey, white = (remapped[labels == label].mean() for label in (1, 2, 3))
    assert grey > white > csf  # T1: white > grey > CSF


# --- NGF ----------------------------------------------------------------------------------------

def test_ngf_is_minus_one_on_aligned_edges_and_zero_on_crossing_or_flat_ones():
    z, y, x = torch.meshgrid(*(torch.arange(12.0) for _ in range(3)), indexing="ij")
    along_x, along_y = x[None, None] / 12, y[None, None] / 12
    aligned = ngf_per_voxel(3 * along_x + 1, image_gradient(along_x), 1e-6, 1e-6)
    crossing = ngf_per_voxel(along_y, image_gradient(along_x), 1e-6, 1e-6)
    flat = ngf_per_voxel(torch.zeros_like(along_x), image_gradient(along_x), 1e-6, 1e-6)
    assert torch.allclose(aligned, torch.full_like(aligned, -1.0), atol=1e-4)
    assert torch.allclose(crossing, torch.zeros_like(crossing), atol=1e-6)
    assert torch.allclose(flat, torch.zeros_like(flat))


# --- known-warp cases through register ------------------------------------------------------------

def test_the_true_field_has_no_end_point_error(t1):
    case = brain_case(t1, "gm-bright", seed=3)
    field = sitk.GetImageFromArray(case.displacement_mm, isVector=True)
    field.CopyInformation(case.fixed)
    assert end_point_error(case, sitk.DisplacementFieldTransform(field))["mean_mm"] < 1e-6
    magnitude = np.linalg.norm(case.displacement_mm, axis=-1)[case.foreground].mean()
    assert end_point_error(case, IDENTITY)["mean_mm"] == pytest.approx(magnitude)


def _register(case, folder, **options) -> tuple[dict, dict]:
    paths = case.write(folder)
    summary = register(RegistrationRequest(paths["fixed"], paths["moving"], folder / "out", device="cpu", **options))
    return summary, end_point_error(case, sitk.ReadTransform(str(folder / "out" / "transform.h5")))


@pytest.mark.parametrize("build, expected", [
    (lambda t1: brain_case(t1, "t1", seed=4), "lncc"),
    (lambda t1: brain_case(t1, "gm-bright", seed=4), "mind"),
    (lambda t1: label_case(seed=4, shape=(64, 64, 64), spacing=3.0), "mind"),
], ids=["same-contrast", "gm-bright", "ct-mr"])
def test_auto_choice_on_the_known_warp_cases(t1, tmp_path, build, expected):
    summary, _ = _register(build(t1), tmp_path, model="none", refine_steps=0)
    assert summary["method"]["similarity"] == expected
    assert summary["method"]["similarity_requested"] == "auto"


def test_a_different_contrast_is_registered_by_default_where_local_ncc_fails(t1, tmp_path):
    case = brain_case(t1, "gm-bright", seed=5)
    before = end_point_error(case, IDENTITY)["mean_mm"]
    _, automatic = _register(case, tmp_path / "auto", model="none")
    _, local_ncc = _register(case, tmp_path / "lncc", model="none", similarity="lncc")
    assert automatic["mean_mm"] < 0.8 * before
    assert local_ncc["mean_mm"] > before  # local NCC pulls the tissues the wrong way


def test_the_affine_stage_recovers_a_rigid_motion_across_contrasts(t1, tmp_path):
    """Mattes mutual information: a rotated and shifted copy in the non-monotonic contrast."""
    labels = tissue_labels(t1)
    source = gm_bright(sitk.Cast(t1, sitk.sitkFloat32), labels)
    centre = t1.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1.GetSize()])
    truth = sitk.Euler3DTransform(centre, 0.08, -0.05, 0.1, (6.0, -4.0, 3.0))  # fixed -> moving
    moving = sitk.Resample(source, t1, truth.GetInverse(), sitk.sitkLinear, 0.0)
    sitk.WriteImage(t1, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(tmp_path / "moving.nii.gz"))
    register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", tmp_path / "out",
                                 model="none", refine_steps=0, device="cpu"))
    written = sitk.ReadTransform(str(tmp_path / "out" / "transform.h5"))
    mask = sitk.GetArrayViewFromImage(labels) > 0
    points = [t1.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]])
              for index in np.argwhere(mask)[::997]]
    errors = [np.linalg.norm(np.subtract(written.TransformPoint(p), truth.TransformPoint(p))) for p in points]
    assert float(np.mean(errors)) < 1.0


def test_smoothness_trades_detail_for_regularity(t1, tmp_path):
    case = brain_case(t1, "t1", seed=6)
    rough, _ = _register(case, tmp_path / "rough", model="none", smoothness=0.25, refine_steps=30)
    smooth, _ = _register(case, tmp_path / "smooth", model="none", smoothness=4.0, refine_steps=30)
    assert smooth["metrics"]["sdlogj"] < 0.8 * rough["metrics"]["sdlogj"]
    assert smooth["method"]["smoothness"] == 4.0 and rough["method"]["settings"]["smoothness"] == 0.25
