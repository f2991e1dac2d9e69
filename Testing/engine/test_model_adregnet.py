"""AD-RegNet (issue 10): shapes and gradients, the regional gate maps, the bidirectional cross-attention,
the coarse-to-fine composition of the fields at 1/4, 1/2 and full resolution, and a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from shmoareg.checkpoints import load_checkpoint, save_checkpoint
from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.models.adregnet import ADRegNetConfig, BidirectionalCrossAttention, gate_map_name, position_code
from shmoareg.spatial import compose, identity_grid, resize_field
from tolerances import agree_up_to_float32_rounding
from torch_threads import one_torch_thread  # noqa: F401  (fixture)

SMALL = {"channels": [4, 8, 8, 8], "attention_levels": [3, 4], "heads": 2}
SHAPE = (16, 24, 32)  # (Z, Y, X), multiples of 8


def inputs(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *shape, generator=generator), torch.rand(1, 1, *shape, generator=generator)


def small_model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return build_model("adregnet", {**SMALL, **overrides})


@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_output_shape_and_every_parameter_gets_a_gradient(diffeomorphic):
    model = small_model(diffeomorphic=diffeomorphic).train()
    output = model(*inputs())
    assert output.displacement.shape == (1, 3, *SHAPE)
    assert output.displacement.abs().max() < 1e-2  # zero-initialised heads: almost no motion untrained
    (output.displacement.pow(2).mean() * 1e6).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_the_default_size_matches_the_shipped_networks():
    model = build_model("adregnet")
    assert sum(p.numel() for p in model.parameters()) == 251_440
    assert model.size_multiple() == 16
    assert [(s.name, s.kind, s.level, s.units) for s in model.map_specs()] == [
        (f"level{level}_regional_gate", "scalar", level, "") for level in (3, 2, 1)]


def test_invalid_configs_are_refused():
    for bad in ({"attention_levels": (1,)}, {"attention_levels": (6,)}, {"field_levels": (2, 3)},
                {"field_levels": (1, 1)}, {"heads": 3}, {"channels": (8,)}, {"integration_steps": -1}):
        with pytest.raises(ValueError):
            ADRegNetConfig(**bad)
    with pytest.raises(InputError, match="heads must be positive"):
        build_model("adregnet", {"heads": 0})


def test_the_maps_are_the_sigmoid_gates_that_scale_the_decoder_features():
    model = small_model().eval()
    gates, fused, head_inputs = {}, {}, {}
    for level in (1, 2, 3):
        model.gates[str(level)].register_forward_hook(lambda m, i, o, level=level: gates.__setitem__(level, o))
        model.fuse[level - 1].register_forward_hook(lambda m, i, o, level=level: fused.__setitem__(level, o))
        model.heads[str(level)].register_forward_hook(lambda m, i, o, level=level: head_inputs.__setitem__(level, i[0]))
    with torch.no_grad():
        output = model(*inputs())
    assert set(output.maps) == {gate_map_name(level) for level in (1, 2, 3)}
    for level in (1, 2, 3):
        gate = output.maps[gate_map_name(level)]
        assert torch.equal(gate, gates[level])
        assert gate.shape == (1, 1, *(n // 2 ** (level - 1) for n in SHAPE)) and gate.dtype == torch.float32
        assert 0 <= gate.min() and gate.max() <= 1 and gate.std() > 0
        assert torch.equal(head_inputs[level], fused[level] * gate)


def reference_attention(block: BidirectionalCrossAttention, queries: torch.Tensor, keys: torch.Tensor,
                        position: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, written out (value and output projections are the identity)."""
    q, k = block.query(queries + position), block.key(keys + position)
    heads, width = block.heads, q.shape[-1] // block.heads
    result = []
    for head in range(heads):
        part = slice(head * width, (head + 1) * width)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(-1, -2) / width ** 0.5, dim=-1)
        result.append(weights @ keys[..., part])
    return torch.cat(result, dim=-1)


