"""Classical affine initialisation with SimpleITK: centre of mass (moments), a rotation search, then affine on
Mattes MI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.grid import Grid, network_grid, resample

AFFINE_SPACING_MM = 4.0
# Voxels per axis the affine stage's coarse copies keep at least (its coarser level halves them, and ITK's
# Gaussian smoothing needs 4): small images are registered on a finer grid than AFFINE_SPACING_MM.
MIN_AFFINE_VOXELS = 8
MIN_OVERLAP = 0.05
ALIGNED_CORRELATION = 0.999
# The rotation search: Euler angles on a grid of ROTATION_STEPS steps of ROTATION_STEP_DEGREES each way about
# every axis (5 x 5 x 5 starts, up to 20 degrees), scored by Mattes MI on the coarse level. Native-space brains
# differ by up to ~30 degrees; gradient descent from the moments alone fell into a wrong optimum on two of the
# ten real-brain validation pairs (benchmarks/README.md, "Affine, second pass").
ROTATION_STEPS = 2
ROTATION_STEP_DEGREES = 10.0
HISTOGRAM_BINS = 32
SAMPLING_SEED = 7


@dataclass(frozen=True)
class _Level:
    """One gradient-descent level of the affine: pyramid shrink factor (of the 4 mm copies), smoothing sigma (mm),
    voxels sampled (at most; all of a smaller level), iterations and first step (in mm of physical shift)."""

    shrink: int
    sigma_mm: float
    samples: int
    iterations: int
    learning_rate: float


# 8 mm from the rotation search's optimum, then a short polish at 4 mm from there. Chosen on the real-brain
# validation pairs against the former two levels of 100 iterations on half the voxels (affine-only Dice
# 0.383 -> 0.397, 3.9 -> 0.6 s; benchmarks/affine_rings.py, benchmarks/README.md "Affine, second pass"). Sample
# counts, not shares, so a run costs the same at any image size: on a 1 mm brain they are a quarter of the 8 mm
# and a tenth of the 4 mm voxels.
LEVELS = (_Level(2, 1.0, 6000, 100, 1.0), _Level(1, 0.0, 18000, 10, 0.25))
SEARCH_SAMPLES = 6000


def affine_spacing(*images: sitk.Image) -> float:
    """The affine stage's grid spacing: ``AFFINE_SPACING_MM``, finer when an image is too small for it."""
    extents = [size * spacing for image in images for size, spacing in zip(image.GetSize(), image.GetSpacing())]
    return min(AFFINE_SPACING_MM, min(extents) / MIN_AFFINE_VOXELS)


