"""The registration networks: shapes, gradients, gates, top-k routing, load balancing (maps: test_model_maps.py)."""

from __future__ import annotations

import pytest
import torch

from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.models.layers import local_correlation, matching_displacement, neighbourhood_offsets
from shmoareg.models.mixture import (FactorisedExpert, MixtureOfAttentionHeads, SpatiallyHeterogeneousMoE,
                                     load_balancing_loss)
from shmoareg.spatial import jacobian_determinant

TINY = {"channels": [4, 8, 8, 8], "attention_levels": [3, 4], "head_experts": 4, "top_k": 2, "head_dim": 8}
SHAPE = (16, 32, 32)


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *SHAPE, generator=generator), torch.rand(1, 1, *SHAPE, generator=generator)


CORRELATED = {**TINY, "correlation_radius": 1, "coarsest_correlation_radius": 2, "matching_expert": True}


@pytest.mark.parametrize("name,config", [("shmoareg", TINY), ("shmoareg", CORRELATED),
                                         ("unet", {"channels": [4, 8, 8]})])
def test_output_shape_and_every_parameter_gets_a_gradient(name, config):
    torch.manual_seed(0)
    model = build_model(name, config).train()
    fixed, moving = inputs()
    output = model(fixed, moving)
    assert output.displacement.shape == (1, 3, *SHAPE)
    (output.displacement.pow(2).mean() * 1e6 + output.auxiliary_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_untrained_network_predicts_almost_no_motion():
    model = build_model("shmoareg", TINY).eval()
    with torch.no_grad():
        output = model(*inputs())
    assert output.displacement.abs().max() < 0.05


def test_decoder_gates_sum_to_one_per_voxel_and_axis_at_every_level():
    model = build_model("shmoareg", TINY).eval()
    with torch.no_grad():
        routing = model(*inputs()).routing
    assert sorted(routing.decoder_gates) == [1, 2, 3, 4]
    for level, gates in routing.decoder_gates.items():
        assert gates.shape == (1, 3, 4, *(n // 2 ** (level - 1) for n in SHAPE))
        assert torch.allclose(gates.sum(dim=2), torch.ones(1, 3, *gates.shape[3:]), atol=1e-5)
        assert (gates >= 0).all()


def test_axes_are_routed_separately():
    torch.manual_seed(1)
    head = SpatiallyHeterogeneousMoE(4, ((3, 1), (5, 1), (3, 3)))
    torch.nn.init.normal_(head.gate.weight, std=1.0)
    _, gates, _ = head(torch.randn(1, 4, 8, 8, 8))
    winners = gates.argmax(dim=2)
    assert not torch.equal(winners[:, 0], winners[:, 1]) and not torch.equal(winners[:, 1], winners[:, 2])
    assert head.receptive_fields == [3, 5, 7]


def test_each_displacement_component_is_the_gate_weighted_sum_of_the_experts():
    torch.manual_seed(2)
    head = SpatiallyHeterogeneousMoE(4, ((3, 1), (3, 2)), init_scale=0.1)
    features = torch.randn(1, 4, 6, 6, 6)
    field, gates, _ = head(features)
    proposals = torch.stack([expert(features) for expert in head.experts], dim=2)
    assert torch.allclose(field, (gates * proposals).sum(dim=2), atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moa_router_selects_exactly_k_heads_per_token(top_k):
    torch.manual_seed(3)
    layer = MixtureOfAttentionHeads(8, experts=4, top_k=top_k, head_dim=4).train()
    tokens = torch.randn(5, 16, 8)
    out, weights, chosen, _ = layer(tokens)
    assert out.shape == tokens.shape and chosen.shape == (5, 16, top_k)
    assert torch.equal((weights > 0).sum(dim=-1), torch.full((5, 16), top_k))
    assert torch.allclose(weights.sum(dim=-1), torch.ones(5, 16), atol=1e-6)
    assert torch.equal(torch.sort(chosen, dim=-1).values, torch.sort(weights.topk(top_k).indices, dim=-1).values)


def test_moa_routing_stays_float32_under_bfloat16_autocast():
    # CUDA autocast gives the router's logits in bfloat16 but their softmax in float32; routing in one
    # dtype (float32) keeps the scatter valid there. CPU autocast keeps both in bfloat16, so the dtype
    # of the weights is what this test can see here.
    torch.manual_seed(5)
    layer = MixtureOfAttentionHeads(8, experts=4, top_k=2, head_dim=4).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights, _, balance = layer.route(torch.randn(2, 16, 8))
    assert weights.dtype == torch.float32 and balance.dtype == torch.float32
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 16), atol=1e-6)


def test_noisy_gating_only_while_training():
    torch.manual_seed(4)
    layer = MixtureOfAttentionHeads(8, experts=4, top_k=1, head_dim=4)
    tokens = torch.randn(2, 64, 8)
    layer.eval()
    first, second = layer.route(tokens)[0], layer.route(tokens)[0]
    assert torch.equal(first, second)
    layer.train()
    assert not torch.equal(layer.route(tokens)[0], layer.route(tokens)[0])


def test_load_balancing_loss_rises_when_routing_collapses():
    experts = 4
    uniform = torch.full((100, experts), 1.0 / experts)
    spread = torch.nn.functional.one_hot(torch.arange(100) % experts, experts)
    collapsed_probabilities = torch.zeros(100, experts)
    collapsed_probabilities[:, 0] = 1.0
    collapsed = torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), experts)
    assert load_balancing_loss(uniform, spread).item() == pytest.approx(1.0)
    assert load_balancing_loss(collapsed_probabilities, collapsed).item() == pytest.approx(float(experts))


