"""Training label maps cut from label-map files (issue 9: brain-shaped training data)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg.errors import InputError
from shmoareg.spatial import warp_labels
from shmoareg.training.config import DataSpec, SyntheticSpec
from shmoareg.training.data import TRAIN, SyntheticSource
from shmoareg.training.label_shapes import LabelShapes
from shmoareg.training.synthesis import draw_label_map, synthesise_pair
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

SHAPE = (16, 16, 16)


@pytest.fixture
def label_file(tmp_path):
    """A 2 mm label map: label = 1 + (x index // 4) inside a 24x20x16-voxel box, 0 around it."""
    values = np.zeros((30, 34, 40), dtype=np.uint8)  # z, y, x
    xs = np.arange(24)
    values[7:23, 7:27, 8:32] = (1 + xs // 4)[None, None, :]
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((2.0, 2.0, 2.0))
    path = tmp_path / "shapes.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, values


def test_a_cut_at_the_files_spacing_is_a_window_of_the_file_around_the_labels_centre(label_file):
    path, values = label_file
    shapes = LabelShapes([str(path)])
    cut = shapes.draw(SHAPE, (2.0, 2.0), torch.Generator().manual_seed(0))
    assert cut.shape == (1, 1, *SHAPE) and cut.dtype == torch.uint8
    cut = cut[0, 0].numpy()
    # Same spacing: every row along x is a run of the file's labels in order, each 4 voxels wide inside the box.
    row = cut[8, 8]
    inside = row[row > 0]
    assert set(np.diff(inside)) <= {0, 1} and len(inside) >= 12
    runs = np.unique(inside, return_counts=True)[1]
    assert (runs[1:-1] == 4).all()
    assert set(np.unique(cut)) <= set(np.unique(values))


def test_a_mirrored_cut_holds_the_brain_mirrored_about_its_centre_with_its_sides_swapped(label_file):
    # The file's labels run 1..6 along x: mirrored about the box's centre they run 6..1; swapping each label
    # with its mirror partner (1-6, 2-5, 3-4) gives back the first brain, wherever the window falls.
    path, _ = label_file
    shapes = LabelShapes([str(path)])
    for seed in range(3):
        plain = shapes.draw(SHAPE, (2.0, 3.0), torch.Generator().manual_seed(seed), {})
        assert plain.shape == (1, 2, *SHAPE) and plain.dtype == torch.uint8
        first, mirrored = plain[0, 0], plain[0, 1]
        inside = first > 0
        assert inside.sum() > 100 and torch.equal(mirrored > 0, inside)
        assert torch.equal(mirrored[inside], 7 - first[inside])
        swaps = {1: 6, 6: 1, 2: 5, 5: 2, 3: 4, 4: 3}
        swapped = shapes.draw(SHAPE, (2.0, 3.0), torch.Generator().manual_seed(seed), swaps)
        assert torch.equal(swapped[0, 0], first) and torch.equal(swapped[0, 1], first)


def test_a_mirrored_pair_warps_the_second_brain_for_the_fixed_image(label_file):
    path, _ = label_file
    spec = SyntheticSpec(num_labels=7, max_displacement=2.0, label_maps=(str(path),), label_map_share=1.0,
                         label_map_spacing=(2.0, 2.0), mirror_share=1.0, mirror_pairs=())
    two_brains = draw_label_map(spec, SHAPE, seed=5, shapes=LabelShapes([str(path)]))
    assert two_brains.shape == (1, 2, *SHAPE)
    pair = synthesise_pair(two_brains, spec, seed=1)
    assert torch.equal(pair.moving_labels, two_brains[:, :1].long())
    assert torch.equal(pair.fixed_labels, warp_labels(two_brains[:, 1:].long(), pair.displacement))


def test_a_coarser_spacing_shrinks_the_labels_in_voxels(label_file):
    path, _ = label_file
    shapes = LabelShapes([str(path)])
    fine = shapes.draw(SHAPE, (2.0, 2.0), torch.Generator().manual_seed(3))[0, 0].numpy()
    coarse = shapes.draw(SHAPE, (4.0, 4.0), torch.Generator().manual_seed(3))[0, 0].numpy()
    # At 4 mm per voxel the 48 mm-wide box is 12 voxels wide, and each 8 mm label 2 voxels.
    assert (coarse[8, 8] > 0).sum() == 12 and (fine[8, 8] > 0).sum() == SHAPE[2]
    assert (coarse > 0).sum() < (fine > 0).sum()


def test_the_share_decides_how_many_label_maps_come_from_the_files(label_file):
    path, values = label_file
    shapes = LabelShapes([str(path)])
    file_labels = set(np.unique(values))

    def from_file(share: float, seed: int) -> bool:
        spec = SyntheticSpec(num_labels=12, label_map_share=share, label_map_spacing=(2.0, 3.0))
        labels = draw_label_map(spec, SHAPE, seed, shapes)[0, 0].numpy()
        return (labels == 0).any() and set(np.unique(labels)) <= file_labels and labels.max() <= 6

    assert not any(from_file(0.0, seed) for seed in range(20))
    assert all(from_file(1.0, seed) for seed in range(20))
    assert 4 <= sum(from_file(0.5, seed) for seed in range(20)) <= 16
    # Without files the random label maps are those of before (the seed alone decides them).
    spec = SyntheticSpec(num_labels=12)
    assert torch.equal(draw_label_map(spec, SHAPE, 5), draw_label_map(spec, SHAPE, 5, None))


def test_the_training_data_records_which_files_shaped_it(label_file):
    path, _ = label_file
    synthetic = SyntheticSpec(num_labels=6, label_maps=(str(path),), label_map_share=1.0, label_map_spacing=(2.0, 2.5))
    source = SyntheticSource(DataSpec(shape=SHAPE, synthetic=synthetic), seed=1)
    sample = source.sample(TRAIN, 0, 0)
    assert set(sample.moving_labels.unique().tolist()) <= set(range(7))  # the file's labels, not 6 random ones
    described = source.describe()["label_maps"]
    assert described == [{"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]


def test_a_missing_or_unusable_label_file_is_refused_with_what_to_do(tmp_path, label_file):
    with pytest.raises(InputError, match=r"label map .*missing\.nii\.gz not found \(make it with `make brain-shapes`"):
        LabelShapes([str(tmp_path / "missing.nii.gz")])
    with pytest.raises(InputError, match="label_maps is empty"):
        LabelShapes([])
    many = sitk.GetImageFromArray(np.arange(8 * 8 * 8, dtype=np.int32).reshape(8, 8, 8))
    sitk.WriteImage(many, str(tmp_path / "many.nii.gz"))
    with pytest.raises(InputError, match="has label 511; use at most 255 labels"):
        LabelShapes([str(tmp_path / "many.nii.gz")])


def test_one_brain_carries_its_known_displacement_and_two_brains_none(label_file):
    path, _ = label_file
    one = SyntheticSpec(num_labels=7, max_displacement=2.0, label_maps=(str(path),), label_map_share=1.0,
                        label_map_spacing=(2.0, 2.0))
    two = SyntheticSpec(**{**vars(one), "mirror_share": 1.0})
    known = SyntheticSource(DataSpec(shape=SHAPE, synthetic=one), seed=0).sample(TRAIN, 0, 3)
    assert known.displacement is not None and known.displacement.shape == (1, 3, *SHAPE)
    assert torch.equal(known.fixed_labels, warp_labels(known.moving_labels, known.displacement))
    assert SyntheticSource(DataSpec(shape=SHAPE, synthetic=two), seed=0).sample(TRAIN, 0, 3).displacement is None
