"""The mirror and swap ensembles of a network's prediction (shmoareg.ensemble): known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shmoareg.ensemble import SwapEnsemble, ensemble_averaged, flip_averaged, mirrored_back, swap_averaged
from shmoareg.models.base import ModelOutput
from shmoareg.spatial import warp

SHAPE = (1, 1, 6, 7, 8)


def constant(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """A 'network' that ignores its images: (1, 2, 3) voxels everywhere."""
    return torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1).expand(1, 3, *fixed.shape[2:]).clone()


def gradients(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """A mirror-equivariant 'network': the central differences of ``moving`` along x, y and z."""
    kernel = torch.tensor([-0.5, 0.0, 0.5])
    parts = [F.conv3d(moving, kernel.view(1, 1, *[3 if d == dim else 1 for d in range(3)]),
                      padding=[1 if d == dim else 0 for d in range(3)]) for dim in (2, 1, 0)]  # x, y, z
    return torch.cat(parts, dim=1)


def difference_gradients(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """An antisymmetric, mirror-equivariant 'network': the central differences of ``moving - fixed``."""
    return gradients(fixed, moving - fixed)


def test_a_field_mirrored_and_mirrored_back_is_unchanged():
    field = torch.randn(1, 3, *SHAPE[2:])
    for axis in range(3):
        assert torch.equal(mirrored_back(mirrored_back(field, axis), axis), field)


def test_mirrored_back_moves_the_mirrored_images_points_where_the_unmirrored_field_does():
    moving = torch.randn(SHAPE)
    field = torch.randn(1, 3, *SHAPE[2:]) * 0.3
    for axis in range(3):
        dimension = 4 - axis
        mirrored_field = mirrored_back(field, axis)  # the same motion, seen in the mirrored images
        assert torch.allclose(warp(moving.flip(dimension), mirrored_field).flip(dimension), warp(moving, field),
                              atol=1e-5)


@pytest.mark.parametrize("flips, expected", [(0, (1.0, 2.0, 3.0)), (1, (0.0, 2.0, 3.0)), (3, (0.5, 1.0, 1.5))])
def test_a_network_blind_to_mirrors_is_averaged_with_its_mirror_images(flips, expected):
    images = torch.rand(SHAPE), torch.rand(SHAPE)
    averaged = flip_averaged(constant, *images, flips, constant(*images))
    assert torch.allclose(averaged, torch.tensor(expected).view(1, 3, 1, 1, 1).expand_as(averaged))


def test_a_mirror_equivariant_network_keeps_its_field():
    fixed, moving = torch.rand(SHAPE), torch.rand(SHAPE)
    plain = gradients(fixed, moving)
    assert torch.allclose(flip_averaged(gradients, fixed, moving, 3, plain), plain, atol=1e-6)


def test_more_flips_than_axes_are_refused():
    images = torch.rand(SHAPE), torch.rand(SHAPE)
    with pytest.raises(ValueError, match="between 0 and 3"):
        flip_averaged(constant, *images, 4, constant(*images))


@pytest.mark.parametrize("flips", [0, 1, 3])
def test_the_swap_cancels_a_field_that_does_not_depend_on_which_image_is_fixed(flips):
    images = torch.rand(SHAPE), torch.rand(SHAPE)
    assert torch.allclose(swap_averaged(constant, *images, flips, constant(*images)), torch.zeros(1, 3, *SHAPE[2:]))


@pytest.mark.parametrize("flips", [0, 1, 3])
def test_an_antisymmetric_network_keeps_its_field_and_loses_a_constant_drift(flips):
    fixed, moving = torch.rand(SHAPE), torch.rand(SHAPE)
    drifting = lambda f, m: difference_gradients(f, m) + constant(f, m)  # noqa: E731
    plain = difference_gradients(fixed, moving)
    assert plain.abs().max() > 0.1
    assert torch.allclose(swap_averaged(drifting, fixed, moving, flips, drifting(fixed, moving)), plain, atol=1e-6)


@pytest.mark.parametrize("swap, expected", [(False, (0.0, 2.0, 3.0)), (True, (0.0, 0.0, 0.0))])
def test_registers_ensemble_is_the_mirror_one_wrapped_in_the_swap_when_asked(swap, expected):
    images = torch.rand(SHAPE), torch.rand(SHAPE)
    averaged = ensemble_averaged(constant, *images, 1, swap, constant(*images))
    assert torch.allclose(averaged, torch.tensor(expected).view(1, 3, 1, 1, 1).expand_as(averaged))


class DriftingNetwork(torch.nn.Module):
    """A network whose field is the gradient of ``moving - fixed`` plus a drift of (1, 2, 3) voxels, with an
    auxiliary loss and a map that tell which pass made them."""

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        drift = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)
        return ModelOutput(difference_gradients(fixed, moving) + drift, auxiliary_loss=moving.mean(),
                           maps={"moving": moving.clone()})


def test_the_swap_ensemble_as_a_network_is_registers_swap_ensemble():
    fixed, moving = torch.rand(SHAPE), torch.rand(SHAPE)
    network = DriftingNetwork()
    output = SwapEnsemble(network)(fixed, moving)
    predict = lambda f, m: network(f, m).displacement  # noqa: E731
    assert torch.equal(output.displacement, ensemble_averaged(predict, fixed, moving, 0, True, predict(fixed, moving)))
    assert torch.allclose(output.displacement, difference_gradients(fixed, moving), atol=1e-6)  # the drift cancels
    assert float(output.auxiliary_loss) == pytest.approx(float((fixed.mean() + moving.mean()) / 2))
    assert torch.equal(output.maps["moving"], moving)  # the plain pass's maps