def test_diffeomorphic_network_does_not_fold():
    torch.manual_seed(5)
    model = build_model("shmoareg", {**TINY, "diffeomorphic": True, "integration_steps": 7}).eval()
    for head in model.heads:
        for expert in head.experts:
            torch.nn.init.normal_(expert.weight, std=0.02)
    with torch.no_grad():
        displacement = model(*inputs()).displacement
    assert displacement.abs().max() > 1.0
    assert (jacobian_determinant(displacement)[..., 2:-2, 2:-2, 2:-2] > 0).all()


def test_utilisation_summaries_sum_to_one():
    model = build_model("shmoareg", TINY).eval()
    with torch.no_grad():
        routing = model(*inputs()).routing
    for per_axis in routing.decoder_utilisation().values():
        assert set(per_axis) == {"x", "y", "z"}
        assert all(sum(fractions) == pytest.approx(1.0) for fractions in per_axis.values())
    moa = routing.moa_utilisation()
    assert set(moa) == {"3", "4"} and all(sum(v) == pytest.approx(1.0) for v in moa.values())
    assert routing.moa_weights[3].shape == (2, 4 * 8 * 8, 4)  # fixed and moving tokens at 1/4 resolution


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 3), (3, 5)])
def test_factorised_expert_reaches_exactly_its_receptive_field(kernel, dilation):
    expert = FactorisedExpert(1, kernel, dilation)
    torch.nn.init.ones_(expert.project.weight)
    impulse = torch.zeros(1, 1, 15, 15, 15)
    impulse[0, 0, 7, 7, 7] = 1.0
    with torch.no_grad():
        response = expert(impulse)[0, 0]
    reach = dilation * (kernel - 1) // 2
    for axis in range(3):
        touched = torch.nonzero(response.abs().sum(dim=tuple(a for a in range(3) if a != axis)) > 0).flatten()
        assert (touched.min().item(), touched.max().item()) == (7 - reach, 7 + reach)
        assert len(touched) == kernel  # dilated taps only
    assert response.sum().item() == pytest.approx(1.0)  # box averages