def test_cross_attention_runs_both_ways_with_a_known_answer():
    torch.manual_seed(0)
    block = BidirectionalCrossAttention(8, heads=2).eval()
    with torch.no_grad():
        for projection in (block.value, block.out):
            projection.weight.copy_(torch.eye(8))
            projection.bias.zero_()
    shape = (2, 3, 4)
    fixed, moving, other = torch.randn(3, 1, 8, *shape)
    position = block.position(position_code(shape, fixed.device, fixed.dtype))

    def expected(queries, keys):
        tokens = queries.flatten(2).transpose(1, 2)
        tokens = tokens + reference_attention(block, block.norm(tokens), block.norm(keys.flatten(2).transpose(1, 2)),
                                              position)
        tokens = tokens + block.mlp(block.norm_mlp(tokens))
        return tokens.transpose(1, 2).reshape(1, 8, *shape)

    with torch.no_grad():
        out_fixed, out_moving = block(fixed, moving)
        assert agree_up_to_float32_rounding(out_fixed, expected(fixed, moving))  # fixed attends to moving
        assert agree_up_to_float32_rounding(out_moving, expected(moving, fixed))  # and moving to fixed
        same_fixed, same_moving = block(fixed, fixed)  # identical inputs: cross-attention is self-attention
        assert torch.equal(same_fixed, same_moving) and agree_up_to_float32_rounding(same_fixed, expected(fixed, fixed))
        # each stream depends on the other image: another image changes it beyond rounding (not the image plus
        # a constant, which the LayerNorm before the attention removes)
        assert not agree_up_to_float32_rounding(block(fixed, other)[0], out_fixed)
        assert not agree_up_to_float32_rounding(block(other, moving)[1], out_moving)


def test_swapping_fixed_and_moving_changes_the_prediction():
    model = small_model().eval()
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(std=0.1)
        fixed, moving = inputs()
        forward, backward = model(fixed, moving).displacement, model(moving, fixed).displacement
    assert forward.abs().max() > 1e-2 and not torch.allclose(forward, backward, atol=1e-4)


class ConstantField(nn.Module):
    """A flow head that predicts ``field`` (a function of the level's grid shape) whatever its input."""

    def __init__(self, field) -> None:
        super().__init__()
        self.field = field

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.field(tuple(features.shape[2:]))


def translation(values: tuple[float, float, float]):
    return lambda shape: torch.tensor(values).view(1, 3, 1, 1, 1).expand(1, 3, *shape)


def test_translations_at_quarter_half_and_full_resolution_add_up_in_full_resolution_voxels():
    model = small_model().eval()
    quarter, half, full = (0.5, -0.25, 0.75), (-1.0, 0.5, 0.25), (0.3, 0.2, -0.1)
    for level, values in ((3, quarter), (2, half), (1, full)):
        model.heads[str(level)] = ConstantField(translation(values))
    with torch.no_grad():
        field = model(*inputs()).displacement
    expected = torch.tensor([4 * q + 2 * h + f for q, h, f in zip(quarter, half, full)]).view(1, 3, 1, 1, 1)
    assert torch.allclose(field[..., 2:-2, 2:-2, 2:-2], expected.expand(1, 3, 12, 20, 28), atol=1e-5)


def test_each_residual_acts_first_in_fixed_space():
    """compose(field so far, residual): the residual moves p, the coarser field is read at p + r(p)."""
    model = small_model(field_levels=[1, 2]).eval()

    def stretch(shape):  # x displacement growing along x: where it is read matters
        return 0.1 * identity_grid(shape)[:, :1].expand(1, 3, *shape) * torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1, 1)

    shift = translation((2.0, 0.0, 0.0))
    model.heads["2"], model.heads["1"] = ConstantField(stretch), ConstantField(shift)
    with torch.no_grad():
        field = model(*inputs()).displacement
    coarse = resize_field(stretch(tuple(n // 2 for n in SHAPE)), SHAPE)
    interior = (..., slice(2, -2), slice(2, -2), slice(2, -6))
    assert torch.allclose(field[interior], compose(coarse, shift(SHAPE))[interior], atol=1e-5)
    assert not torch.allclose(field[interior], compose(shift(SHAPE), coarse)[interior], atol=1e-2)


def test_a_checkpoint_round_trip_gives_the_same_output(tmp_path):
    model = small_model().eval()
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(std=0.1)
    fixed, moving = inputs(shape=(19, 23, 13))
    with torch.no_grad():
        before = model(fixed, moving)
    save_checkpoint(model, tmp_path / "adregnet")
    loaded, metadata = load_checkpoint(tmp_path / "adregnet")
    assert metadata["model"]["name"] == "adregnet" and loaded.config == model.config
    with torch.no_grad():
        after = loaded(fixed, moving)
    assert before.displacement.abs().max() > 1e-2 and torch.equal(before.displacement, after.displacement)
    assert before.maps.keys() == after.maps.keys()
    assert all(torch.equal(before.maps[name], after.maps[name]) for name in before.maps)
