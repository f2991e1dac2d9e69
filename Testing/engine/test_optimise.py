"""Pair optimisation seeded by a network's field: the seed is used, and its roughness is smoothed away."""

from __future__ import annotations

import torch

from shmoareg.optimise import Adam, OptimisationSettings, descend, improves_similarity, optimise_displacement
from shmoareg.synthetic import synthetic_pair
from torch_threads import one_torch_thread  # noqa: F401 (fixture)

SHAPE = (32, 32, 32)
INTERIOR = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(4, -4))


def mean_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean end-point error in voxels away from the border."""
    return float((estimate - truth)[INTERIOR].norm(dim=1).mean())


def roughness(field: torch.Tensor) -> float:
    """Mean squared difference between neighbouring voxels, over the three axes."""
    return float(sum(torch.diff(field, dim=axis).pow(2).mean() for axis in (2, 3, 4)))


def pair():
    case = synthetic_pair(SHAPE, seed=5, max_displacement=3.0)
    return case.fixed_image, case.moving_image, case.displacement


def test_a_seed_field_is_where_the_optimisation_starts():
    fixed, moving, truth = pair()
    # Adam's first steps move every parameter by about the learning rate, whatever the gradient.
    settings = OptimisationSettings(steps=3, levels=(1,), diffeomorphic=False, learning_rate=0.01)
    cold = optimise_displacement(fixed, moving, settings)
    warm = optimise_displacement(fixed, moving, settings, initial=truth)
    assert mean_error(warm, truth) < 0.3 * mean_error(cold, truth)


def test_the_smoothness_term_acts_on_the_seed_too():
    fixed, moving, truth = pair()
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    rough = truth + noise
    refined = optimise_displacement(fixed, moving, OptimisationSettings(steps=20, levels=(2, 1)), initial=rough)
    assert roughness(refined) < 0.1 * roughness(rough)
    assert mean_error(refined, truth) < 0.5 * mean_error(rough, truth)


def test_adam_matches_torch_optim_adam():
    target = torch.linspace(-2.0, 3.0, 12).reshape(3, 4)
    ours, theirs = torch.zeros(3, 4, requires_grad=True), torch.zeros(3, 4, requires_grad=True)
    optimiser, reference = Adam(ours, 0.2), torch.optim.Adam([theirs], lr=0.2)
    for _ in range(15):
        ((ours - target) ** 4).sum().backward()
        optimiser.step()
        reference.zero_grad()
        ((theirs - target) ** 4).sum().backward()
        reference.step()
        assert ours.grad is None
    assert torch.allclose(ours, theirs, atol=1e-6) and not torch.allclose(ours, torch.zeros(3, 4))


def test_an_image_registered_to_itself_does_not_move():
    """An Adam step is about the learning rate whatever the gradient: at the optimum, where the gradient is float
    rounding, it moved this phantom against itself by 0.5 voxel (a brain by 0.7-1.2)."""
    fixed = pair()[0]
    for diffeomorphic in (True, False):
        settings = OptimisationSettings(steps=50, diffeomorphic=diffeomorphic)
        assert float(optimise_displacement(fixed, fixed.clone(), settings).norm(dim=1).max()) < 0.05


def test_descent_never_ends_above_where_it_started():
    """A minimum whose gradient is rounding-sized (1e-8, Adam's eps): Adam's first step kicks it by half the learning
    rate; a step that raises the objective is taken back with half the learning rate."""
    def objective(x: torch.Tensor) -> torch.Tensor:
        return x.square().sum() + 1e-8 * x.sum()  # minimum at -5e-9

    start = torch.zeros(3, 4)
    assert float(descend(start, objective, 0.2, 20).abs().max()) < 1e-4
    target = torch.linspace(-2.0, 3.0, 12).reshape(3, 4)  # far from the minimum it still descends as Adam does
    far = descend(start, lambda x: (x - target).square().sum(), 0.2, 60)
    assert float((far - target).abs().max()) < 0.1


def test_only_a_field_that_matches_the_pair_better_than_none_improves_it():
    fixed, moving, truth = pair()
    settings = OptimisationSettings()
    assert improves_similarity(fixed, moving, settings, truth)
    assert not improves_similarity(fixed, fixed.clone(), settings, truth)  # an image and itself
    assert not improves_similarity(fixed, moving, settings, -truth)
