"""Known-deformation cases within and across contrasts, and the end-point error against their truth.

Three kinds of case, each a fixed image and a moving image related by a known smooth
diffeomorphic field ``u`` (resampling convention: ``moving(p + u(p))`` shows what ``fixed(p)``
shows), with label maps for Dice:

* ``brain_case(t1, "t1", ...)``: a T1 brain, warped, against itself (same contrast);
* ``brain_case(t1, "gm-bright", ...)``: a T1 brain, warped, against a non-monotonic remap of itself
  (grey matter brighter than white matter, CSF dark): another MR contrast of the same anatomy;
* ``label_case(...)``: a CT-like image (Hounsfield units: air, soft tissue of nearly one
  density, bone) against an MR-like one rendered from the same random label map, warped.

Labels of a brain are a 3-class tissue proxy (CSF / GM / WM by Otsu thresholds over the
nonzero, skull-stripped voxels), not a manual segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.fields import physical_from_voxel, sampled_field
from shmoareg.grid import Grid
from shmoareg.spatial import warp, warp_labels
from shmoareg.synthetic import random_label_map, random_smooth_field

TISSUE_CLASSES = 3
BRAIN_CONTRASTS = ("t1", "gm-bright")
# Intensity of CSF, grey and white matter in the "gm-bright" contrast, relative to its brightest tissue.
GM_BRIGHT_LEVELS = (0.35, 1.0, 0.55)
CONTROL_SPACING_MM = 16.0
CT_AIR_HU = -1000.0
CT_NOISE_HU = 15.0
MR_NOISE = 0.03
PARTIAL_VOLUME_SIGMA_MM = 0.7


@dataclass
class KnownWarpCase:
    """A fixed/moving pair on one grid with its true physical displacement (LPS mm, ``(Z, Y, X, 3)``)."""

    name: str
    contrast: str  # "same" or "cross"
    fixed: sitk.Image
    moving: sitk.Image
    fixed_labels: sitk.Image
    moving_labels: sitk.Image
    displacement_mm: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        """Where the error is measured: the fixed labels' nonzero voxels."""
        return sitk.GetArrayViewFromImage(self.fixed_labels) > 0

    def write(self, folder: Path) -> dict[str, str]:
        """Write the images and label maps as NIfTI into ``folder`` (created); returns role -> path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for role in ("fixed", "moving", "fixed_labels", "moving_labels"):
            paths[role] = str(folder / f"{role}.nii.gz")
            sitk.WriteImage(getattr(self, role), paths[role])
        return paths


def brain_mask(image: sitk.Image) -> sitk.Image:
    """Nonzero voxels of a skull-stripped image, holes filled."""
    return sitk.BinaryFillhole(sitk.Cast(image > 0, sitk.sitkUInt8))


def tissue_labels(image: sitk.Image) -> sitk.Image:
    """Proxy labels 1..3 (dark to bright: CSF, GM, WM) from Otsu thresholds over the brain voxels."""
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = sitk.GetArrayFromImage(brain_mask(image)).astype(bool)
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(TISSUE_CLASSES - 1)
    otsu.SetNumberOfHistogramBins(128)
    otsu.Execute(sitk.GetImageFromArray(values[inside].reshape(1, 1, -1)))
    labels = (np.digitize(values, otsu.GetThresholds()) + 1) * inside
    return _like(labels.astype(np.int16), image)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))[None, None]


def gm_bright(t1: sitk.Image, labels: sitk.Image) -> sitk.Image:
    """A non-monotonic remap of a T1 brain: CSF dark, grey matter brightest, white matter between.

    Piecewise linear through the tissue classes' mean intensities; the background stays 0.
    """
    values = sitk.GetArrayFromImage(t1).astype(np.float32)
    classes = sitk.GetArrayViewFromImage(labels)
    means = [float(values[classes == label].mean()) for label in range(1, TISSUE_CLASSES + 1)]
    top = float(values.max())
    remapped = np.interp(values, [0.0, *means, top], [0.0, *GM_BRIGHT_LEVELS, GM_BRIGHT_LEVELS[-1]]) * top
    return _like(remapped.astype(np.float32), t1)


def _field(shape: tuple[int, int, int], spacing: float, max_displacement_mm: float, seed: int) -> torch.Tensor:
    return random_smooth_field(shape, max_displacement_mm / spacing, seed=seed,
                               control_spacing=CONTROL_SPACING_MM / spacing)


def brain_case(t1: sitk.Image, contrast: str, seed: int, max_displacement_mm: float = 8.0) -> KnownWarpCase:
    """``t1`` warped by a seeded field (fixed) against ``t1`` in ``contrast`` (``t1`` or ``gm-bright``, moving).

    The warped image is the fixed one, so that the field is exactly the fixed-to-moving displacement.
    """
    if contrast not in BRAIN_CONTRASTS:
        raise ValueError(f"contrast must be one of {', '.join(BRAIN_CONTRASTS)}, not {contrast!r}")
    t1 = sitk.Cast(t1, sitk.sitkFloat32)
    labels = tissue_labels(t1)
    moving = t1 if contrast == "t1" else gm_bright(t1, labels)
    field = _field(t1.GetSize()[::-1], t1.GetSpacing()[0], max_displacement_mm, seed)
    fixed = warp(_tensor(sitk.GetArrayFromImage(t1)), field, padding_mode="zeros")[0, 0].numpy()
    fixed_labels = warp_labels(_tensor(sitk.GetArrayFromImage(labels)).long(), field, method="nearest")
    return KnownWarpCase(f"brain-{contrast}-{seed}", "same" if contrast == "t1" else "cross", _like(fixed, t1),
                         moving, _like(fixed_labels[0, 0].numpy().astype(np.int16), t1), labels,
                         physical_from_voxel(field, Grid.of(t1)))


def _render(labels: np.ndarray, means: np.ndarray, noise: float, seed: int, reference: sitk.Image) -> sitk.Image:
    """Per-label means plus Gaussian noise, blurred a little (partial volume)."""
    generator = np.random.default_rng(seed)
    image = _like((means[labels] + noise * generator.standard_normal(labels.shape)).astype(np.float32), reference)
    return sitk.SmoothingRecursiveGaussian(image, PARTIAL_VOLUME_SIGMA_MM)


def ct_densities(num_labels: int, generator: np.random.Generator) -> np.ndarray:
    """Hounsfield units per label: air outside, one fat label, two bone labels, soft tissue of 20-70 HU."""
    densities = generator.uniform(20.0, 70.0, num_labels)
    densities[0] = CT_AIR_HU
    densities[1] = -100.0
    densities[2:4] = generator.uniform(700.0, 1200.0, 2)
    return densities


def label_case(seed: int, shape: tuple[int, int, int] = (96, 96, 96), spacing: float = 2.0,
               num_labels: int = 12, max_displacement_mm: float = 8.0) -> KnownWarpCase:
    """CT-like fixed and MR-like moving image from one random label map (moving), warped by a seeded field."""
    generator = np.random.default_rng(seed)
    moving_labels = random_label_map(shape, num_labels, seed=seed, feature_size=16.0 / spacing)
    field = _field(shape, spacing, max_displacement_mm, seed + 1)
    fixed_labels = warp_labels(moving_labels, field)[0, 0].numpy()
    reference = sitk.Image([int(n) for n in shape[::-1]], sitk.sitkFloat32)
    reference.SetSpacing((spacing,) * 3)
    mr_means = generator.uniform(0.1, 1.0, num_labels)
    mr_means[0] = 0.0
    fixed = _render(fixed_labels, ct_densities(num_labels, generator), CT_NOISE_HU, seed + 2, reference)
    moving = _render(moving_labels[0, 0].numpy(), mr_means, MR_NOISE, seed + 3, reference)
    return KnownWarpCase(f"ct-mr-{seed}", "cross", fixed, moving, _like(fixed_labels.astype(np.int16), reference),
                         _like(moving_labels[0, 0].numpy().astype(np.int16), reference),
                         physical_from_voxel(field, Grid.of(reference)))


def error_map(case: KnownWarpCase, transform: sitk.Transform) -> np.ndarray:
    """``|T(p) - (p + u(p))|`` (mm) at every voxel of the fixed grid: the true end-point error of ``transform``."""
    field = sitk.GetArrayFromImage(sampled_field(transform, case.fixed))
    return np.linalg.norm(field - case.displacement_mm, axis=-1)


def end_point_error(case: KnownWarpCase, transform: sitk.Transform) -> dict[str, float]:
    """Mean, median and 95th percentile of ``|T(p) - (p + u(p))|`` (mm) over the case's foreground."""
    error = error_map(case, transform)[case.foreground]
    return {"mean_mm": float(error.mean()), "median_mm": float(np.median(error)),
            "p95_mm": float(np.percentile(error, 95))}
