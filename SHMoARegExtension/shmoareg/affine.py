"""Affine initialisation: centre of mass (moments, SimpleITK), then mutual information maximised in torch."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg.errors import InputError
from shmoareg.grid import Grid, resample
from shmoareg.optimise import Adam

# Voxels per axis the affine stage's coarse copies keep at least (its coarser level halves them, and ITK's
# Gaussian smoothing needs 4): small images are registered on a finer grid than the settings' spacing.
MIN_AFFINE_VOXELS = 8
MIN_OVERLAP = 0.05
ALIGNED_CORRELATION = 0.999


@dataclass(frozen=True)
class AffineSettings:
    """How the affine stage registers: the coarse copies' spacing (mm), its levels (shrink factors of the coarse
    copies, coarsest first) and the Adam steps on each, the fixed points sampled per level, the histogram bins of
    the mutual information, and Adam's first step sizes (matrix entries, translation in mm; each step 3 % smaller)."""

    spacing_mm: float = 4.0
    shrink_factors: tuple[int, ...] = (2, 1)
    iterations: tuple[int, ...] = (90, 60)
    samples: int = 8000
    bins: int = 32
    matrix_step: float = 0.01
    translation_step_mm: float = 1.0


# Each Adam step is this much smaller than the one before; intensities are scaled to [0, 1] between these
# percentiles for the histograms; the histograms' kernel spans this many bins each side.
STEP_DECAY = 0.97
INTENSITY_PERCENTILES = (0.01, 0.99)
KERNEL_HALF_WIDTH_BINS = 1.5
SAMPLING_SEED = 7


def affine_spacing(settings: AffineSettings, *images: sitk.Image) -> float:
    """The affine stage's grid spacing: the settings', finer when an image is too small for it."""
    extents = [size * spacing for image in images for size, spacing in zip(image.GetSize(), image.GetSpacing())]
    return min(settings.spacing_mm, min(extents) / MIN_AFFINE_VOXELS)


