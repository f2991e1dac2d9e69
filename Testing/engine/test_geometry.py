"""The network grid, the voxel <-> physical field conversion and the written transform file."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import rotation_direction
from shmoareg.fields import (add_affine_displacement, affine_displacement, displacement_image,
                             displacement_transform, extension_padding, jacobian_image, physical_from_voxel,
                             sampled_field, total_displacement, transform_lattice)
from shmoareg.grid import Grid, auto_spacing, foreground_box, from_array, network_grid, resample

DIRECTION = rotation_direction((0.2, -0.1, 0.3))
FIXED = Grid((30, 25, 20), (1.2, 0.8, 2.5), (10.0, -5.0, 3.0), DIRECTION)


def test_network_grid_is_isotropic_padded_centred_and_keeps_the_direction():
    grid = network_grid(FIXED.reference_image(), 1.0)
    assert all(n % 16 == 0 for n in grid.size)
    assert grid.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(grid.direction, DIRECTION)
    fixed_corners = FIXED.physical_points()[[0, -1], [0, -1], [0, -1]]
    network_points = grid.physical_points()
    assert np.allclose(fixed_corners.mean(axis=0), network_points[[0, -1], [0, -1], [0, -1]].mean(axis=0))
    extent_needed = (np.asarray(FIXED.size) - 1) * np.asarray(FIXED.spacing)
    assert np.all((np.asarray(grid.size) - 1) * 1.0 >= extent_needed - 1e-6)


def test_a_coarsened_grids_voxel_centres_are_the_means_of_the_voxels_they_cover():
    grid = network_grid(FIXED.reference_image(), 1.5)
    coarse = grid.coarsened(2, tuple(n // 2 for n in grid.size))
    fine = grid.physical_points()
    z, y, x = coarse.shape
    means = fine.reshape(z, 2, y, 2, x, 2, 3).mean(axis=(1, 3, 5))
    assert np.allclose(coarse.physical_points(), means) and coarse.spacing == (3.0, 3.0, 3.0)


def test_network_grid_on_a_foreground_box_covers_the_box_and_its_margin():
    mask = sitk.Image(FIXED.size, sitk.sitkUInt8)
    mask.SetSpacing(FIXED.spacing)
    mask.SetOrigin(FIXED.origin)
    mask.SetDirection(FIXED.direction)
    mask[10:15, 5:9, 4:7] = 1
    lower, upper = foreground_box(mask, margin_mm=2.5)
    assert list(lower) == [10 - 3, 5 - 4, 4 - 1] and list(upper) == [14 + 3, 8 + 4, 6 + 1]
    grid = network_grid(mask, 1.0, region=(lower, upper))
    full = network_grid(mask, 1.0)
    assert all(n % 16 == 0 for n in grid.size) and np.prod(grid.size) < np.prod(full.size)
    corners = [mask.TransformIndexToPhysicalPoint([int(v) for v in corner]) for corner in (lower, upper)]
    reference = grid.reference_image()
    for corner in corners:
        index = np.asarray(reference.TransformPhysicalPointToContinuousIndex(corner))
        assert np.all(index >= -0.5) and np.all(index <= np.asarray(grid.size) - 0.5)
    assert foreground_box(mask * 0, margin_mm=2.5) is None


def test_auto_spacing_respects_the_voxel_budget():
    image = Grid((200, 200, 200), (1.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)).reference_image()
    assert auto_spacing(image, 10**9) == pytest.approx(1.0)
    coarse = auto_spacing(image, 10**6)
    assert coarse == pytest.approx(2.0, rel=0.01)


def test_physical_from_voxel_applies_spacing_then_direction():
    field = torch.zeros(1, 3, *FIXED.shape)
    field[:, 0], field[:, 2] = 2.0, -1.0
    physical = physical_from_voxel(field, FIXED)
    matrix = np.asarray(DIRECTION).reshape(3, 3)
    expected = matrix @ np.array([2.0 * 1.2, 0.0, -1.0 * 2.5])
    assert np.allclose(physical[3, 4, 5], expected)


def test_affine_displacement_matches_itk_in_a_rotated_grid():
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.05, 0.1, 0.0, -0.08, 0.97, 0.05, 0.02, 0.0, 1.1])
    affine.SetTranslation([3.0, -2.0, 1.5])
    affine.SetCenter([10.0, -4.0, 7.0])
    expected = sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
        affine, sitk.sitkVectorFloat64, FIXED.size, FIXED.origin, FIXED.spacing, FIXED.direction))
    assert np.allclose(affine_displacement(affine, FIXED), expected, atol=1e-9)
    field = np.full((*FIXED.shape, 3), 2.5)
    assert add_affine_displacement(field, affine, FIXED) is field  # in place, no copy of a 1 mm field
    assert np.allclose(field, expected + 2.5, atol=1e-9)


def test_total_displacement_bakes_in_the_affine():
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.1, 0, 0, 0, 1, 0, 0, 0, 0.9])
    affine.SetCenter((1.0, 2.0, 3.0))
    affine.SetTranslation((3.0, -2.0, 1.0))
    field = total_displacement(None, None, FIXED, affine)
    points = FIXED.physical_points()
    for index in [(0, 0, 0), (5, 7, 9), (19, 24, 29)]:
        assert np.allclose(points[index] + field[index], affine.TransformPoint(points[index].tolist()))


def test_total_displacement_composes_network_field_then_affine():
    network = network_grid(FIXED.reference_image(), 1.0)
    voxel = torch.zeros(1, 3, *network.shape)
    voxel[:, 1] = 1.5  # 1.5 mm along the grid's second axis (spacing 1)
    affine = sitk.AffineTransform(3)
    affine.SetTranslation((0.0, 0.0, 4.0))
    field = total_displacement(voxel, network, FIXED, affine)
    shift = np.asarray(DIRECTION).reshape(3, 3) @ np.array([0.0, 1.5, 0.0]) + np.array([0.0, 0.0, 4.0])
    assert np.allclose(field, shift, atol=1e-4)


def test_the_transform_on_its_lattice_is_the_field_at_every_fixed_voxel():
    """The written transform (on the working grid's points, extended over the fixed image) gives, at each fixed
    voxel inside the working grid, the field computed on the fixed grid itself: the network field interpolated
    linearly, then the affine; and the lattice covers every fixed voxel."""
    fixed = Grid((40, 36, 28), (1.0, 1.0, 1.3), (10.0, -5.0, 3.0), DIRECTION)
    working = network_grid(fixed.reference_image(), 1.7, region=(np.array([8, 6, 5]), np.array([30, 28, 20])))
    lattice = transform_lattice(working, fixed)
    offset = np.linalg.solve(working.direction_matrix * 1.7, np.subtract(lattice.origin, working.origin))
    assert np.allclose(offset, np.round(offset), atol=1e-9) and (offset <= 0).all()  # the working grid's points
    assert all(a >= b for a, b in zip(lattice.size, working.size)) and lattice.spacing == working.spacing
    voxel = torch.from_numpy(np.random.default_rng(1).normal(0, 1.0, (1, 3, *working.shape))).float()
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.05, 0.02, 0, -0.03, 0.97, 0.01, 0, 0.04, 1.02])
    affine.SetTranslation((2.0, -1.0, 3.0))
    transform = displacement_transform(total_displacement(voxel, working, lattice, affine), lattice)
    on_fixed = sitk.GetArrayFromImage(sampled_field(transform, fixed.reference_image()))
    expected = total_displacement(voxel, working, fixed, affine)
    indices = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.size], indexing="ij"), -1).reshape(-1, 3)
    points = np.asarray(fixed.origin) + indices @ (fixed.direction_matrix * np.asarray(fixed.spacing)).T
    in_lattice = (np.linalg.solve(lattice.direction_matrix * 1.7, (points - lattice.origin).T).T)
    assert (in_lattice > -1e-9).all() and (in_lattice < np.asarray(lattice.size) - 1 + 1e-9).all()
    in_working = in_lattice + offset
    inside = ((in_working >= 0) & (in_working <= np.asarray(working.size) - 1)).all(axis=1)
    inside = inside.reshape(fixed.size[0], fixed.size[1], fixed.size[2]).transpose(2, 1, 0)
    assert inside.mean() > 0.2 and not inside.all()  # the check covers voxels inside, and some lie outside
    assert np.abs(on_fixed[inside] - expected[inside]).max() < 1e-5
    assert np.prod(lattice.size) < 0.5 * np.prod(fixed.size)


def test_written_transform_round_trips_through_itk_files(tmp_path):
    rng = np.random.default_rng(0)
    field = rng.normal(0, 1.5, (*FIXED.shape, 3))
    transform = displacement_transform(field, FIXED)
    sitk.WriteTransform(transform, str(tmp_path / "transform.h5"))
    read = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    points = FIXED.physical_points()
    for index in [(1, 2, 3), (10, 20, 15)]:
        assert np.allclose(read.TransformPoint(points[index].tolist()), points[index] + field[index], atol=1e-6)
    sitk.WriteImage(displacement_image(field, FIXED), str(tmp_path / "field.nii.gz"))
    back = sitk.ReadImage(str(tmp_path / "field.nii.gz"))
    assert back.GetNumberOfComponentsPerPixel() == 3
    assert np.allclose(sitk.GetArrayFromImage(back), field, atol=1e-6)
    assert np.allclose(back.GetDirection(), DIRECTION, atol=1e-5)


def test_jacobian_image_of_a_scaling_is_its_determinant():
    points = FIXED.physical_points()
    field = points @ (np.diag([1.2, 0.9, 1.1]) - np.eye(3)).T
    jacobian = sitk.GetArrayFromImage(jacobian_image(field, FIXED))
    assert np.allclose(jacobian, 1.2 * 0.9 * 1.1, atol=1e-4)


def test_on_its_lattice_the_field_is_the_working_grids_values_padded_with_its_edges():
    """The lattice path (edge padding) gives what linear resampling with border extension gives, and a grid that
    is not a whole-voxel extension of the working grid takes the resampling path."""
    fixed = Grid((40, 36, 28), (1.0, 1.0, 1.3), (10.0, -5.0, 3.0), DIRECTION)
    working = network_grid(fixed.reference_image(), 1.7, region=(np.array([8, 6, 5]), np.array([30, 28, 20])))
    lattice = transform_lattice(working, fixed)
    padding = extension_padding(working, lattice)
    assert padding is not None and any(before > 0 for before, _ in padding) and any(after > 0 for _, after in padding)
    shifted = Grid(lattice.size, lattice.spacing, tuple(np.add(lattice.origin, 0.4)), lattice.direction)
    assert extension_padding(working, shifted) is None and extension_padding(working, fixed) is None
    voxel = torch.from_numpy(np.random.default_rng(2).normal(0, 1.0, (1, 3, *working.shape))).float()
    padded = total_displacement(voxel, working, lattice, None)
    vectors = physical_from_voxel(voxel, working)
    resampled = sitk.GetArrayFromImage(resample(from_array(vectors, working, is_vector=True), lattice,
                                                sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, extrapolate=True))
    assert np.abs(padded - resampled).max() < 1e-9
