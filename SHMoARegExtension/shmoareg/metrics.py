"""Registration quality metrics: overlap, surface distance, Jacobian statistics, landmark error.

Label arrays are numpy ``(Z, Y, X)`` as returned by ``SimpleITK.GetArrayFromImage``; spacings are
``(x, y, z)`` in millimetres as returned by ``Image.GetSpacing``. Points are physical LPS
millimetres, one per row.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from shmoareg.errors import InputError

JACOBIAN_LOG_FLOOR = 1e-9


def _check_same_shape(reference: np.ndarray, prediction: np.ndarray) -> None:
    if reference.shape != prediction.shape:
        raise InputError(
            f"label maps differ in shape ({reference.shape} vs {prediction.shape}); "
            "resample the prediction onto the reference grid first"
        )


def _default_labels(reference: np.ndarray, labels: list[int] | None) -> list[int]:
    if labels is not None:
        return [int(label) for label in labels]
    return [int(label) for label in np.unique(reference) if label != 0]


def _counts(values: np.ndarray) -> dict[int, int]:
    found, counts = np.unique(values, return_counts=True)
    return {int(label): int(count) for label, count in zip(found, counts)}


def dice_per_label(reference: np.ndarray, prediction: np.ndarray,
                   labels: list[int] | None = None) -> dict[int, float]:
    """Dice ``2|R∩P| / (|R|+|P|)`` per label.

    ``labels`` defaults to the nonzero labels of ``reference``. A label absent from both maps
    is left out; a label absent from only one scores 0.0.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    _check_same_shape(reference, prediction)
    reference_counts = _counts(reference)
    prediction_counts = _counts(prediction)
    overlap_counts = _counts(reference[reference == prediction])
    scores = {}
    for label in _default_labels(reference, labels):
        total = reference_counts.get(label, 0) + prediction_counts.get(label, 0)
        if total:
            scores[label] = 2.0 * overlap_counts.get(label, 0) / total
    return scores


def mean_dice(per_label: dict[int, float]) -> float:
    """Mean of the finite per-label scores; nan when there are none."""
    values = [value for value in per_label.values() if not math.isnan(value)]
    return float(np.mean(values)) if values else math.nan


def _check_spacing(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing {spacing} is invalid; give three positive (x, y, z) spacings in mm")
    return values


def _surface(mask: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """Border voxels of ``mask`` (those with a face neighbour outside it) as a binary image."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return sitk.BinaryContour(image, fullyConnected=False, backgroundValue=0, foregroundValue=1)


def _distance_to(surface: sitk.Image) -> np.ndarray:
    """Euclidean distance (mm) from every voxel to the nearest voxel of ``surface``.

    The signed map is zero on the set's own border and negative inside it; outside, the
    nearest voxel of the set is always a border voxel, so clipping at zero is exact.
    """
    signed = sitk.SignedMaurerDistanceMap(surface, insideIsPositive=False, squaredDistance=False,
                                          useImageSpacing=True, backgroundValue=0)
    return np.maximum(sitk.GetArrayFromImage(signed), 0.0)


def _crop_to_union(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their joint bounding box and pad it with one background voxel.

    The padding makes an object that touches the image edge have a surface there.
    """
    nonzero = np.nonzero(reference | prediction)
    box = tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in nonzero)
    return np.pad(reference[box], 1), np.pad(prediction[box], 1)


def _hd95(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float]) -> float:
    reference, prediction = _crop_to_union(reference, prediction)
    reference_surface, prediction_surface = _surface(reference, spacing), _surface(prediction, spacing)
    on_reference = sitk.GetArrayViewFromImage(reference_surface) > 0
    on_prediction = sitk.GetArrayViewFromImage(prediction_surface) > 0
    distances = np.concatenate((
        _distance_to(prediction_surface)[on_reference],
        _distance_to(reference_surface)[on_prediction],
    ))
    return float(np.percentile(distances, 95))


