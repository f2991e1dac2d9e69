"""Synthetic training and test data in the spirit of SynthMorph, in torch (CPU or GPU).

Everything is deterministic by seed: each function draws its random numbers from its own
CPU ``torch.Generator`` (never the global RNG) and moves them to ``device``, so a seed gives
the same random draws on any device. Shapes follow :mod:`shmoareg.spatial`: volumes ``(1, C, Z, Y, X)``,
displacement fields ``(1, 3, Z, Y, X)`` in voxels with channels ``(x, y, z)``.

Recipe: random smooth label maps (arg-max of upsampled noise, warped by a random smooth
field, inside a random smooth blob), a random smooth (diffeomorphic) deformation, and
intensity rendering with per-label means, noise, blur, a bias field and gamma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg.spatial import integrate_velocity, resize_field, warp, warp_labels

Tensor = torch.Tensor
Shape = Tuple[int, int, int]
Device = Optional[Union[torch.device, str]]

_FIELD_RESCALE_ITERATIONS = 2
_PLANT_MARGIN = 0.1


@dataclass
class SyntheticPair:
    """A fixed/moving pair with its exact ground truth.

    ``displacement`` maps fixed voxels to moving voxels (resampling convention):
    ``fixed_labels == warp_labels(moving_labels, displacement)`` exactly, and
    ``warp(moving_image, displacement)`` matches ``fixed_image`` up to noise and bias.
    """

    fixed_image: Tensor
    moving_image: Tensor
    fixed_labels: Tensor
    moving_labels: Tensor
    displacement: Tensor


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def child_seed(generator: torch.Generator) -> int:
    """A new seed drawn from ``generator``, for an independent sub-stream."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _coarse_shape(shape: Shape, spacing: float) -> list[int]:
    """Control-grid size with about ``spacing`` voxels between control points (at least 2)."""
    return [max(2, round((n - 1) / spacing) + 1) for n in shape]


def _smooth_noise(generator: torch.Generator, channels: int, shape: Shape, spacing: float,
                  device: Device) -> Tensor:
    """Unit Gaussian noise on a coarse grid, upsampled trilinearly to ``(1, channels, *shape)``."""
    coarse = torch.randn((1, channels, *_coarse_shape(shape, spacing)), generator=generator)
    return F.interpolate(coarse.to(device), size=tuple(shape), mode="trilinear", align_corners=True)


def _max_norm(field: Tensor) -> float:
    return float(field.norm(dim=1).max())


def _gaussian_bump(center: Tensor, shape: Shape, sigma: float, device: Device) -> Tensor:
    """``exp(-|p - center|^2 / 2 sigma^2)`` on the grid, ``(Z, Y, X)``; ``center`` is ``(z, y, x)``."""
    axes = [(torch.arange(n, device=device, dtype=torch.float32) - float(c)) ** 2
            for n, c in zip(shape, center)]
    squared = axes[0].view(-1, 1, 1) + axes[1].view(1, -1, 1) + axes[2].view(1, 1, -1)
    return torch.exp(-squared / (2.0 * sigma**2))


def _foreground_blob(generator: torch.Generator, shape: Shape, spacing: float, device: Device) -> Tensor:
    """Boolean ``(Z, Y, X)`` mask of a random smooth blob around the centre.

    The centre voxel is always inside and the corners always outside.
    """
    noise = _smooth_noise(generator, 1, shape, spacing, device)[0, 0]
    noise = noise / noise.abs().max().clamp(min=1e-6)
    axes = [torch.linspace(-1.0, 1.0, n, device=device) ** 2 for n in shape]
    radius2 = axes[0].view(-1, 1, 1) + axes[1].view(1, -1, 1) + axes[2].view(1, 1, -1)
    return (1.0 - radius2) + 0.5 * noise > 0.0


def _plant_missing_labels(scores: Tensor, foreground: Tensor, sigma: float) -> Tensor:
    """Arg-max of ``scores`` ``(C, Z, Y, X)`` inside ``foreground``, every channel made to win somewhere.

    A channel that wins nowhere gets a Gaussian bump where it is closest to winning, just
    large enough to win there. Returns the channel index per voxel, ``(Z, Y, X)``.
    """
    channels = scores.shape[0]
    shape = tuple(scores.shape[1:])
    scores = scores.clone()
    for _ in range(2 * channels):
        winners = scores.argmax(dim=0)
        present = torch.bincount(winners[foreground], minlength=channels)
        missing = torch.nonzero(present == 0).flatten()
        if missing.numel() == 0:
            break
        k = int(missing[0])
        others = torch.cat((scores[:k], scores[k + 1:])).amax(dim=0)
        gap = torch.where(foreground, others - scores[k], torch.full_like(others, math.inf))
        index = int(gap.argmin())
        center = torch.tensor(np.unravel_index(index, shape))
        bump = _gaussian_bump(center, shape, sigma, scores.device)
        scores[k] += (gap.flatten()[index] + _PLANT_MARGIN) * bump
    return scores.argmax(dim=0)


