"""Tests of the SynthMorph-style synthetic data generator (shmoareg.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg.spatial import jacobian_determinant, warp, warp_labels
from shmoareg.synthetic import (
    SyntheticPair,
    random_label_map,
    random_smooth_field,
    render_intensities,
    synthetic_pair,
    to_sitk,
)

SHAPE = (32, 32, 32)
PAIR_SHAPE = (48, 40, 32)


def dice(a: torch.Tensor, b: torch.Tensor, value: int) -> float:
    """Dice overlap of label ``value`` in two label maps."""
    in_a, in_b = a == value, b == value
    total = int(in_a.sum() + in_b.sum())
    return 2.0 * int((in_a & in_b).sum()) / total if total else 1.0


def ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Global normalised cross-correlation."""
    return float(torch.corrcoef(torch.stack((a.flatten(), b.flatten())))[0, 1])


@pytest.fixture(scope="module")
def pair() -> SyntheticPair:
    return synthetic_pair(PAIR_SHAPE, seed=7, max_displacement=5.0, num_labels=8)


def test_label_map_is_deterministic_by_seed():
    first = random_label_map(SHAPE, 16, seed=3)
    assert torch.equal(first, random_label_map(SHAPE, 16, seed=3))
    assert not torch.equal(first, random_label_map(SHAPE, 16, seed=4))


def test_label_map_shape_values_and_background():
    labels = random_label_map((48, 40, 32), 16, seed=1)
    assert labels.shape == (1, 1, 48, 40, 32)
    assert labels.dtype == torch.int64
    assert torch.unique(labels).tolist() == list(range(16))
    volume = labels[0, 0]
    assert all(int(volume[z, y, x]) == 0 for z in (0, -1) for y in (0, -1) for x in (0, -1))
    assert int(volume[24, 20, 16]) != 0
    assert 0.2 < float((volume > 0).float().mean()) < 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_map_plants_labels_the_noise_missed(seed):
    labels = random_label_map((24, 24, 24), 40, seed=seed)
    assert torch.unique(labels).tolist() == list(range(40))


def test_label_map_regions_are_smooth_and_mostly_connected():
    volume = random_label_map(SHAPE, 16, seed=5)[0, 0].numpy()
    boundary = np.mean([(np.diff(volume, axis=axis) != 0).mean() for axis in range(3)])
    assert boundary < 0.2  # i.i.d. random labels would give about 0.94
    largest_fractions = []
    for value in np.unique(volume):
        mask = sitk.GetImageFromArray((volume == value).astype(np.uint8))
        components = sitk.GetArrayFromImage(sitk.ConnectedComponent(mask, True))
        sizes = np.bincount(components.ravel())[1:]
        largest_fractions.append(sizes.max() / sizes.sum())
    assert np.mean(largest_fractions) > 0.5


def test_field_is_deterministic_by_seed():
    first = random_smooth_field(SHAPE, 4.0, seed=11)
    assert first.shape == (1, 3, *SHAPE) and first.dtype == torch.float32
    assert torch.equal(first, random_smooth_field(SHAPE, 4.0, seed=11))
    assert not torch.equal(first, random_smooth_field(SHAPE, 4.0, seed=12))


@pytest.mark.parametrize("diffeomorphic", [True, False])
@pytest.mark.parametrize("max_displacement", [2.0, 6.0])
def test_field_reaches_requested_max_displacement(diffeomorphic, max_displacement):
    field = random_smooth_field(SHAPE, max_displacement, seed=2, diffeomorphic=diffeomorphic)
    assert float(field.norm(dim=1).max()) == pytest.approx(max_displacement, rel=0.05)


def test_zero_max_displacement_gives_zero_field():
    assert not random_smooth_field(SHAPE, 0.0, seed=2).any()


def test_diffeomorphic_field_does_not_fold_where_plain_noise_does():
    options = dict(seed=4, control_spacing=8.0)
    folding = random_smooth_field(SHAPE, 10.0, diffeomorphic=False, **options)
    smooth = random_smooth_field(SHAPE, 10.0, diffeomorphic=True, **options)
    assert float(jacobian_determinant(folding).min()) < 0.0
    assert float(jacobian_determinant(smooth).min()) > 0.0


