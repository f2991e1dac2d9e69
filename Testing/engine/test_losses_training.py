"""Known answers of the training losses: MIND-SSC (multi-modal similarity) and soft Dice."""

from __future__ import annotations

import pytest
import torch

from shmoareg.losses import MINDSSC, mind_ssc, mse, soft_dice_loss
from shmoareg.synthetic import synthetic_pair
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return synthetic_pair((32, 32, 32), seed=3, num_labels=8).fixed_image


def test_mind_descriptor_shape_range_and_identity(image):
    descriptor = mind_ssc(image)
    assert descriptor.shape == (1, 12, 32, 32, 32)
    assert descriptor.min() > 0 and torch.allclose(descriptor.amax(dim=1), torch.ones(1, 32, 32, 32))
    assert MINDSSC()(image, image).item() == 0.0


def test_mind_ignores_inversion_and_affine_intensity_maps_but_not_motion(image):
    loss = MINDSSC()
    shifted = torch.roll(image, 2, dims=4)
    assert loss(1.0 - image, image).item() < 1e-9
    assert loss(0.3 * image + 0.5, image).item() < 1e-9
    assert loss(shifted, image).item() > 0.05


def test_mind_finds_alignment_under_a_nonlinear_inverted_contrast_where_mse_does_not(image):
    """``g(x) = (1 - x)^2``: MIND is lowest when aligned and grows with the shift; MSE is highest when aligned."""
    loss = MINDSSC()
    mind_values, mse_values = [], []
    for shift in range(5):
        other = (1.0 - torch.roll(image, shift, dims=4)) ** 2
        mind_values.append(loss(other, image).item())
        mse_values.append(mse(other, image).item())
    assert mind_values == sorted(mind_values) and mind_values[0] < 0.1 * mind_values[1]
    assert mse_values == sorted(mse_values, reverse=True)


def test_soft_dice_known_answers():
    labels = torch.zeros(1, 3, 4, 4, 4)
    labels[:, 0, :2], labels[:, 1, 2:], labels[:, 2, :, :1] = 1, 1, 1
    assert soft_dice_loss(labels, labels).item() == pytest.approx(0.0, abs=1e-6)
    disjoint = torch.zeros(1, 1, 4, 4, 4)
    disjoint[..., :2] = 1
    assert soft_dice_loss(disjoint, 1 - disjoint).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.zeros(1, 1, 4, 4, 4)
    half[..., :1] = 1  # 16 of disjoint's 32 voxels: Dice 2 * 16 / (16 + 32) = 2/3
    assert soft_dice_loss(half, disjoint).item() == pytest.approx(1 / 3, abs=1e-5)
    empty = torch.zeros(1, 1, 4, 4, 4)
    assert soft_dice_loss(empty, empty).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_has_gradients_for_soft_inputs():
    soft = torch.full((1, 2, 4, 4, 4), 0.5, requires_grad=True)
    target = torch.zeros(1, 2, 4, 4, 4)
    target[:, 0, :2], target[:, 1, 2:] = 1, 1
    soft_dice_loss(soft, target).backward()
    assert soft.grad is not None and (soft.grad[target > 0] < 0).all()
