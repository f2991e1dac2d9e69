"""The model contract (issue 10): the registry, typed configs, any input size, and the maps' specs."""

from __future__ import annotations

import pytest
import torch

from shmoareg.errors import InputError
from shmoareg.models import MODEL_NAMES, RegistrationNetwork, build_model
from shmoareg.models.base import level_shape
from shmoareg.models.registry import model_class, model_config
from torch_threads import one_torch_thread  # noqa: F401  (fixture)

ODD_SHAPE = (19, 23, 13)  # (Z, Y, X): no side a multiple of 2
SMALL_CONFIGS = {"shmoareg": {"channels": [4, 8, 8], "attention_levels": [3], "head_dim": 4},
                 "unet": {"channels": [4, 8, 8]},
                 "rman": {"channels": [4, 8, 8], "attention_levels": [2, 3], "head_dim": 4, "recursions": 2},
                 "adregnet": {"channels": [4, 8, 8], "attention_levels": [3], "heads": 2},
                 "sacbnet": {"channels": [4, 8, 8], "block_levels": [2, 3], "clusters": 3, "kernel_hidden": 8,
                             "bias_hidden": 8}}


def small_model(name: str) -> RegistrationNetwork:
    torch.manual_seed(0)
    return build_model(name, SMALL_CONFIGS.get(name, {})).eval()


def test_every_registered_name_is_its_class_name():
    assert set(MODEL_NAMES) >= {"shmoareg", "unet"}
    for name in MODEL_NAMES:
        assert model_class(name).name == name and issubclass(model_class(name), RegistrationNetwork)


def test_a_second_model_with_a_taken_name_is_refused():
    with pytest.raises(TypeError, match="two models are called 'unet'"):
        type("Impostor", (RegistrationNetwork,), {"name": "unet"})


def test_configs_round_trip_through_plain_values_and_bad_keys_are_named():
    for name in MODEL_NAMES:
        model = small_model(name)
        rebuilt = build_model(name, model_config(model))
        assert rebuilt.config == model.config
    with pytest.raises(InputError, match="unknown key chanels"):
        build_model("unet", {"chanels": [4, 8]})
    with pytest.raises(InputError, match="channels must be a list"):
        build_model("unet", {"channels": 8})
    with pytest.raises(InputError, match="attention_levels must lie in"):
        build_model("shmoareg", {"channels": [4, 8], "attention_levels": [5]})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_any_input_size_gives_a_field_and_maps_of_that_size(name):
    model = small_model(name)
    fixed, moving = torch.rand(2, 1, 1, *ODD_SHAPE)
    with torch.no_grad():
        output = model(fixed, moving)
    assert output.displacement.shape == (1, 3, *ODD_SHAPE) and torch.isfinite(output.displacement).all()
    specs = {spec.name: spec for spec in model.map_specs()}
    assert set(output.maps) == set(specs)
    for map_name, values in output.maps.items():
        spec = specs[map_name]
        assert values.shape == (1, 1, *level_shape(ODD_SHAPE, spec.level))
        if spec.kind == "categorical":
            assert values.dtype == torch.int64 and 1 <= values.min() and values.max() <= len(spec.categories)
    for level, gates in output.routing.decoder_gates.items():
        assert gates.shape[-3:] == level_shape(ODD_SHAPE, level)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_network_sees_sides_that_are_multiples_of_its_coarsest_level(name, monkeypatch):
    """Side 176 averaged down 2x with 5 levels once gave 11 -> 5 voxels: coarse fields scaled by 2.2, not 2."""
    model = small_model(name)
    seen = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda fixed, moving: seen.append(fixed.shape[2:]) or predict(fixed, moving))
    with torch.no_grad():
        model(*torch.rand(2, 1, 1, *ODD_SHAPE))
    multiple = model.size_multiple()
    assert multiple >= 4 and all(side % multiple == 0 for side in seen[0])
    assert all(0 <= padded - side < multiple for padded, side in zip(seen[0], ODD_SHAPE))


def test_padding_leaves_the_field_of_an_aligned_input_unchanged():
    """Zeros added at the far end move no voxel: on a size that needs no padding the output is the same."""
    model = small_model("unet")
    shape = (16, 16, 16)
    fixed, moving = torch.rand(2, 1, 1, *shape)
    with torch.no_grad():
        assert torch.equal(model(fixed, moving).displacement, model.predict(fixed, moving).displacement)


def test_shmoareg_maps_are_the_arg_max_expert_per_level_and_axis():
    model = small_model("shmoareg")
    with torch.no_grad():
        output = model(*torch.rand(2, 1, 1, 16, 16, 16))
    for spec in model.map_specs():
        gates = output.routing.decoder_gates[spec.level][:, "xyz".index(spec.axis)]
        assert torch.equal(output.maps[spec.name], gates.argmax(dim=1, keepdim=True) + 1)
        assert spec.categories == tuple(e["name"] for e in model.expert_descriptions())
