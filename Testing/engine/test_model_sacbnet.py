"""SACB-Net (issue 10): shapes and gradients, deterministic clusters, the matching's known answer,
the per-cluster convolution against plain convolutions, and a checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shmoareg.checkpoints import load_checkpoint, save_checkpoint
from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.models.sacbnet import SACBNetConfig, cluster_convolution, kmeans, local_matching
from shmoareg.spatial import warp
from shmoareg.training.config import load_config
from tolerances import agree_up_to_float32_rounding
from torch_threads import one_torch_thread  # noqa: F401  (fixture)

SMALL = {"channels": [4, 8, 8], "block_levels": [2, 3], "clusters": 3, "kernel_hidden": 8, "bias_hidden": 8}
SHAPE = (16, 16, 24)
CONFIGS = Path(__file__).resolve().parents[2] / "Resources" / "configs"


def pair(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *shape, generator=generator), torch.rand(1, 1, *shape, generator=generator)


def small_model(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("sacbnet", {**SMALL, **changes})


def test_output_shape_maps_and_every_parameter_gets_a_gradient():
    model = small_model().train()
    output = model(*pair())
    assert output.displacement.shape == (1, 3, *SHAPE)
    specs = {spec.name: spec for spec in model.map_specs()}
    assert sorted(specs) == ["level2_cluster", "level3_cluster"]
    for name, spec in specs.items():
        assert spec.kind == "categorical" and spec.categories == ("cluster 1", "cluster 2", "cluster 3")
        factor = 2 ** (spec.level - 1)
        values = output.maps[name]
        assert values.shape == (1, 1, *(n // factor for n in SHAPE)) and values.dtype == torch.int64
        assert 1 <= values.min() and values.max() <= 3
    (output.displacement.pow(2).mean() * 1e6).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_untrained_network_predicts_almost_no_motion_and_default_size_is_matched():
    assert sum(p.numel() for p in build_model("sacbnet").parameters()) == 252_815
    model = small_model().eval()
    with torch.no_grad():
        assert model(*pair()).displacement.abs().max() < 0.05


def test_the_same_pair_gives_the_same_maps_and_field_alone_or_in_a_batch():
    model = small_model().eval()
    with torch.no_grad():
        first, second = model(*pair(3)), model(*pair(3))
        batch = model(*(torch.cat(images) for images in zip(pair(4), pair(3))))
    assert torch.equal(first.displacement, second.displacement)
    assert all(torch.equal(first.maps[name], second.maps[name]) for name in first.maps)
    assert all(torch.equal(batch.maps[name][1:], first.maps[name]) for name in first.maps)  # clusters per item


def blobs(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors ``(1, 2, 4, 5, 6)`` drawn around three centres of norms 1, 5 and 9 (in a shuffled layout),
    and each voxel's centre index."""
    centres = torch.tensor([[5.0, 0.0], [0.0, 1.0], [-9.0, 0.0]])  # norms 5, 1, 9
    which = torch.randint(0, 3, (120,), generator=generator)
    vectors = centres[which] + 0.1 * torch.randn(120, 2, generator=generator)
    return vectors.T.reshape(1, 2, 4, 5, 6), which


def test_kmeans_is_deterministic_ordered_by_centroid_norm_and_independent_of_voxel_order():
    generator = torch.Generator().manual_seed(1)
    vectors, which = blobs(generator)
    labels, centroids = kmeans(vectors, 3, 10, samples=1000)
    expected = torch.tensor([1, 0, 2])[which]  # centre of norm 1 -> cluster 0, norm 5 -> 1, norm 9 -> 2
    assert torch.equal(labels[0], expected)
    assert torch.all(centroids[0].norm(dim=1).diff() > 0)
    again, _ = kmeans(vectors, 3, 10, samples=1000)
    assert torch.equal(again, labels)
    permutation = torch.randperm(120, generator=generator)
    shuffled = vectors.flatten(2)[:, :, permutation].reshape(vectors.shape)
    shuffled_labels, shuffled_centroids = kmeans(shuffled, 3, 10, samples=1000)
    assert torch.equal(shuffled_labels[0], labels[0, permutation])
    assert agree_up_to_float32_rounding(shuffled_centroids, centroids)


