"""Synthetic training pairs in the SynthMorph spirit, cheap enough for a one-thread CPU training step.

A pair is made from a random label map (the expensive part, about 0.45 s at 64^3, so a pool of them
can be reused), randomly flipped (``augmentation.flip``), then moved by a fresh random smooth
diffeomorphic field (built on a grid 2x coarser), optionally composed with a finer local one
(``fine_displacement``), and with a small random affine residual (``augmentation`` rotation, scaling,
translation); a share ``still_share`` of the pairs is not moved at all. Each image gets its own random
contrast (a uniform mean per label: T1-, T2- and CT-like orders alike) unless ``same_contrast`` (or, for a
share ``same_contrast_share`` of the pairs, the two share one), and its own noise, blur (partial volume) and
bias field, each drawn between zero and the spec's maximum, and gamma (``augmentation.gamma``). Labels are
warped per label (trilinear indicators, arg-max): in short runs, nearest-warped labels and fields built 4x
coarser both trained visibly worse.
"""

from __future__ import annotations

from typing import Optional

import torch

from shmoareg.spatial import compose, identity_grid, warp_labels
from shmoareg.synthetic import SyntheticPair, random_label_map, random_smooth_field, render_intensities
from shmoareg.training.augment import random_affine_grid
from shmoareg.training.config import SyntheticSpec
from shmoareg.training.label_shapes import LabelShapes

Tensor = torch.Tensor
_FIELD_COARSENING = 2


def draw_label_map(spec: SyntheticSpec, shape: tuple[int, int, int], seed: int,
                   shapes: Optional[LabelShapes] = None) -> Tensor:
    """A label map ``(1, 1, Z, Y, X)`` (uint8, to keep a pool small): cut from ``shapes`` for a share
    ``spec.label_map_share`` of the seeds, else random blobs; for a share ``spec.mirror_share`` of the cuts,
    with the mirrored brain as a second channel (:meth:`LabelShapes.draw`)."""
    if shapes is not None:
        generator = torch.Generator().manual_seed(int(seed))
        if float(torch.rand(1, generator=generator)) < spec.label_map_share:
            # drawn only when asked: recipes without mirrored brains keep their label maps
            mirrored = spec.mirror_share > 0 and float(torch.rand(1, generator=generator)) < spec.mirror_share
            swaps = {**dict(spec.mirror_pairs), **{right: left for left, right in spec.mirror_pairs}}
            return shapes.draw(shape, spec.label_map_spacing, generator, swaps if mirrored else None)
    return random_label_map(shape, spec.num_labels, seed=seed, feature_size=spec.feature_size).to(torch.uint8)


def affine_displacement(shape: tuple[int, int, int], spec: SyntheticSpec, generator: torch.Generator) -> Tensor:
    """The voxel displacement ``(1, 3, Z, Y, X)`` of a random small affine about the grid centre."""
    grid = random_affine_grid(shape, spec.augmentation, generator)  # (1, Z, Y, X, 3), normalised x, y, z
    sizes = torch.tensor([shape[2], shape[1], shape[0]], dtype=grid.dtype)
    voxels = ((grid + 1) * (sizes - 1) / 2).permute(0, 4, 1, 2, 3)
    return voxels - identity_grid(shape, dtype=grid.dtype)


def _uniform(generator: torch.Generator, high: float) -> float:
    return float(torch.rand(1, generator=generator)) * high


def _render(labels: Tensor, spec: SyntheticSpec, generator: torch.Generator, contrast_seed: int | None) -> Tensor:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return render_intensities(labels, seed, contrast_seed=contrast_seed, noise_std=_uniform(generator, spec.noise_std),
                              blur_sigma=_uniform(generator, spec.blur_sigma),
                              bias_strength=_uniform(generator, spec.bias_strength),
                              gamma_std=spec.augmentation.gamma)


def synthesise_pair(base_labels: Tensor, spec: SyntheticSpec, seed: int) -> SyntheticPair:
    """A pair from a label map ``(1, 1, Z, Y, X)``, deterministic in ``seed``.

    ``fixed_labels = warp_labels(moving_labels, displacement)`` exactly (per-label interpolation). A label map
    with a second channel (a second brain) gives the moving labels from the first and the fixed labels from the
    second, warped by ``displacement``: two anatomies, no exact correspondence.
    """
    generator = torch.Generator().manual_seed(int(seed))
    labels = base_labels.long()
    flips = [2 + axis for axis in range(3) if bool(torch.rand(1, generator=generator) < 0.5)]
    if flips and spec.augmentation.flip:
        labels = labels.flip(flips)
    moving_labels, fixed_anatomy = labels[:, :1], labels[:, -1:]
    shape = tuple(moving_labels.shape[2:])
    field_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    field = random_smooth_field(shape, _uniform(generator, spec.max_displacement), seed=field_seed,
                                control_spacing=spec.control_spacing, coarse_factor=_FIELD_COARSENING)
    if spec.fine_displacement > 0:  # drawn only when asked: recipes without it keep their pairs
        fine_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        fine = random_smooth_field(shape, _uniform(generator, spec.fine_displacement), seed=fine_seed,
                                   control_spacing=spec.fine_control_spacing)
        field = compose(fine, field)
    affine = spec.augmentation
    if affine.rotation_degrees > 0 or affine.scaling > 0 or affine.translation > 0:
        field = compose(affine_displacement(shape, spec, generator), field)
    if spec.still_share > 0 and float(torch.rand(1, generator=generator)) < spec.still_share:
        field = torch.zeros_like(field)  # no motion at all: the two images differ in contrast, noise and bias only
    fixed_labels = warp_labels(fixed_anatomy, field)
    # drawn only when asked: recipes without a same-contrast share keep their pairs
    same = spec.same_contrast or (spec.same_contrast_share > 0
                                  and float(torch.rand(1, generator=generator)) < spec.same_contrast_share)
    shared = int(torch.randint(0, 2**62, (1,), generator=generator)) if same else None
    fixed, moving = _render(fixed_labels, spec, generator, shared), _render(moving_labels, spec, generator, shared)
    return SyntheticPair(fixed, moving, fixed_labels, moving_labels, field)