def _downsampled(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` averaged down to about ``spacing`` (whole voxels per axis: ``BinShrink``, a box average, costs a
    hundredth of a Gaussian on the full grid), then smoothed with what the box left of a Gaussian of ``spacing / 2``."""
    factors = [max(1, int(round(spacing / step))) for step in image.GetSpacing()]
    shrunk = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), factors) if max(factors) > 1 else image
    # A box of width w has the variance of a Gaussian of sigma w / sqrt(12); add what is missing of spacing / 2.
    box_sigma = max(f * step for f, step in zip(factors, image.GetSpacing())) / math.sqrt(12.0)
    sigma = math.sqrt(max((spacing / 2.0) ** 2 - box_sigma ** 2, 0.0))
    return sitk.SmoothingRecursiveGaussian(shrunk, sigma) if sigma > 0 else sitk.Cast(shrunk, sitk.sitkFloat32)


def initialise_affine(fixed: sitk.Image, moving: sitk.Image, settings: AffineSettings = AffineSettings(),
                      on_iteration: Optional[Callable[[float], None]] = None,
                      device: torch.device | str = "cpu") -> sitk.AffineTransform:
    """Affine transform mapping fixed-space points to moving-space points (resampling convention).

    Centre of mass (moments) first, then the 12 parameters maximise the mutual information (multi-modal safe) of
    a fixed random sample of the fixed image's points and the moving image there, by Adam in torch on ``device``,
    on copies averaged down to about ``settings.spacing_mm`` (finer for small images, see :func:`affine_spacing`)
    and coarser by each of ``settings.shrink_factors`` in turn: a fraction of a second on a CPU.
    """
    spacing = affine_spacing(settings, fixed, moving)
    fixed_small = _downsampled(fixed, spacing)
    moving_small = _downsampled(moving, spacing)
    initial = sitk.AffineTransform(sitk.CenteredTransformInitializer(
        fixed_small, moving_small, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS))
    matrix = torch.tensor(initial.GetMatrix(), dtype=torch.float64).reshape(3, 3)
    translation = torch.tensor(initial.GetTranslation(), dtype=torch.float64)
    total, done = sum(settings.iterations), [0]

    def step() -> None:
        done[0] += 1
        if on_iteration is not None:
            on_iteration(min(done[0] / total, 1.0))

    with _one_cpu_thread(torch.device(device)):
        for shrink, iterations in zip(settings.shrink_factors, settings.iterations):
            level = [sitk.BinShrink(image, [shrink] * 3) if shrink > 1 else image
                     for image in (fixed_small, moving_small)]
            matrix, translation = _fit_level(*level, matrix, translation, initial.GetCenter(), iterations, settings,
                                             torch.device(device), step)
    optimised = sitk.AffineTransform(matrix.numpy().ravel().tolist(), translation.numpy().tolist(), initial.GetCenter())
    return as_affine(_unless_aligned(initial, optimised, fixed_small, moving_small))


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """torch on one thread for the block, on a CPU: its tensors are small, and torch's threads spinning beside the
    stage's other threads (the normalisation runs alongside) made it ten times slower on two cores."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_level(fixed: sitk.Image, moving: sitk.Image, matrix: torch.Tensor, translation: torch.Tensor,
               centre: tuple[float, ...], iterations: int, settings: AffineSettings, device: torch.device,
               on_step: Callable[[], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on the affine's matrix and translation (about ``centre``) for one level; returns them (float64, CPU)."""
    fixed_values = torch.from_numpy(sitk.GetArrayFromImage(fixed)).to(device).flatten()
    generator = torch.Generator().manual_seed(SAMPLING_SEED)
    chosen = torch.randperm(fixed_values.numel(), generator=generator)[:settings.samples]
    zyx = np.stack(np.unravel_index(chosen.numpy(), fixed.GetSize()[::-1]), axis=1)
    points = torch.from_numpy(_index_to_physical(fixed, zyx[:, ::-1].astype(np.float64))).float().to(device)
    fixed_bins = _bin_weights(_scaled(fixed_values)[chosen.to(device)], settings.bins)
    moving_image = torch.from_numpy(sitk.GetArrayFromImage(moving)).to(device)
    low, high = _percentiles(moving_image.flatten())
    to_index = torch.from_numpy(np.linalg.inv(_index_matrix(moving))).float().to(device)
    moving_origin = torch.tensor(moving.GetOrigin(), dtype=torch.float32, device=device)
    last_index = torch.tensor(moving.GetSize(), dtype=torch.float32, device=device) - 1
    centre_t = torch.tensor(centre, dtype=torch.float32, device=device)
    parameters = [matrix.float().to(device).requires_grad_(), translation.float().to(device).requires_grad_()]
    optimisers = [Adam(parameters[0], settings.matrix_step), Adam(parameters[1], settings.translation_step_mm)]
    for _ in range(iterations):
        mapped = (points - centre_t) @ parameters[0].T + centre_t + parameters[1]
        index = (mapped - moving_origin) @ to_index.T
        inside = ((index >= 0) & (index <= last_index)).all(dim=1)
        if not bool(inside.any()):
            raise InputError("the fixed and moving images do not overlap after initialisation; "
                             "check that they show the same body part")
        grid = (index / last_index.clamp(min=1) * 2 - 1)[None, None, None]
        sampled = F.grid_sample(moving_image[None, None], grid, align_corners=True)[0, 0, 0, 0]
        moving_bins, moving_weights = _bin_weights(((sampled - low) / (high - low)).clamp(0, 1), settings.bins)
        loss = -_mutual_information(fixed_bins, (moving_bins, moving_weights * inside[:, None]), settings.bins)
        loss.backward()
        for optimiser in optimisers:
            optimiser.step()
            optimiser.learning_rate *= STEP_DECAY
        on_step()
    return parameters[0].detach().double().cpu(), parameters[1].detach().double().cpu()


def _index_matrix(image: sitk.Image) -> np.ndarray:
    """Index (x, y, z) to physical offset: direction times spacing."""
    return np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())


def _index_to_physical(image: sitk.Image, indices: np.ndarray) -> np.ndarray:
    """Physical points of continuous indices ``(N, 3)`` (x, y, z) of ``image``."""
    return np.asarray(image.GetOrigin()) + indices @ _index_matrix(image).T


def _percentiles(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The intensities at ``INTENSITY_PERCENTILES`` (an empty range widened to 1)."""
    low, high = torch.quantile(values.float(), torch.tensor(INTENSITY_PERCENTILES, device=values.device))
    return low, torch.maximum(high, low + 1e-6)


def _scaled(values: torch.Tensor) -> torch.Tensor:
    """``values`` mapped to [0, 1] between their percentiles."""
    low, high = _percentiles(values)
    return ((values - low) / (high - low)).clamp(0, 1)


def _bin_weights(values: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each value's histogram bins and weights, ``(N, 4)`` each: a triangle ``KERNEL_HALF_WIDTH_BINS`` bins wide
    each side touches at most 4 bins (kept sparse: the dense ``(N, bins)`` form took twice the time)."""
    position = values * (bins - 1)
    candidates = torch.floor(position).long()[:, None] + torch.arange(-1, 3, device=values.device)
    weights = (1 - (position[:, None] - candidates).abs() / KERNEL_HALF_WIDTH_BINS).clamp(min=0)
    weights = weights * ((candidates >= 0) & (candidates < bins))
    return candidates.clamp(0, bins - 1), weights


def _mutual_information(fixed: tuple[torch.Tensor, torch.Tensor], moving: tuple[torch.Tensor, torch.Tensor],
                        bins: int) -> torch.Tensor:
    """Mutual information of the joint histogram of two samples' bins and weights (:func:`_bin_weights`)."""
    (fixed_bins, fixed_weights), (moving_bins, moving_weights) = fixed, moving
    cells = (fixed_bins[:, :, None] * bins + moving_bins[:, None, :]).flatten()
    joint = torch.zeros(bins * bins, dtype=moving_weights.dtype, device=moving_weights.device).index_add(
        0, cells, (fixed_weights[:, :, None] * moving_weights[:, None, :]).flatten()).reshape(bins, bins)
    joint = joint / joint.sum().clamp(min=1e-12)
    marginals = joint.sum(dim=1, keepdim=True) @ joint.sum(dim=0, keepdim=True)
    return (joint * (torch.log(joint + 1e-10) - torch.log(marginals + 1e-10))).sum()


def _unless_aligned(initial: sitk.Transform, optimised: sitk.Transform, fixed: sitk.Image,
                    moving: sitk.Image) -> sitk.Transform:
    """``optimised``, unless the pair is already aligned at ``initial`` (an image and itself, or a copy).

    Mutual information's Parzen windowing puts its optimum slightly off the true scale (Mattes MI on MNI152 with 32
    bins: determinant 0.994 for an image against itself), so an aligned pair would be pulled off. Aligned means
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
