"""Synthetic training pairs (issue-9 recipe): exact label correspondence, determinism, pooled label maps,
random acquisition, the affine residual, and config sections that keep their defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shmoareg.spatial import warp_labels
from shmoareg.training.config import AugmentationSpec, SyntheticSpec, TrainingConfig
from shmoareg.training.data import TRAIN, Prefetcher, SyntheticSource, TrainingData
from shmoareg.training.synthesis import affine_displacement, draw_label_map, synthesise_pair
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

SHAPE = (24, 32, 32)
SPEC = SyntheticSpec(num_labels=6, max_displacement=4.0, same_contrast=False,
                     augmentation=AugmentationSpec(flip=True, rotation_degrees=3.0, scaling=0.03, translation=1.0,
                                                   gamma=0.2))


@pytest.fixture(scope="module")
def labels():
    return draw_label_map(SPEC, SHAPE, seed=3)


def test_fixed_labels_are_the_moving_labels_warped_by_the_returned_field(labels):
    pair = synthesise_pair(labels, SPEC, seed=1)
    assert torch.equal(pair.fixed_labels, warp_labels(pair.moving_labels, pair.displacement))
    assert pair.displacement.abs().max() > 0.5
    for image in (pair.fixed_image, pair.moving_image):
        assert image.shape == (1, 1, *SHAPE) and image.min() >= 0 and image.max() <= 1


def test_pairs_are_deterministic_in_the_seed_and_differ_between_seeds(labels):
    first, again, other = (synthesise_pair(labels, SPEC, seed) for seed in (5, 5, 6))
    assert torch.equal(first.fixed_image, again.fixed_image) and torch.equal(first.displacement, again.displacement)
    assert not torch.equal(first.displacement, other.displacement)


def test_each_image_gets_its_own_contrast_unless_asked_for_the_same(labels):
    def label_means(image, label_map):
        return torch.stack([image[label_map == v].mean() for v in range(1, SPEC.num_labels)])

    different = synthesise_pair(labels, SPEC, seed=2)
    same = synthesise_pair(labels, dataclasses.replace(SPEC, same_contrast=True, noise_std=0.0, bias_strength=0.0),
                           seed=2)
    correlation = lambda p: torch.corrcoef(torch.stack([label_means(p.fixed_image, p.fixed_labels),  # noqa: E731
                                                        label_means(p.moving_image, p.moving_labels)]))[0, 1]
    assert correlation(same) > 0.95
    assert correlation(different) < 0.9


def test_a_same_contrast_share_gives_that_share_of_the_pairs_one_contrast(labels):
    quiet = dataclasses.replace(SPEC, noise_std=0.0, bias_strength=0.0, blur_sigma=0.0,
                                augmentation=dataclasses.replace(SPEC.augmentation, gamma=0.0))
    half = dataclasses.replace(quiet, same_contrast_share=0.5)

    def one_contrast(pair) -> bool:  # the moving image's label means, seen again in the fixed image
        means = {v: float(pair.moving_image[pair.moving_labels == v].mean()) for v in range(SPEC.num_labels)}
        expected = torch.tensor([means[int(v)] for v in pair.fixed_labels.flatten()]).view_as(pair.fixed_image)
        return bool(((pair.fixed_image - expected).abs() < 1e-4).float().mean() > 0.9)

    shared = [one_contrast(synthesise_pair(labels, half, seed)) for seed in range(40)]
    assert 10 <= sum(shared) <= 30
    assert not any(one_contrast(synthesise_pair(labels, quiet, seed)) for seed in range(10))
    assert all(one_contrast(synthesise_pair(labels, dataclasses.replace(quiet, same_contrast_share=1.0), seed))
               for seed in range(10))


def test_a_still_pair_is_not_moved_at_all(labels):
    moved = dataclasses.replace(SPEC, augmentation=dataclasses.replace(SPEC.augmentation, translation=2.0))
    still = synthesise_pair(labels, dataclasses.replace(moved, still_share=1.0), seed=4)
    assert not still.displacement.any() and torch.equal(still.fixed_labels, still.moving_labels)
    assert synthesise_pair(labels, moved, seed=4).displacement.abs().max() > 0.5


def test_a_fine_deformation_adds_local_motion_within_its_bound_and_keeps_the_labels_exact(labels):
    still = AugmentationSpec(flip=False, rotation_degrees=0.0, scaling=0.0, translation=0.0, gamma=0.0)
    smooth_only = dataclasses.replace(SPEC, augmentation=still)
    with_fine = dataclasses.replace(smooth_only, fine_displacement=1.5, fine_control_spacing=3.0)
    smooth, fine = (synthesise_pair(labels, spec, seed=7) for spec in (smooth_only, with_fine))
    assert torch.equal(fine.fixed_labels, warp_labels(fine.moving_labels, fine.displacement))
    added = fine.displacement - smooth.displacement  # the fine field, read where the smooth one points
    assert 0.1 < float(added.norm(dim=1).max()) <= 1.5 + 1e-4
    roughness = lambda u: float((u[..., 1:] - u[..., :-1]).abs().mean() / u.abs().mean())  # noqa: E731
    assert roughness(added) > 2 * roughness(smooth.displacement)


def test_a_pure_translation_residual_is_a_constant_displacement_within_its_bound():
    spec = dataclasses.replace(SPEC, augmentation=AugmentationSpec(flip=False, rotation_degrees=0.0, scaling=0.0,
                                                                   translation=2.0, gamma=0.0))
    field = affine_displacement(SHAPE, spec, torch.Generator().manual_seed(0))
    assert field.shape == (1, 3, *SHAPE)
    per_axis = field.flatten(2)
    assert torch.allclose(per_axis, per_axis[..., :1].expand_as(per_axis), atol=1e-4)
    assert per_axis.abs().max() <= 2.0 + 1e-4 and per_axis.abs().max() > 0.1


def test_a_pool_reuses_label_maps_with_new_deformations():
    config = TrainingConfig.from_dict({"data": {"shape": [16, 16, 16],
                                                "synthetic": {"num_labels": 4, "pool": 2, "max_displacement": 6.0}}})
    source = SyntheticSource(config.data, seed=0)
    first, third = source.sample(TRAIN, 0, 0), source.sample(TRAIN, 0, 2)  # 2 % 2 == 0: the same label map
    assert len(source._labels) == 1
    assert torch.equal(torch.sort(first.moving_labels.flatten()).values,
                       torch.sort(third.moving_labels.flatten()).values)  # same map, up to flips
    assert not torch.equal(first.fixed_labels, third.fixed_labels)


def test_a_config_section_keeps_its_owners_defaults_for_keys_not_given():
    config = TrainingConfig.from_dict({"data": {"synthetic": {"augmentation": {"translation": 1.5}}}})
    augmentation = config.data.synthetic.augmentation
    assert augmentation.translation == 1.5
    assert (augmentation.flip, augmentation.rotation_degrees) == (False, 0.0)  # SyntheticSpec's defaults
    assert config.data.augmentation.flip is True  # the dataset augmentation keeps its own defaults


def test_the_prefetcher_gives_the_batches_of_the_data_in_any_order():
    config = TrainingConfig.from_dict({"data": {"shape": [16, 16, 16], "synthetic": {"num_labels": 4}}})
    data = TrainingData(config.data, seed=0)
    prefetcher = Prefetcher(data, batch_size=1)
    try:
        for step in (0, 1, 2, 5, 6):  # 5 was not prefetched
            assert torch.equal(prefetcher.batch(step).fixed, data.batch(step, 1).fixed)
    finally:
        prefetcher.close()