def random_label_map(shape: Shape, num_labels: int = 16, *, seed: int, feature_size: float = 8.0,
                     warp_displacement: float | None = None, device: Device = None) -> Tensor:
    """Random smooth label map ``(1, 1, Z, Y, X)`` int64 with values ``0 .. num_labels - 1``.

    Label 0 is the background outside a random smooth blob around the centre: the corners
    are always background, the voxels nearest the centre always foreground (for axes of at
    least 4 voxels). Labels ``1 .. num_labels - 1`` are the arg-max of as many smooth noise
    images (control points every ``feature_size`` voxels), warped by a random diffeomorphic
    field of ``warp_displacement`` voxels at most (default ``feature_size / 2``; 0 disables).
    A foreground label that would be absent is planted as a smooth bump where its noise is
    closest to winning (up to ``2 * num_labels`` plantings), so every label
    ``0 .. num_labels - 1`` appears unless the blob is too small to hold them all.
    """
    if num_labels < 2:
        raise ValueError("num_labels must be at least 2 (background and one foreground label)")
    if feature_size <= 0:
        raise ValueError("feature_size must be positive")
    generator = _generator(seed)
    scores = _smooth_noise(generator, num_labels - 1, shape, feature_size, device)
    displacement = feature_size / 2 if warp_displacement is None else warp_displacement
    field_seed = child_seed(generator)
    if displacement > 0:
        field = random_smooth_field(shape, displacement, seed=field_seed,
                                    control_spacing=2 * feature_size, device=device)
        scores = warp(scores, field)
    foreground = _foreground_blob(generator, shape, 2 * feature_size, device)
    winners = _plant_missing_labels(scores[0], foreground, sigma=feature_size / 4)
    labels = torch.where(foreground, winners + 1, torch.zeros_like(winners))
    return labels.view(1, 1, *shape).to(torch.int64)


def random_smooth_field(shape: Shape, max_displacement: float = 4.0, *, seed: int,
                        control_spacing: float = 8.0, diffeomorphic: bool = True, coarse_factor: int = 1,
                        device: Device = None) -> Tensor:
    """Random smooth displacement field ``(1, 3, Z, Y, X)`` float32 in voxels.

    Gaussian noise on a control grid every ``control_spacing`` voxels, upsampled trilinearly
    and scaled so that ``max |u|`` equals ``max_displacement``. When ``diffeomorphic``, the
    noise is a stationary velocity integrated by scaling and squaring (no folding); its scale
    is refined a few times so that ``max |u|`` is within a few percent of the request.
    ``coarse_factor`` > 1 builds the field on a grid that many times coarser and upsamples it
    (training data: the field is smooth on the control grid anyway, and integration costs a
    ``coarse_factor``^3-th).
    """
    if max_displacement < 0:
        raise ValueError("max_displacement must be non-negative")
    if control_spacing <= 0:
        raise ValueError("control_spacing must be positive")
    if coarse_factor > 1:
        coarse = tuple(max(2, round(n / coarse_factor)) for n in shape)
        field = random_smooth_field(coarse, max_displacement / coarse_factor, seed=seed,
                                    control_spacing=control_spacing / coarse_factor,
                                    diffeomorphic=diffeomorphic, device=device)
        return resize_field(field, tuple(shape))
    noise = _smooth_noise(_generator(seed), 3, shape, control_spacing, device)
    if max_displacement == 0:
        return torch.zeros_like(noise)
    field = noise * (max_displacement / _max_norm(noise))
    if not diffeomorphic:
        return field
    velocity = field
    for _ in range(_FIELD_RESCALE_ITERATIONS):
        field = integrate_velocity(velocity)
        velocity = velocity * (max_displacement / _max_norm(field))
    return integrate_velocity(velocity)


