"""RMAn (issue 10, point 4): shared weights across recursions, composition of residuals, its maps, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from shmoareg.checkpoints import load_checkpoint, save_checkpoint
from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.models import rman
from shmoareg.models.rman import RMAnConfig, entropy_map_name, residual_map_name
from shmoareg.spatial import compose, identity_grid, warp
from tolerances import agree_up_to_float32_rounding
from torch_threads import one_torch_thread  # noqa: F401  (fixture)

TINY = {"channels": [4, 8, 8, 8], "attention_levels": [3, 4], "heads": 2, "head_dim": 4, "recursions": 3}
SHAPE = (16, 16, 16)


def tiny(**changes) -> rman.RMAnNet:
    torch.manual_seed(0)
    return build_model("rman", {**TINY, **changes}).eval()


def inputs(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *shape, generator=generator), torch.rand(1, 1, *shape, generator=generator)


def wake_flow_head(model: rman.RMAnNet, seed: int = 1, std: float = 0.05) -> None:
    """Give the zero-initialised flow head weights that move voxels."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.flow.weight.copy_(torch.randn(model.flow.weight.shape, generator=generator) * std)


class Replay(nn.Module):
    """A flow head that returns the given fields in turn, one per recursion."""

    def __init__(self, fields: list[torch.Tensor]) -> None:
        super().__init__()
        self.fields = list(fields)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fields.pop(0)


def test_output_shape_and_every_parameter_gets_a_gradient():
    model = tiny().train()
    output = model(*inputs())
    assert output.displacement.shape == (1, 3, *SHAPE)
    (output.displacement.pow(2).mean() * 1e6).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_untrained_network_predicts_almost_no_motion():
    with torch.no_grad():
        assert tiny()(*inputs()).displacement.abs().max() < 0.05


def test_training_and_inference_encode_the_fixed_image_alike():
    """With gradients both branches run as one batch per recursion; without, the fixed one once: same field."""
    model = tiny()
    wake_flow_head(model)
    fixed, moving = inputs()
    trained = model(fixed, moving)
    with torch.no_grad():
        inferred = model(fixed, moving)
    assert agree_up_to_float32_rounding(trained.displacement.detach(), inferred.displacement)
    assert all(agree_up_to_float32_rounding(trained.maps[name], inferred.maps[name]) for name in inferred.maps)


def test_the_weights_are_shared_across_recursions():
    """Any K has the same parameters; K = 1 and K = 3 with the same weights give different fields."""
    models = {k: tiny(recursions=k) for k in (1, 3, 5)}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert len(set(counts.values())) == 1
    wake_flow_head(models[1])
    models[3].load_state_dict(models[1].state_dict())  # strict: the same keys and shapes
    fixed, moving = inputs()
    with torch.no_grad():
        once, thrice = models[1](fixed, moving), models[3](fixed, moving)
    assert torch.equal(once.maps[residual_map_name(1)], thrice.maps[residual_map_name(1)])
    assert (thrice.displacement - once.displacement).abs().max() > 1e-3
    assert sorted(thrice.maps) == sorted(spec.name for spec in models[3].map_specs())
    assert [s.name for s in models[3].map_specs()][:3] == [residual_map_name(k) for k in (1, 2, 3)]


@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_k_constant_residuals_compose_to_k_times_the_residual(diffeomorphic):
    """A flow head that always predicts the translation r: K recursions move by K r (and each map is |r|)."""
    model = tiny(diffeomorphic=diffeomorphic)
    r = torch.tensor([0.5, -0.25, 0.75])  # (x, y, z) voxels
    with torch.no_grad():
        model.flow.weight.zero_()
        model.flow.bias.copy_(r)
        output = model(*inputs())
    interior = output.displacement[..., 3:-3, 3:-3, 3:-3]
    assert torch.allclose(interior, 3 * r.view(1, 3, 1, 1, 1).expand_as(interior), atol=1e-5)
    for k in (1, 2, 3):
        assert torch.allclose(output.maps[residual_map_name(k)], r.norm().expand(1, 1, *SHAPE), atol=1e-5)