def test_kmeans_fits_on_a_regular_subsample_then_assigns_every_voxel():
    vectors, _ = blobs(torch.Generator().manual_seed(2))
    labels, centroids = kmeans(vectors, 3, 10, samples=16)  # stride 2: 2 x 3 x 3 voxels fitted
    assert labels.shape == (1, 120) and labels.min() == 0 and labels.max() == 2
    distances = torch.cdist(vectors.flatten(2).transpose(1, 2), centroids)
    assert torch.equal(labels, distances.argmin(dim=2))


def test_cluster_convolution_equals_one_plain_convolution_per_cluster():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 5, 6, 7, generator=generator)
    weight = torch.randn(4, 3, 27, generator=generator)
    assignments = torch.randint(0, 3, (2, 5 * 6 * 7), generator=generator)
    scales, biases = torch.rand(2, 3, 27, generator=generator), torch.randn(2, 3, 4, generator=generator)
    output = cluster_convolution(features, weight, assignments, scales, biases)
    expected = torch.zeros_like(output)
    for b in range(2):
        for k in range(3):
            kernel = (weight * scales[b, k]).view(4, 3, 3, 3, 3)
            convolved = F.conv3d(features[b:b + 1], kernel, biases[b, k], padding=1)
            mask = (assignments[b] == k).view(1, 1, 5, 6, 7)
            expected[b:b + 1] += convolved * mask
    assert torch.allclose(output, expected, atol=1e-4)


@pytest.mark.parametrize("axis", [0, 1, 2])  # displacement channel x, y, z
def test_matching_finds_a_one_voxel_shift_with_the_sign_of_warp(axis):
    # Features of equal norms, so each voxel matches itself best (Cauchy-Schwarz), sharply.
    fixed = 12 * F.normalize(torch.randn(1, 16, 10, 11, 12, generator=torch.Generator().manual_seed(5)), dim=1)
    moving = torch.roll(fixed, shifts=1, dims=4 - axis)  # moving(p + e) = fixed(p)
    offset = local_matching(fixed, moving)
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    expected = torch.zeros(3)
    expected[axis] = 1.0
    assert torch.allclose(offset[inside], expected.view(1, 3, 1, 1, 1).expand_as(offset[inside]), atol=0.05)
    assert torch.allclose(warp(moving, offset)[inside], fixed[inside], atol=0.2)
    assert torch.allclose(local_matching(fixed, fixed)[inside], torch.zeros(1), atol=0.05)


def test_checkpoint_round_trip_gives_identical_output(tmp_path):
    model = small_model().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.match_gain.fill_(0.1)
    save_checkpoint(model, tmp_path / "sacb")
    loaded, metadata = load_checkpoint(tmp_path / "sacb")
    assert metadata["model"]["name"] == "sacbnet" and loaded.config == model.config
    fixed, moving = pair(6, (13, 9, 17))  # any size: padded inside
    with torch.no_grad():
        before, after = model(fixed, moving), loaded(fixed, moving)
    assert before.displacement.abs().max() > 0.01
    assert torch.equal(before.displacement, after.displacement)
    assert all(torch.equal(before.maps[name], after.maps[name]) for name in before.maps)


@pytest.mark.parametrize("config,message", [
    ({"channels": [4]}, "at least two"), ({"block_levels": [1]}, "block_levels"), ({"clusters": 0}, "clusters"),
    ({"kmeans_iterations": 0}, "kmeans_iterations"), ({"kmeans_samples": 2}, "kmeans_samples")])
def test_bad_configs_are_named(config, message):
    with pytest.raises(InputError, match=message):
        build_model("sacbnet", config)


def test_the_training_config_is_the_default_recipe_with_the_default_sacbnet():
    config, default = load_config(CONFIGS / "train_sacbnet_cpu.yaml"), load_config(CONFIGS / "train_default_cpu.yaml")
    assert config.model.name == "sacbnet" and build_model("sacbnet", config.model.config).config == SACBNetConfig()
    assert (config.data, config.loss, config.optimiser, config.validation) == (
        default.data, default.loss, default.optimiser, default.validation)
    assert config.output_dir == "runs/sacbnet_cpu" and config.init_from is None
