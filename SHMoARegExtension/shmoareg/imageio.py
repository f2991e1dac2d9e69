"""Image and label-map I/O through SimpleITK (NIfTI, NRRD, MHA), with input validation.

Every image keeps its origin, spacing and direction. Label maps are returned as integer
images. Every problem with an input raises :class:`InputError` with a one-line message.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from shmoareg.errors import InputError, require_file
from shmoareg.nifti_check import check_nifti, is_nifti_name

LABEL_PIXEL_TYPE = sitk.sitkInt32
# ITK's Gaussian smoothing (affine stage) needs 4 voxels along every axis.
MIN_VOXELS_PER_AXIS = 4
# Direction matrices must be orthonormal to this tolerance (NIfTI and the outputs cannot hold anything else).
ORTHONORMAL_TOLERANCE = 1e-4
GEOMETRY_TOLERANCE = 1e-4


def _read(path: str | os.PathLike, role: str) -> sitk.Image:
    path = require_file(path, role)
    if is_nifti_name(path):
        check_nifti(path, role)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            f"cannot read {role} file {path}: not a readable NIfTI, NRRD or MHA image ({_itk_reason(error)[:120]})"
        ) from None


def _itk_reason(error: RuntimeError) -> str:
    """The sentence of an ITK exception that says what is wrong (its last line is often a matrix row)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "ITK ERROR:" in line:
            return line.split("): ", 1)[-1].split(". ")[0].rstrip(".")
    return lines[-1] if lines else "unknown reason"


def _check_scalar_3d(image: sitk.Image, role: str, path: str | os.PathLike) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{role} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "give a scalar (grey-level) 3D image"
        )
    if image.GetDimension() != 3:
        raise InputError(f"{role} {path} is {image.GetDimension()}D; give a 3D volume")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
        raise InputError(f"{role} {path} has a direction matrix whose axes are not perpendicular unit vectors "
                         "(sheared or scaled); resample it onto an orthonormal grid first")
    if min(image.GetSize()) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{role} {path} has size {image.GetSize()}; every axis needs at least "
                         f"{MIN_VOXELS_PER_AXIS} voxels")


def read_image(path: str | os.PathLike, role: str = "image") -> sitk.Image:
    """Read a scalar 3D intensity image as float32, rejecting empty, constant and NaN/Inf images."""
    image = _read(path, role)
    _check_scalar_3d(image, role, path)
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        count = int((~np.isfinite(values)).sum())
        raise InputError(f"{role} {path} has {count} NaN or infinite voxels; fix or mask them first")
    if values.min() == values.max():
        raise InputError(
            f"{role} {path} is constant (every voxel is {float(values.min()):g}); give an image with content"
        )
    return image


def read_label_map(path: str | os.PathLike, role: str = "segmentation") -> sitk.Image:
    """Read a 3D label map as a 32-bit integer image; fractional or NaN values are refused."""
    image = _read(path, role)
    _check_scalar_3d(image, role, path)
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InputError(f"{role} {path} has NaN or infinite voxels; a label map holds integers")
        if not np.array_equal(values, np.round(values)):
            raise InputError(f"{role} {path} has non-integer values; give a label map (integer labels)")
    if values.min() < 0:
        raise InputError(f"{role} {path} has negative labels; labels must be 0 (background) or positive")
    if values.max() > np.iinfo(np.int32).max:
        raise InputError(f"{role} {path} has label {values.max()}, above the largest label kept exactly "
                         f"({np.iinfo(np.int32).max}); renumber the labels")
    if values.max() == 0:
        raise InputError(f"{role} {path} is empty (no labelled voxel); give a non-empty segmentation or none")
    return sitk.Cast(image, LABEL_PIXEL_TYPE)


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
    """True when two images share size, spacing, origin and direction (within ``tolerance``)."""
    if a.GetSize() != b.GetSize():
        return False
    spacing_ok = np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tolerance, atol=tolerance)
    scale = max(max(a.GetSpacing()), 1.0)
    origin_ok = np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * scale * 10)
    direction_ok = np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    return bool(spacing_ok and origin_ok and direction_ok)


def check_label_grid(label: sitk.Image, image: sitk.Image, label_role: str, image_role: str) -> None:
    """Raise :class:`InputError` unless ``label`` lies on exactly the grid of ``image``."""
    if not same_grid(label, image):
        raise InputError(
            f"{label_role} grid (size {label.GetSize()}, spacing {_fmt(label.GetSpacing())}, origin "
            f"{_fmt(label.GetOrigin())}) does not match the {image_role} grid (size {image.GetSize()}, "
            f"spacing {_fmt(image.GetSpacing())}, origin {_fmt(image.GetOrigin())}); resample it onto "
            f"the {image_role} first"
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image with SimpleITK, creating the parent folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), compress)


def write_transform(transform: sitk.Transform, path: str | os.PathLike) -> None:
    """Write a transform with SimpleITK (HDF5 for ``.h5``)."""
    sitk.WriteTransform(transform, str(path))


@contextmanager
def native_stderr_discarded() -> Iterator[None]:
    """Discard what C libraries write to file descriptor 2 for the duration of the block (from the main thread).

    On a full disk HDF5 prints a 50-line error stack and NIfTI a line of its own straight to file descriptor 2;
    the failure itself still raises, and the command line reports it in one line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