def hd95_per_label(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float],
                   labels: list[int] | None = None,
                   on_label: Optional[Callable[[float], None]] = None) -> dict[int, float]:
    """95th-percentile symmetric surface distance (mm) per label.

    The surface of a label is its border voxels (face connectivity; the image edge counts as
    outside). The distances from every reference surface voxel to the prediction surface and
    from every prediction surface voxel to the reference surface are pooled, and the 95th
    percentile of the pooled set is taken (numpy's linear interpolation). ``spacing`` is
    ``(x, y, z)``. ``labels`` defaults to the nonzero labels of ``reference``; a label absent
    from both maps is left out, a label absent from only one gives nan. ``on_label(fraction)`` is
    called after each label (it takes seconds per label on large images).
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    _check_same_shape(reference, prediction)
    if reference.ndim != 3:
        raise InputError(f"label maps are {reference.ndim}D; give 3D (Z, Y, X) arrays")
    spacing = _check_spacing(spacing)
    distances = {}
    chosen = _default_labels(reference, labels)
    for done, label in enumerate(chosen, start=1):
        in_reference, in_prediction = reference == label, prediction == label
        has_reference, has_prediction = bool(in_reference.any()), bool(in_prediction.any())
        if has_reference and has_prediction:
            distances[label] = _hd95(in_reference, in_prediction, spacing)
        elif has_reference or has_prediction:
            distances[label] = math.nan
        if on_label is not None:
            on_label(done / len(chosen))
    return distances


def jacobian_statistics(jacobian: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Folding and smoothness statistics of a Jacobian determinant map, over ``mask`` or all voxels.

    Returns ``fraction_nonpositive`` (share of voxels with J <= 0), ``sdlogj`` (population
    standard deviation of log J, with J clipped to at least 1e-9 so that folded voxels count as
    very small instead of undefined), ``jacobian_min``, ``jacobian_max`` and ``jacobian_mean``.
    ``mask`` must broadcast to the shape of ``jacobian``.
    """
    jacobian = np.asarray(jacobian, dtype=np.float64)
    if mask is not None:
        try:
            selected = np.broadcast_to(np.asarray(mask, dtype=bool), jacobian.shape)
        except ValueError:
            raise InputError(
                f"mask shape {np.shape(mask)} does not match the Jacobian shape {jacobian.shape}"
            ) from None
        jacobian = jacobian[selected]
    values = jacobian.ravel()
    if values.size == 0:
        raise InputError("no voxel to compute Jacobian statistics on: the mask or the field is empty")
    return {
        "fraction_nonpositive": float(np.mean(values <= 0)),
        "sdlogj": float(np.std(np.log(np.maximum(values, JACOBIAN_LOG_FLOOR)))),
        "jacobian_min": float(values.min()),
        "jacobian_max": float(values.max()),
        "jacobian_mean": float(values.mean()),
    }


def _as_points(points: np.ndarray, role: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"{role} points have shape {array.shape}; give an (N, 3) array of x, y, z")
    if not np.isfinite(array).all():
        raise InputError(f"{role} points contain NaN or infinite coordinates")
    return array


def target_registration_error(fixed_points: np.ndarray, moving_points: np.ndarray,
                              transform: sitk.Transform) -> np.ndarray:
    """Per-landmark error ``||T(f_i) - m_i||`` in mm.

    ``transform`` maps fixed-space points to moving space (the resampling convention), points
    are corresponding physical LPS coordinates, row ``i`` of each array being the same landmark.
    """
    fixed = _as_points(fixed_points, "fixed")
    moving = _as_points(moving_points, "moving")
    if len(fixed) != len(moving):
        raise InputError(
            f"{len(fixed)} fixed landmarks but {len(moving)} moving landmarks; give corresponding pairs"
        )
    if len(fixed) == 0:
        raise InputError("no landmarks given; give at least one pair of corresponding points")
    mapped = np.array([transform.TransformPoint(tuple(point)) for point in fixed], dtype=np.float64)
    return np.linalg.norm(mapped - moving, axis=1)
