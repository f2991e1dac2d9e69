"""The faster forms of the similarity losses give the numbers of their plain forms (issue 24, point 6).

Each plain form is written out here as the engine had it: the box mean as a zero pad and a 1D average pool per
axis, MIND-SSC with one replicate pad per shifted copy and one box mean per channel, and the MIND-SSC similarity
warping the moving descriptor in the ordinary (channels first) memory layout. Loss and gradient must agree to
float32 rounding (``tolerances``).
"""

from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

from shmoareg import losses
from shmoareg.losses import LocalNCC, _ssc_pairs, box_mean, mind_ssc, weighted_mean
from shmoareg.optimise import MIND_DILATION, SIMILARITY_SCALE, OptimisationSettings, similarity_loss
from shmoareg.spatial import warp
from shmoareg.synthetic import synthetic_pair
from tolerances import agree_up_to_float32_rounding
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread


def pooled_box_mean(volumes: torch.Tensor, window: int) -> torch.Tensor:
    """The plain box mean: per axis, a zero pad and a 1D average pool."""
    half = window // 2
    for axis, kernel in enumerate(((window, 1, 1), (1, window, 1), (1, 1, window))):
        padding = [0, 0] * 3
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = half  # F.pad lists the last axis first
        volumes = F.avg_pool3d(F.pad(volumes, padding), kernel, stride=1)
    return volumes


def plain_mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2, epsilon: float = 1e-6) -> torch.Tensor:
    """The plain MIND-SSC descriptor: each shifted copy padded on its own, each channel's box mean on its own."""
    def shift(offset: tuple[int, int, int]) -> torch.Tensor:
        padded = F.pad(image, [dilation] * 6, mode="replicate")
        z, y, x = image.shape[2:]
        dz, dy, dx = (dilation + o for o in offset)
        return padded[:, :, dz:dz + z, dy:dy + y, dx:dx + x]

    distances = torch.cat([pooled_box_mean((shift(a) - shift(b)) ** 2, 2 * radius + 1)
                           for a, b in _ssc_pairs(dilation)], dim=1)
    variance = distances.mean(dim=1, keepdim=True)
    floor = epsilon + 1e-3 * variance.mean(dim=(2, 3, 4), keepdim=True)
    descriptor = torch.exp(-distances / torch.maximum(variance, floor))
    return descriptor / descriptor.amax(dim=1, keepdim=True)


def output_and_gradient(function: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor,
                        upstream: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``function(leaf)`` and the gradient at ``leaf`` of it (a scalar) or of its sum weighted by ``upstream``."""
    leaf = leaf.detach().clone().requires_grad_(True)
    output = function(leaf)
    (output if upstream is None else (output * upstream).sum()).backward()
    return output.detach(), leaf.grad


def assert_same_up_to_rounding(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    for value, expected_value in zip(actual, expected):
        assert agree_up_to_float32_rounding(value, expected_value)


@pytest.fixture(scope="module")
def case():
    return synthetic_pair((24, 28, 20), seed=4, max_displacement=2.0)


@pytest.mark.parametrize("window, shape", [(3, (9, 10, 11)), (5, (9, 10, 11)), (9, (3, 12, 5)), (3, (1, 2, 6))])
def test_box_mean_and_its_gradient_are_the_pooled_ones(window, shape):
    generator = torch.Generator().manual_seed(window)
    volumes = torch.rand(2, 3, *shape, generator=generator)
    upstream = torch.randn(2, 3, *shape, generator=generator)
    assert_same_up_to_rounding(output_and_gradient(lambda v: box_mean(v, window), volumes, upstream),
                               output_and_gradient(lambda v: pooled_box_mean(v, window), volumes, upstream))


def test_local_ncc_and_its_gradient_are_those_of_pooled_box_means(case, monkeypatch):
    def ncc(warped: torch.Tensor) -> torch.Tensor:
        return LocalNCC(5)(warped, case.fixed_image)

    fast = output_and_gradient(ncc, case.moving_image)
    monkeypatch.setattr(losses, "box_mean", pooled_box_mean)
    assert_same_up_to_rounding(fast, output_and_gradient(ncc, case.moving_image))


@pytest.mark.parametrize("dilation", [1, 2])
def test_mind_ssc_and_its_gradient_are_those_of_the_plain_descriptor(case, dilation):
    """The descriptors of the pair optimisation (constants) and of the training loss (differentiated)."""
    upstream = torch.randn((1, 12, *case.fixed_image.shape[2:]), generator=torch.Generator().manual_seed(dilation))
    assert_same_up_to_rounding(
        output_and_gradient(lambda image: mind_ssc(image, dilation=dilation), case.fixed_image, upstream),
        output_and_gradient(lambda image: plain_mind_ssc(image, dilation=dilation), case.fixed_image, upstream))


def test_the_mind_similarity_gives_the_loss_and_gradient_of_the_plain_descriptors(case):
    """Fixed and moving descriptors once per level, the moving one warped from the channels-last layout."""
    fixed, moving = case.fixed_image, case.moving_image
    weight = (fixed > 0.05).float()
    similarity = similarity_loss(OptimisationSettings(similarity="mind"), fixed, moving)
    fixed_descriptor, moving_descriptor = (plain_mind_ssc(image, dilation=MIND_DILATION) for image in (fixed, moving))

    def plain(displacement: torch.Tensor) -> torch.Tensor:
        warped = warp(moving_descriptor, displacement)
        return SIMILARITY_SCALE["mind"] * weighted_mean((warped - fixed_descriptor).square().mean(dim=1, keepdim=True),
                                                        weight)

    displacement = 0.5 * case.displacement
    assert_same_up_to_rounding(output_and_gradient(lambda field: similarity(field, weight), displacement),
                               output_and_gradient(plain, displacement))