def test_render_intensities_range_and_determinism():
    labels = random_label_map(SHAPE, 8, seed=0)
    image = render_intensities(labels, 5)
    assert image.shape == labels.shape and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max() - image.min()) > 0.5
    assert torch.equal(image, render_intensities(labels, 5))
    assert not torch.equal(image, render_intensities(labels, 6))


def test_render_contrast_follows_contrast_seed():
    labels = random_label_map(SHAPE, 8, seed=0)

    def label_medians(image: torch.Tensor) -> torch.Tensor:
        return torch.stack([image[labels == value].median() for value in range(8)])

    reference = label_medians(render_intensities(labels, 1, contrast_seed=9))
    same = label_medians(render_intensities(labels, 2, contrast_seed=9))
    other = label_medians(render_intensities(labels, 2, contrast_seed=10))
    assert ncc(reference, same) > 0.9
    assert ncc(reference, other) < ncc(reference, same) - 0.2


def test_pair_shapes_and_determinism(pair):
    for image in (pair.fixed_image, pair.moving_image):
        assert image.shape == (1, 1, *PAIR_SHAPE) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    for labels in (pair.fixed_labels, pair.moving_labels):
        assert labels.shape == (1, 1, *PAIR_SHAPE) and labels.dtype == torch.int64
    assert pair.displacement.shape == (1, 3, *PAIR_SHAPE)
    again = synthetic_pair(PAIR_SHAPE, seed=7, max_displacement=5.0, num_labels=8)
    assert torch.equal(again.fixed_image, pair.fixed_image)
    assert torch.equal(again.displacement, pair.displacement)
    other = synthetic_pair(PAIR_SHAPE, seed=8, max_displacement=5.0, num_labels=8)
    assert not torch.equal(other.moving_labels, pair.moving_labels)


def test_pair_true_displacement_maps_moving_labels_onto_fixed(pair):
    warped = warp_labels(pair.moving_labels, pair.displacement)
    nearest = warp_labels(pair.moving_labels, pair.displacement, method="nearest")
    true_dice = [dice(warped, pair.fixed_labels, value) for value in range(8)]
    nearest_dice = [dice(nearest, pair.fixed_labels, value) for value in range(8)]
    zero_dice = [dice(pair.moving_labels, pair.fixed_labels, value) for value in range(8)]
    assert min(true_dice) > 0.95
    assert np.mean(nearest_dice) > 0.95
    assert np.mean(zero_dice) < np.mean(true_dice) - 0.1


def test_pair_true_displacement_aligns_images(pair):
    warped = warp(pair.moving_image, pair.displacement)
    assert ncc(warped, pair.fixed_image) > ncc(pair.moving_image, pair.fixed_image)
    mse = lambda a, b: float(((a - b) ** 2).mean())  # noqa: E731
    assert mse(warped, pair.fixed_image) < mse(pair.moving_image, pair.fixed_image)


def test_pair_without_same_contrast_changes_label_intensities():
    mono = synthetic_pair(SHAPE, seed=3, num_labels=8)
    multi = synthetic_pair(SHAPE, seed=3, num_labels=8, same_contrast=False)
    assert torch.equal(mono.fixed_labels, multi.fixed_labels)
    mono_ncc = ncc(warp(mono.moving_image, mono.displacement), mono.fixed_image)
    multi_ncc = ncc(warp(multi.moving_image, multi.displacement), multi.fixed_image)
    assert multi_ncc < mono_ncc - 0.2


def test_to_sitk_types_geometry_and_values():
    image = torch.rand(1, 1, 4, 5, 6)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    converted = to_sitk(image, spacing=(0.5, 1.0, 2.0), origin=(1.0, 2.0, 3.0), direction=direction)
    assert converted.GetPixelID() == sitk.sitkFloat32
    assert converted.GetSize() == (6, 5, 4)
    assert converted.GetSpacing() == (0.5, 1.0, 2.0)
    assert converted.GetOrigin() == (1.0, 2.0, 3.0)
    assert converted.GetDirection() == direction
    np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), image[0, 0].numpy())
    labels = to_sitk(torch.arange(24).view(1, 1, 2, 3, 4))
    assert labels.GetPixelID() == sitk.sitkInt32
    assert sitk.GetArrayFromImage(labels)[1, 2, 3] == 23
    with pytest.raises(ValueError):
        to_sitk(torch.zeros(2, 1, 4, 4, 4))
