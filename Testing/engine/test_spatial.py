"""Known answers for warp, compose, integrate, resize and the Jacobian determinant."""

import math

import pytest
import torch

from shmoareg.spatial import (central_difference, compose, identity_grid, integrate_velocity, jacobian_determinant, resize_field,
                              warp, warp_labels)

SHAPE = (6, 7, 8)  # (Z, Y, X)


def constant_field(x: float = 0.0, y: float = 0.0, z: float = 0.0, shape=SHAPE) -> torch.Tensor:
    field = torch.zeros(1, 3, *shape)
    field[:, 0], field[:, 1], field[:, 2] = x, y, z
    return field


def ramp() -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in SHAPE), indexing="ij")
    return (100 * z + 10 * y + x)[None, None]


@pytest.mark.parametrize("axis,shift,dim", [(0, 1.0, 4), (1, 2.0, 3), (2, 1.0, 2)])
def test_integer_shift_samples_the_neighbour_along_the_right_axis(axis, shift, dim):
    image = ramp()
    field = constant_field(**{"xyz"[axis]: shift})
    warped = warp(image, field)
    n = SHAPE[dim - 2] - int(shift)
    expected = image.narrow(dim, int(shift), n)
    assert torch.allclose(warped.narrow(dim, 0, n), expected)


def test_half_voxel_shift_interpolates_linearly():
    image = ramp()
    warped = warp(image, constant_field(x=0.5))
    assert torch.allclose(warped[..., :-1], image[..., :-1] + 0.5)


def test_nearest_label_warp_keeps_integer_labels():
    labels = (ramp() % 3).long()
    warped = warp_labels(labels, constant_field(y=1.0), method="nearest")
    assert warped.dtype == labels.dtype
    assert torch.equal(warped[..., :-1, :], labels[..., 1:, :])


def test_per_label_warp_moves_a_block_and_keeps_label_values():
    labels = torch.zeros(1, 1, 10, 10, 10, dtype=torch.long)
    labels[..., 3:6, 3:6, 4:7] = 7
    warped = warp_labels(labels, constant_field(x=2.0, shape=(10, 10, 10)))
    assert set(torch.unique(warped).tolist()) == {0, 7}
    assert torch.equal(warped[..., 3:6, 3:6, 2:5], torch.full((1, 1, 3, 3, 3), 7))
    assert int((warped == 7).sum()) == 27


def test_compose_of_translations_adds_them():
    composed = compose(constant_field(x=1.0, y=0.5), constant_field(z=2.0, x=-0.25))
    assert torch.allclose(composed, constant_field(x=0.75, y=0.5, z=2.0))


def test_compose_evaluates_outer_at_the_moved_point():
    # outer(p) = 0.1 * x(p) along x; inner = +2 along x; so u(p) = 2 + 0.1 * (x + 2).
    grid = identity_grid(SHAPE)
    outer = torch.zeros(1, 3, *SHAPE)
    outer[:, 0] = 0.1 * grid[:, 0]
    composed = compose(outer, constant_field(x=2.0))
    x = grid[0, 0, :, :, :-2]
    assert torch.allclose(composed[0, 0, :, :, :-2], 2.0 + 0.1 * (x + 2.0), atol=1e-5)


def test_integrating_a_constant_velocity_gives_the_same_translation():
    velocity = constant_field(x=1.5, y=-0.5, z=0.25)
    assert torch.allclose(integrate_velocity(velocity, 7), velocity, atol=1e-5)


def test_integrating_a_linear_velocity_gives_the_exponential():
    # v(p) = a (x - c) along x has flow x(t) = c + (x - c) e^{a t}: displacement (e^a - 1)(x - c).
    shape, a = (4, 4, 41), 0.3
    grid = identity_grid(shape)
    centre = 20.0
    velocity = torch.zeros(1, 3, *shape)
    velocity[:, 0] = a * (grid[:, 0] - centre)
    displacement = integrate_velocity(velocity, 8)
    expected = (math.exp(a) - 1.0) * (grid[0, 0] - centre)
    interior = slice(12, 29)  # points whose path stays inside the grid
    assert torch.allclose(displacement[0, 0, ..., interior], expected[..., interior], atol=0.02)


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_central_difference_is_torch_gradient_border_included(dim):
    field = torch.randn(1, 3, 5, 6, 7, dtype=torch.float64)
    assert torch.equal(central_difference(field, dim), torch.gradient(field, dim=dim)[0])


def test_central_difference_of_a_quadratic_is_exact_inside_and_one_sided_at_the_border():
    x = torch.arange(6.0).view(1, 1, 1, 1, 6)
    assert torch.equal(central_difference(x ** 2, 4).flatten(), torch.tensor([1.0, 2.0, 4.0, 6.0, 8.0, 9.0]))
    assert torch.equal(central_difference(x[..., :1], 4), torch.zeros(1, 1, 1, 1, 1))  # one voxel: no slope


def test_jacobian_of_an_affine_field_is_its_determinant():
    matrix = torch.tensor([[1.1, 0.2, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 1.2]])
    grid = identity_grid(SHAPE)
    points = grid[0].reshape(3, -1)
    field = ((matrix - torch.eye(3)) @ points).reshape(1, 3, *SHAPE)
    det = jacobian_determinant(field)
    assert torch.allclose(det, torch.full_like(det, float(torch.linalg.det(matrix))), atol=1e-5)


def test_jacobian_detects_folding():
    grid = identity_grid(SHAPE)
    field = torch.zeros(1, 3, *SHAPE)
    field[:, 0] = -2.0 * grid[:, 0]  # x -> -x: orientation reversed
    assert (jacobian_determinant(field) < 0).all()


def test_resize_field_keeps_the_physical_displacement():
    field = constant_field(x=2.0, y=1.0, z=-1.0, shape=(4, 8, 6))
    resized = resize_field(field, (8, 16, 18))
    assert torch.allclose(resized[:, 0], torch.full((1, 8, 16, 18), 6.0))
    assert torch.allclose(resized[:, 1], torch.full((1, 8, 16, 18), 2.0))
    assert torch.allclose(resized[:, 2], torch.full((1, 8, 16, 18), -2.0))


def test_resize_field_matches_average_pooling_geometry():
    # A linear field u(x) = 0.1 * x on 16 voxels; pooled by 2 its value at coarse voxel i is the
    # mean of fine voxels 2i and 2i + 1, in coarse units: 0.1 * (2i + 0.5) / 2. Upsampling it back
    # must give the fine field again (away from the clamped border voxels).
    fine = torch.zeros(1, 3, 4, 4, 16)
    fine[:, 0] = 0.1 * identity_grid((4, 4, 16))[:, 0]
    coarse = torch.nn.functional.avg_pool3d(fine, (1, 1, 2)) / torch.tensor([2.0, 1.0, 1.0]).view(1, 3, 1, 1, 1)
    back = resize_field(coarse, (4, 4, 16))
    assert torch.allclose(back[0, 0, ..., 1:-1], fine[0, 0, ..., 1:-1], atol=1e-5)
