"""Known answers of the network share: the part of the final deformation the network's field accounts for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shmoareg.grid import Grid
from shmoareg.network_share import network_share

GRID = Grid((5, 4, 3), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
EVERYWHERE = np.ones(GRID.shape, dtype=bool)


def field(seed: int) -> torch.Tensor:
    return torch.randn((1, 3, *GRID.shape), generator=torch.Generator().manual_seed(seed))


def test_the_final_field_itself_accounts_for_all_of_it():
    final = field(0)
    assert network_share(final, final.clone(), GRID, EVERYWHERE) == 1.0


def test_a_zero_network_field_accounts_for_none_of_it():
    assert network_share(field(0), torch.zeros((1, 3, *GRID.shape)), GRID, EVERYWHERE) == 0.0


def test_half_the_final_field_accounts_for_three_quarters():
    final = field(0)
    assert network_share(final, final / 2, GRID, EVERYWHERE) == pytest.approx(0.75)


def test_only_the_foreground_counts():
    final, network = field(0), field(1)
    foreground = np.zeros(GRID.shape, dtype=np.uint8)
    foreground[:, :2] = 1
    network[..., :, :2, :] = final[..., :, :2, :] / 2  # elsewhere the network's field is unrelated
    assert network_share(final, network, GRID, foreground) == pytest.approx(0.75)
    assert network_share(final, network, GRID, EVERYWHERE) < 0.75


def test_a_network_field_further_off_than_zero_is_clipped_to_zero():
    final = field(0)
    assert network_share(final, -final, GRID, EVERYWHERE) == 0.0


def test_with_nothing_to_explain_a_zero_network_field_accounts_for_all_of_it():
    zero = torch.zeros((1, 3, *GRID.shape))
    assert network_share(zero, zero, GRID, EVERYWHERE) == 1.0
    assert network_share(zero, field(1), GRID, EVERYWHERE) == 0.0
    assert network_share(field(0), field(1), GRID, np.zeros(GRID.shape, dtype=bool)) == 1.0


def test_lengths_are_in_mm_on_an_anisotropic_turned_grid():
    """1 voxel along x is 1 mm and 0.1 voxel along z is 0.3 mm here: the residual is 0.09 of the final 1 mm^2."""
    grid = Grid((5, 4, 3), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    final, network = torch.zeros((1, 3, *grid.shape)), torch.zeros((1, 3, *grid.shape))
    final[:, 0] = network[:, 0] = 1.0
    network[:, 2] = 0.1
    assert network_share(final, network, grid, np.ones(grid.shape, dtype=bool)) == pytest.approx(0.91)