def test_half_resolution_input_level_numbers_levels_by_resolution_and_returns_a_full_field():
    model = build_model("shmoareg", {"channels": [8, 8, 8], "input_level": 2, "attention_levels": [3, 4],
                                     "head_dim": 4, "factorised_experts": True}).eval()
    with torch.no_grad():
        output = model(*inputs())
    assert output.displacement.shape == (1, 3, *SHAPE)
    assert sorted(output.routing.decoder_gates) == [2, 3, 4]
    assert tuple(output.routing.decoder_gates[2].shape[3:]) == tuple(n // 2 for n in SHAPE)
    assert sorted(output.routing.moa_weights) == [3, 4]


def test_factorised_heads_are_cheaper_and_route_per_voxel():
    full = SpatiallyHeterogeneousMoE(16, ((3, 1), (5, 1), (3, 3), (3, 5)))
    factorised = SpatiallyHeterogeneousMoE(16, ((3, 1), (5, 1), (3, 3), (3, 5)), factorised=True)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(factorised) < count(full) / 10
    assert factorised.gate.kernel_size == (1, 1, 1)
    assert factorised.receptive_fields == full.receptive_fields == [3, 5, 7, 11]
    field, gates, _ = factorised.eval()(torch.randn(1, 16, 8, 8, 8))
    assert field.shape == (1, 3, 8, 8, 8) and torch.allclose(gates.sum(dim=2), torch.ones(1, 3, 8, 8, 8))


def test_attention_levels_must_lie_above_the_input_level():
    with pytest.raises(InputError, match="attention_levels must lie in 3..4"):
        build_model("shmoareg", {"channels": [8, 8, 8], "input_level": 2, "attention_levels": [2]})


def test_local_correlation_peaks_at_the_offset_that_matches_and_reads_it_out():
    """moving(q) = fixed(q - e_x): fixed(p) = moving(p + e_x), so for features of one norm (Cauchy-Schwarz) the
    cost peaks at offset (1, 0, 0) and the similarity-weighted read-out of sharp features is that offset; for an
    identical pair, zero."""
    generator = torch.Generator().manual_seed(0)
    fixed = torch.randn(1, 8, 6, 7, 9, generator=generator)
    fixed = 30 * fixed / fixed.norm(dim=1, keepdim=True)
    moving = torch.roll(fixed, shifts=1, dims=4)
    costs = local_correlation(fixed, moving, radius=1)
    assert costs.shape == (1, 27, 6, 7, 9)
    offsets = neighbourhood_offsets(1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -2))
    best = offsets[costs[inner].argmax(dim=1)]  # (1, Z, Y, X, 3)
    assert torch.equal(best, torch.tensor([1.0, 0.0, 0.0]).expand_as(best))
    expected = (fixed * fixed).sum(dim=1) / 8 ** 0.5
    assert torch.allclose(costs[:, 14][inner[0], *inner[2:]], expected[inner[0], *inner[2:]], rtol=1e-5)
    read = matching_displacement(costs, 1)[inner]
    assert torch.allclose(read, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1, 1).expand_as(read), atol=1e-3)
    still = matching_displacement(local_correlation(fixed, fixed, 1), 1)[inner]
    assert float(still.abs().max()) < 1e-3


def test_correlation_options_add_inputs_and_a_matching_expert_and_are_checked():
    plain, correlated = build_model("shmoareg", TINY), build_model("shmoareg", CORRELATED)
    assert [head.gate.out_channels for head in correlated.heads] == [3 * 5] * 4  # four conv experts + matching
    assert correlated.expert_descriptions()[-1]["name"].startswith("matching")
    fuse_inputs = lambda model: [block[0].in_channels for block in model.fuse]  # noqa: E731
    assert [c - p for c, p in zip(fuse_inputs(correlated), fuse_inputs(plain))] == [27, 27, 27, 125]
    with torch.no_grad():
        output = correlated.eval()(*inputs())
    assert all(gates.shape[2] == 5 for gates in output.routing.decoder_gates.values())
    with pytest.raises(InputError, match="matching_expert"):
        build_model("shmoareg", {**TINY, "matching_expert": True})


def test_a_network_grown_with_the_correlation_predicts_what_it_grew_from_and_then_learns_to_use_it():
    torch.manual_seed(0)
    plain = build_model("shmoareg", TINY).eval()
    for parameter in plain.parameters():  # trained-looking weights: the untrained heads predict almost nothing
        parameter.data.normal_(0.0, 0.1)
    grown = build_model("shmoareg", {**TINY, "correlation_radius": 1, "coarsest_correlation_radius": 2}).eval()
    assert grown.can_grow_from(plain) and not plain.can_grow_from(grown)
    assert not build_model("shmoareg", CORRELATED).can_grow_from(plain)  # a new gate output cannot start at zero
    assert not build_model("shmoareg", {**TINY, "correlation_radius": 1, "head_dim": 4}).can_grow_from(plain)
    grown.grow_from(plain)
    fixed, moving = inputs()
    with torch.no_grad():
        expected, found = plain(fixed, moving).displacement, grown(fixed, moving).displacement
    assert float(expected.abs().max()) > 0.1
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    output = grown.train()(fixed, moving)
    output.displacement.pow(2).mean().backward()
    cost_weights = [block[0].weight.grad[:, 2 * width:2 * width + (27 if index < 3 else 125)]
                    for index, (block, width) in enumerate(zip(grown.fuse, TINY["channels"]))]
    assert all(float(grad.abs().max()) > 0 for grad in cost_weights)
    with pytest.raises(ValueError, match="without its correlation"):
        plain.grow_from(grown)