def _gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, Z, Y, X)`` with edge replication."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    for axis in range(3):
        size = [1, 1, 1]
        size[axis] = kernel.numel()
        weight = kernel.view(1, 1, *size).repeat(channels, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        image = F.conv3d(F.pad(image, pad, mode="replicate"), weight, groups=channels)
    return image


def render_intensities(labels: Tensor, seed: int, *, contrast_seed: int | None = None,
                       noise_std: float = 0.05, blur_sigma: float = 1.0, bias_strength: float = 0.1,
                       gamma_std: float = 0.25) -> Tensor:
    """Render an image ``(B, 1, Z, Y, X)`` float32 in ``[0, 1]`` from a label map of the same shape.

    The contrast (a uniform random mean intensity per label value, and a gamma
    ``exp(gamma_std * N(0, 1))``) comes from ``contrast_seed`` (default ``seed``); the
    acquisition (Gaussian noise of ``noise_std``, a smooth multiplicative bias field
    ``exp(bias_strength * smooth noise)``) from ``seed``. Order: means + noise, Gaussian
    blur of ``blur_sigma`` voxels (0 disables), bias, min-max normalisation, gamma.
    """
    if labels.is_floating_point() or int(labels.min()) < 0:
        raise ValueError("labels must be a non-negative integer tensor")
    shape = tuple(labels.shape[2:])
    contrast = _generator(seed if contrast_seed is None else contrast_seed)
    means = torch.rand(int(labels.max()) + 1, generator=contrast).to(labels.device)
    gamma = math.exp(gamma_std * float(torch.randn(1, generator=contrast)))
    acquisition = _generator(seed)
    noise = torch.randn(tuple(labels.shape), generator=acquisition).to(labels.device)
    image = means[labels] + noise_std * noise
    if blur_sigma > 0:
        image = _gaussian_blur(image, blur_sigma)
    bias = _smooth_noise(acquisition, labels.shape[0], shape, max(shape) / 3, labels.device)
    image = image * torch.exp(bias_strength * bias.transpose(0, 1))
    low = image.amin(dim=(1, 2, 3, 4), keepdim=True)
    high = image.amax(dim=(1, 2, 3, 4), keepdim=True)
    image = (image - low) / (high - low).clamp(min=1e-8)
    return image.clamp(0.0, 1.0) ** gamma


def synthetic_pair(shape: Shape, seed: int, *, max_displacement: float = 4.0, num_labels: int = 16,
                   same_contrast: bool = True, feature_size: float = 8.0, control_spacing: float = 8.0,
                   device: Device = None) -> SyntheticPair:
    """A random fixed/moving pair with the exact displacement from fixed to moving.

    The moving label map is drawn first, then a diffeomorphic field ``u``; the fixed labels
    are ``warp_labels(moving_labels, u)``, so ``fixed(p) = moving(p + u(p))`` holds exactly
    for labels. Both images are rendered independently (own noise and bias); with
    ``same_contrast`` they share per-label means and gamma (mono-modal), otherwise each
    gets its own contrast (multi-modal).
    """
    generator = _generator(seed)
    label_seed, field_seed, fixed_seed, moving_seed, contrast_seed = (
        child_seed(generator) for _ in range(5))
    moving_labels = random_label_map(shape, num_labels, seed=label_seed, feature_size=feature_size,
                                     device=device)
    displacement = random_smooth_field(shape, max_displacement, seed=field_seed,
                                       control_spacing=control_spacing, device=device)
    fixed_labels = warp_labels(moving_labels, displacement)
    shared = contrast_seed if same_contrast else None
    return SyntheticPair(
        fixed_image=render_intensities(fixed_labels, fixed_seed, contrast_seed=shared),
        moving_image=render_intensities(moving_labels, moving_seed, contrast_seed=shared),
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        displacement=displacement,
    )


def to_sitk(tensor: Tensor, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
            origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
            direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)) -> sitk.Image:
    """SimpleITK image from a ``(1, 1, Z, Y, X)`` (or ``(Z, Y, X)``) tensor.

    Floating tensors become float32 images, integer and boolean tensors Int32 images.
    """
    if tensor.dim() not in (3, 5) or (tensor.dim() == 5 and tuple(tensor.shape[:2]) != (1, 1)):
        raise ValueError(f"expected a (1, 1, Z, Y, X) or (Z, Y, X) tensor, got shape {tuple(tensor.shape)}")
    array = tensor.detach().reshape(tensor.shape[-3:]).cpu().numpy()
    array = array.astype(np.float32 if tensor.is_floating_point() else np.int32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image
