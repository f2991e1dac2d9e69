"""Spatial operations on dense displacement fields, in torch (batched, CPU or GPU).

Conventions used throughout the engine:

* A volume is a tensor ``(B, C, Z, Y, X)``: the array order of ``SimpleITK.GetArrayFromImage``.
* A displacement field is ``(B, 3, Z, Y, X)`` in **voxel units** of its grid, channels in
  ITK index order ``(x, y, z)`` = ``(i, j, k)``. It maps a point ``p`` of the grid to
  ``p + u(p)``: the *resampling* (pull-back) convention, ``warped(p) = moving(p + u(p))``.
* ``compose(outer, inner)`` is the field of ``p -> q + outer(q)`` with ``q = p + inner(p)``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def identity_grid(shape: tuple[int, int, int], device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Voxel coordinates ``(1, 3, Z, Y, X)`` with channels ``(x, y, z)``."""
    z, y, x = (torch.arange(n, device=device, dtype=dtype) for n in shape)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack((xx, yy, zz)).unsqueeze(0)


def _voxel_to_normalised(shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Per-channel (x, y, z) factor from voxels to ``grid_sample``'s align_corners=True units."""
    sizes = torch.tensor([shape[2], shape[1], shape[0]], device=device, dtype=dtype)
    return 2.0 / (sizes - 1).clamp(min=1)


@functools.lru_cache(maxsize=8)
def _normalised_identity(shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The identity ``grid_sample`` grid ``(1, Z, Y, X, 3)``: built once per shape, as the optimiser
    warps on the same few grids hundreds of times."""
    grid = identity_grid(shape, device, dtype).permute(0, 2, 3, 4, 1)
    return grid * _voxel_to_normalised(shape, device, dtype) - 1.0


def _sampling_grid(displacement: Tensor) -> Tensor:
    """Normalised ``grid_sample`` grid (align_corners=True) for a voxel displacement field."""
    shape = tuple(displacement.shape[2:])
    scale = _voxel_to_normalised(shape, displacement.device, displacement.dtype)
    return _normalised_identity(shape, displacement.device, displacement.dtype) + (
        displacement.permute(0, 2, 3, 4, 1) * scale)


def warp(image: Tensor, displacement: Tensor, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Resample ``image`` at ``p + u(p)``: trilinear (``bilinear``) or ``nearest``."""
    if displacement.shape[0] != image.shape[0] and displacement.shape[0] == 1:
        displacement = displacement.expand(image.shape[0], *displacement.shape[1:])
    grid = _sampling_grid(displacement.to(image.dtype) if image.is_floating_point() else displacement)
    source = image if image.is_floating_point() else image.to(displacement.dtype)
    warped = F.grid_sample(source, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return warped if image.is_floating_point() else warped.round().to(image.dtype)


def warp_labels(labels: Tensor, displacement: Tensor, method: str = "per-label",
                label_values: list[int] | None = None) -> Tensor:
    """Warp an integer label map ``(B, 1, Z, Y, X)``.

    ``nearest`` takes the nearest voxel's label; ``per-label`` interpolates each label's
    indicator trilinearly and keeps the arg-max (smoother boundaries, no lost thin parts).
    """
    if method == "nearest":
        return warp(labels, displacement, mode="nearest")
    if method != "per-label":
        raise ValueError(f"unknown label warping method {method!r}: use 'nearest' or 'per-label'")
    values = label_values if label_values is not None else torch.unique(labels).tolist()
    values = sorted(set(int(v) for v in values) | {0})
    one_hot = torch.cat([(labels == v).to(displacement.dtype) for v in values], dim=1)
    warped = warp(one_hot, displacement, mode="bilinear")
    lookup = torch.tensor(values, device=labels.device, dtype=labels.dtype)
    return lookup[warped.argmax(dim=1, keepdim=True)]


def compose(outer: Tensor, inner: Tensor) -> Tensor:
    """Field of ``outer ∘ inner``: ``u(p) = inner(p) + outer(p + inner(p))``."""
    return inner + warp(outer, inner, mode="bilinear", padding_mode="border")


def integrate_velocity(velocity: Tensor, steps: int = 7) -> Tensor:
    """Scaling and squaring: the displacement of ``exp(v)`` for a stationary velocity field."""
    if steps < 0:
        raise ValueError("steps must be non-negative")
    displacement = velocity / (2 ** steps)
    for _ in range(steps):
        displacement = compose(displacement, displacement)
    return displacement


def resize_field(displacement: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Trilinearly resample a voxel field onto a grid of ``shape`` covering the same extent.

    Grids are cell-centred (as average pooling makes them: a factor-2 coarser voxel spans two
    fine voxels), and voxel units are rescaled per axis so the physical displacement is unchanged.
    """
    old = displacement.shape[2:]
    resized = F.interpolate(displacement, size=shape, mode="trilinear", align_corners=False)
    factors = [shape[2 - c] / old[2 - c] for c in range(3)]
    scale = torch.tensor(factors, device=displacement.device, dtype=displacement.dtype).view(1, 3, 1, 1, 1)
    return resized * scale


def central_difference(field: Tensor, dim: int) -> Tensor:
    """The derivative of ``field`` along ``dim`` per voxel: central differences inside, one-sided at the border
    (``torch.gradient``'s result, written into one buffer: about 7x faster on a 1 mm brain's field)."""
    n = field.shape[dim]
    if n < 2:
        return torch.zeros_like(field)
    out = torch.empty_like(field)
    inside = out.narrow(dim, 1, n - 2)
    torch.sub(field.narrow(dim, 2, n - 2), field.narrow(dim, 0, n - 2), out=inside)
    inside.mul_(0.5)
    torch.sub(field.narrow(dim, 1, 1), field.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
    torch.sub(field.narrow(dim, n - 1, 1), field.narrow(dim, n - 2, 1), out=out.narrow(dim, n - 1, 1))
    return out


def jacobian_determinant(displacement: Tensor) -> Tensor:
    """Determinant of the Jacobian of ``p -> p + u(p)`` per voxel, ``(B, 1, Z, Y, X)``.

    Central differences inside, one-sided at the border. The determinant is the same in
    voxel and physical units when the field's grid shares the image's direction.
    """
    d_dx, d_dy, d_dz = (central_difference(displacement, axis) for axis in (4, 3, 2))
    # Row r, column c: d u_r / d x_c, plus 1 on the diagonal.
    a00, a10, a20 = d_dx[:, 0] + 1, d_dx[:, 1], d_dx[:, 2]
    a01, a11, a21 = d_dy[:, 0], d_dy[:, 1] + 1, d_dy[:, 2]
    a02, a12, a22 = d_dz[:, 0], d_dz[:, 1], d_dz[:, 2] + 1
    det = a00 * torch.addcmul(a11 * a22, a12, a21, value=-1)
    det.addcmul_(a01, torch.addcmul(a10 * a22, a12, a20, value=-1), value=-1)
    det.addcmul_(a02, torch.addcmul(a10 * a21, a11, a20, value=-1))
    return det.unsqueeze(1)