def test_each_recursion_sees_the_moving_image_warped_by_the_field_so_far_and_composes_its_residual():
    """Recursion 2 gets moving(p + r1(p)); the total is r2(p) + r1(p + r2(p)), the residual acting first."""
    model = tiny(recursions=2)
    x, y, z = identity_grid(SHAPE)[0]  # voxel coordinates
    r1 = torch.stack([0.8 * torch.sin(y / 3), 0.5 * torch.cos(x / 4), 0.3 * z / 16]).unsqueeze(0)
    r2 = torch.stack([0.4 * torch.cos(z / 5), -0.6 * torch.sin(x / 3), 0.2 * torch.sin(y / 2)]).unsqueeze(0)
    model.flow = Replay([r1, r2])
    seen = []
    model.encoder[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    fixed, moving = inputs()
    with torch.no_grad():
        output = model(fixed, moving)
    assert len(seen) == 3  # the fixed image once, then the moving image per recursion
    assert torch.equal(seen[0], fixed) and torch.equal(seen[1], moving)
    assert torch.allclose(seen[2], warp(moving, r1), atol=1e-6)
    expected = compose(r1, r2)
    assert torch.allclose(output.displacement, expected, atol=1e-5)
    assert not torch.allclose(output.displacement, compose(r2, r1), atol=1e-2)
    for k, residual in ((1, r1), (2, r2)):
        assert agree_up_to_float32_rounding(output.maps[residual_map_name(k)], residual.norm(dim=1, keepdim=True))


def test_the_residual_maps_are_the_length_of_each_recursions_residual():
    model = tiny()
    wake_flow_head(model)
    residuals = []
    model.flow.register_forward_hook(lambda module, args, output: residuals.append(output.detach()))
    with torch.no_grad():
        output = model(*inputs())
    assert len(residuals) == 3
    for k, residual in enumerate(residuals, start=1):
        spec = next(s for s in model.map_specs() if s.name == residual_map_name(k))
        assert spec.kind == "scalar" and spec.level == 1 and spec.units == "voxels"
        assert agree_up_to_float32_rounding(output.maps[spec.name], residual.norm(dim=1, keepdim=True))
        assert output.maps[spec.name].max() > 1e-3


def test_the_attention_entropy_lies_between_zero_and_log_keys_and_is_log_keys_for_uniform_attention():
    model = tiny()
    with torch.no_grad():
        output = model(*inputs())
    for level in (3, 4):
        spec = next(s for s in model.map_specs() if s.name == entropy_map_name(level))
        assert spec.kind == "scalar" and spec.level == level and spec.units == "nats"
        values = output.maps[spec.name]
        keys = math.prod(n // 2 ** (level - 1) for n in SHAPE)
        assert values.shape == (1, 1, *(n // 2 ** (level - 1) for n in SHAPE)) and values.dtype == torch.float32
        assert values.min() >= 0 and values.max() <= math.log(keys) + 1e-4
    with torch.no_grad():  # keys all alike: every voxel attends to all moving voxels equally
        model.attention["3"].key.weight.zero_()
        model.attention["3"].key.bias.zero_()
        uniform = model(*inputs()).maps[entropy_map_name(3)]
    assert torch.allclose(uniform, torch.full_like(uniform, math.log(64)), atol=1e-4)


def test_the_entropy_is_the_same_computed_in_chunks(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    query, key = torch.randn(2, 1, 2, 64, 4, generator=generator) * 3
    whole = rman.attention_entropy(query, key, (4, 4, 4))
    monkeypatch.setattr(rman, "_ENTROPY_CHUNK_SCORES", 2 * 64 * 5)  # 5 queries at a time
    chunked = rman.attention_entropy(query, key, (4, 4, 4))
    probabilities = torch.softmax(query @ key.transpose(-1, -2) / 2.0, dim=-1)
    direct = -(probabilities * probabilities.log()).sum(-1).mean(1).view(1, 1, 4, 4, 4)
    assert agree_up_to_float32_rounding(chunked, whole) and agree_up_to_float32_rounding(direct, whole)


def test_a_checkpoint_round_trip_gives_the_same_output(tmp_path):
    model = tiny()
    wake_flow_head(model)
    path = save_checkpoint(model, tmp_path / "rman")
    loaded, metadata = load_checkpoint(path)
    assert metadata["model"]["name"] == "rman" and loaded.config == model.config
    fixed, moving = inputs(shape=(13, 19, 10))
    with torch.no_grad():
        before, after = model(fixed, moving), loaded(fixed, moving)
    assert torch.equal(before.displacement, after.displacement)
    assert before.maps.keys() == after.maps.keys()
    assert all(torch.equal(before.maps[name], after.maps[name]) for name in before.maps)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="recursions must be at least 1"):
        RMAnConfig(recursions=0)
    with pytest.raises(ValueError, match="attention_levels must lie in 2..3"):
        RMAnConfig(channels=(4, 8, 8), attention_levels=(1,))
    with pytest.raises(InputError, match="attention_levels must lie in 2..5"):
        build_model("rman", {"attention_levels": [6]})