def _downsampled(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` on an isotropic ``spacing`` mm grid: averaged over whole blocks of voxels no wider than that (ITK's
    bin shrink, so smoothing runs on the small copy), smoothed (sigma spacing/2) and resampled."""
    factors = [max(1, int(spacing / voxel + 1e-6)) for voxel in image.GetSpacing()]
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.BinShrink(image, factors), spacing / 2.0)
    return resample(smoothed, network_grid(image, spacing, multiple=1))


def _mattes(fixed: sitk.Image, samples: int, shrink: int, sigma_mm: float) -> sitk.ImageRegistrationMethod:
    """A one-level registration on Mattes MI, regular sampling of at most ``samples`` voxels of ``fixed``'s level
    (fixed seed), linear interpolation."""
    voxels = np.prod([max(1, size // shrink) for size in fixed.GetSize()])
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(min(1.0, samples / voxels), seed=SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([shrink])
    method.SetSmoothingSigmasPerLevel([sigma_mm])
    return method


def _best_rotation(fixed: sitk.Image, moving: sitk.Image, start: sitk.Transform) -> sitk.Transform:
    """The rotation about ``start``'s centre, on the search grid, whose Mattes MI on the coarse level is best."""
    rotation = sitk.Euler3DTransform()
    rotation.SetCenter(start.GetCenter())
    rotation.SetTranslation(start.GetTranslation())
    method = _mattes(fixed, SEARCH_SAMPLES, LEVELS[0].shrink, 0.0)
    method.SetOptimizerAsExhaustive([ROTATION_STEPS] * 3 + [0] * 3)
    method.SetOptimizerScales([math.radians(ROTATION_STEP_DEGREES)] * 3 + [1.0] * 3)
    method.SetInitialTransform(rotation, inPlace=False)
    return method.Execute(fixed, moving)


def _descend(fixed: sitk.Image, moving: sitk.Image, start: sitk.Transform, level: _Level,
             on_iteration: Callable[[], None]) -> sitk.AffineTransform:
    """Affine gradient descent (regular steps, scales from physical shift) on one level, from ``start``."""
    method = _mattes(fixed, level.samples, level.shrink, level.sigma_mm)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=level.learning_rate, minStep=1e-3, numberOfIterations=level.iterations, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(as_affine(start), inPlace=False)
    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    return as_affine(method.Execute(fixed, moving))


def initialise_affine(fixed: sitk.Image, moving: sitk.Image,
                      on_iteration: Optional[Callable[[float], None]] = None) -> sitk.AffineTransform:
    """Affine transform mapping fixed-space points to moving-space points (resampling convention).

    Runs on copies averaged and smoothed to about 4 mm (finer for small images, see :func:`affine_spacing`):
    centres of mass aligned, the best rotation of a grid of starts (:func:`_best_rotation`), then Mattes mutual
    information (multi-modal safe, fixed sampling seed) at 8 mm and briefly at 4 mm (``LEVELS``).
    """
    spacing = affine_spacing(fixed, moving)
    fixed_small = _downsampled(fixed, spacing)
    moving_small = _downsampled(moving, spacing)
    initial = sitk.CenteredTransformInitializer(
        fixed_small, moving_small, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    total = sum(level.iterations for level in LEVELS)
    count = [0]

    def report() -> None:
        count[0] += 1
        if on_iteration is not None:
            on_iteration(min(count[0] / total, 1.0))

    try:
        result: sitk.Transform = _best_rotation(fixed_small, moving_small, initial)
        for level in LEVELS:
            result = _descend(fixed_small, moving_small, result, level, report)
    except RuntimeError as error:
        if "outside" in str(error).lower() or "samples" in str(error).lower():
            raise InputError("the fixed and moving images do not overlap after initialisation; "
                             "check that they show the same body part") from None
        raise
    return as_affine(_unless_aligned(initial, result, fixed_small, moving_small))


def _unless_aligned(initial: sitk.Transform, optimised: sitk.Transform, fixed: sitk.Image,
                    moving: sitk.Image) -> sitk.Transform:
    """``optimised``, unless the pair is already aligned at ``initial`` (an image and itself, or a copy).

    Mattes MI's Parzen windowing puts its optimum about 0.2 % off the true scale (on MNI152 with 32 bins,
    determinant 0.994 for an image against itself), so an aligned pair would be pulled off. Aligned means
    a correlation of at least ``ALIGNED_CORRELATION`` between the fixed and the moving image at ``initial``.
    """
    metric = sitk.ImageRegistrationMethod()
    metric.SetMetricAsCorrelation()  # minus the normalised cross-correlation
    metric.SetMetricSamplingStrategy(metric.NONE)
    metric.SetInterpolator(sitk.sitkLinear)
    metric.SetInitialTransform(initial, inPlace=False)
    return initial if -metric.MetricEvaluate(fixed, moving) >= ALIGNED_CORRELATION else optimised


def as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """One AffineTransform equal to a linear ``transform`` (a composite too), fitted on four points."""
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float) * 100.0
    mapped = np.array([transform.TransformPoint(p.tolist()) for p in points])
    matrix = ((mapped[1:] - mapped[0]) / 100.0).T
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(mapped[0].tolist())
    return affine


def check_overlap(fixed_mask: sitk.Image, moving_mask: sitk.Image, transform: sitk.Transform) -> float:
    """Overlap of the fixed foreground with the moving foreground pulled through ``transform``.

    Returns the Dice-like overlap; raises :class:`InputError` when it is below 5 %.
    """
    warped = resample(moving_mask, Grid.of(fixed_mask), transform, sitk.sitkNearestNeighbor)
    a = sitk.GetArrayViewFromImage(fixed_mask) > 0
    b = sitk.GetArrayViewFromImage(warped) > 0
    denominator = a.sum() + b.sum()
    overlap = float(2.0 * np.logical_and(a, b).sum() / denominator) if denominator else 0.0
    if overlap < MIN_OVERLAP:
        raise InputError(
            f"the fixed and moving images barely overlap after initialisation (overlap {overlap:.1%}); "
            "check that they show the same body part, or turn on affine initialisation (--affine)")
    return overlap


def describe(transform: sitk.AffineTransform) -> dict:
    """JSON-friendly description of an affine transform (LPS, fixed -> moving points)."""
    return {
        "matrix": [list(row) for row in np.asarray(transform.GetMatrix()).reshape(3, 3)],
        "translation_mm": list(transform.GetTranslation()),
        "center_mm": list(transform.GetCenter()),
        "determinant": float(np.linalg.det(np.asarray(transform.GetMatrix()).reshape(3, 3))),
    }
