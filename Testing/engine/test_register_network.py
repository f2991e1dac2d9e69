"""``register`` with a network checkpoint: prediction, refinement, its maps, routing and summary fields."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg.checkpoints import save_checkpoint
from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.fields import total_displacement, transform_lattice
from shmoareg.grid import Grid
from shmoareg.pipeline import RegistrationRequest, predict, prepare, register
from shmoareg.protocol import (ADAPT_LEARNING_RATE, DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_SWAP,
                               NETWORK_REFINE_START_FACTOR)
from shmoareg.spatial import resize_field
from shmoareg.synthetic import synthetic_pair, to_sitk

TINY = {"channels": [4, 8, 8, 8], "attention_levels": [3, 4], "head_dim": 8,
        "experts": [[3, 1], [3, 2], [3, 3]]}
SPACING = (1.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("network")
    torch.manual_seed(0)
    weights = save_checkpoint(build_model("shmoareg", TINY), folder / "tiny.safetensors", step=0)
    pair = synthetic_pair((40, 48, 44), seed=3, max_displacement=4.0, num_labels=6)
    images = {"fixed": pair.fixed_image, "moving": pair.moving_image,
              "fixed_seg": pair.fixed_labels, "moving_seg": pair.moving_labels}
    for name, tensor in images.items():
        sitk.WriteImage(to_sitk(tensor, spacing=SPACING), str(folder / f"{name}.nii.gz"))
    return folder, weights


def request(folder, weights, name: str, **options) -> RegistrationRequest:
    return RegistrationRequest(folder / "fixed.nii.gz", folder / "moving.nii.gz", folder / name,
                               fixed_segmentation=folder / "fixed_seg.nii.gz",
                               moving_segmentation=folder / "moving_seg.nii.gz",
                               model=str(weights), device="cpu", affine=False, **options)


def run(folder, weights, name: str, **options) -> dict:
    return register(request(folder, weights, name, **options))


def written_field(output) -> np.ndarray:
    """The displacement field of a run's transform.h5 on its own grid, ``(Z, Y, X, 3)`` mm."""
    transform = sitk.DisplacementFieldTransform(sitk.ReadTransform(str(output / "transform.h5")))
    return sitk.GetArrayFromImage(transform.GetDisplacementField())


def test_routing_maps_and_summary(case):
    folder, weights = case
    summary = run(folder, weights, "full", refine_steps=5, routing_maps="full")
    out = folder / "full"
    routing = json.loads((out / "routing.json").read_text())
    levels, experts = ["1", "2", "3", "4"], 3
    assert sorted(routing["utilisation"]) == levels and len(routing["experts"]) == experts
    assert [e["receptive_field"] for e in routing["experts"]] == [3, 5, 7]
    assert {p.name for p in (out / "maps").iterdir()} == {f"level{l}_{a}_expert.nii.gz" for l in levels for a in "xyz"}
    assert {p.name for p in (out / "routing").iterdir()} == {
        f"level{l}_{a}_gate{e}.nii.gz" for l in levels for a in "xyz" for e in range(1, experts + 1)}
    maps = json.loads((out / "maps.json").read_text())
    assert [entry["name"] for entry in maps["maps"]] == [f"level{l}_{a}_expert" for l in levels for a in "xyz"]
    assert {f"maps/level{l}_{a}_expert.nii.gz" for l in levels for a in "xyz"} <= set(summary["files"])
    assert {"maps.json", "routing.json", "routing/level4_z_gate3.nii.gz"} <= set(summary["files"])
    fixed = sitk.ReadImage(str(folder / "fixed.nii.gz"))
    expert_map = sitk.ReadImage(str(out / "maps" / "level1_y_expert.nii.gz"))  # on the network input's grid
    assert list(expert_map.GetSize()) == summary["network_grid"]["network_input_size"]
    assert np.allclose(expert_map.GetSpacing(), maps["maps"][1]["spacing_mm"])
    assert np.allclose(expert_map.GetDirection(), fixed.GetDirection())
    # as a viewer overlays it on the fixed image
    values = sitk.GetArrayFromImage(sitk.Resample(expert_map, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    assert set(np.unique(values)) <= {0, 1, 2, 3} and (values == 0).any() and (values > 0).any()
    for level in levels:
        for axis in "xyz":
            fractions = routing["utilisation"][level][axis]
            assert len(fractions) == experts and sum(fractions) == pytest.approx(1.0)
    first = routing["utilisation"]["1"]["y"]
    assert first[1] == pytest.approx(np.mean(values[values > 0] == 2), abs=0.05)
    entry = maps["maps"][1]
    assert (entry["level"], entry["axis"], entry["kind"]) == (1, "y", "categorical")
    assert [category["name"] for category in entry["categories"]] == [e["name"] for e in routing["experts"]]
    assert [category["share"] for category in entry["categories"]] == pytest.approx(first)
    assert sorted(routing["moa_utilisation"]) == ["3", "4"]
    assert all(sum(v) == pytest.approx(1.0) for v in routing["moa_utilisation"].values())
    model = summary["model"]
    assert model["name"] == "shmoareg" and len(model["weights_sha256"]) == 64
    assert model["parameters"] == sum(p.numel() for p in build_model("shmoareg", TINY).parameters())
    assert summary["expert_utilisation"] == routing["utilisation"]
    assert 0.0 <= summary["network_share"] <= 1.0 and routing["network_share"] == summary["network_share"]
    assert "predict" in summary["seconds"]


def test_default_writes_arg_max_maps_without_gate_maps(case):
    folder, weights = case
    summary = run(folder, weights, "experts", refine_steps=0)
    assert summary["network_share"] == 1.0  # the prediction is the final field
    names = {p.name for p in (folder / "experts" / "maps").iterdir()}
    assert len(names) == 12 and all(name.endswith("_expert.nii.gz") for name in names)
    assert not (folder / "experts" / "routing").exists()


def test_refinement_raises_dice_over_the_prediction(case):
    folder, weights = case
    predicted = run(folder, weights, "predicted", refine_steps=0, routing_maps="none")
    refined = run(folder, weights, "refined", refine_steps=60, routing_maps="none")
    maps = json.loads((folder / "refined" / "maps.json").read_text())
    assert len(maps["maps"]) == 12 and all(entry["file"] is None for entry in maps["maps"])
    assert not (folder / "refined" / "maps").exists() and not (folder / "refined" / "routing").exists()
    assert refined["metrics"]["mean_dice"] > predicted["metrics"]["mean_dice"] + 0.05


def test_a_grid_over_the_network_budget_is_predicted_at_half_resolution(case):
    folder, weights = case
    full = run(folder, weights, "full-resolution", refine_steps=0)
    half = run(folder, weights, "half-resolution", refine_steps=0, network_max_voxels=1000)
    size = full["network_grid"]["size"]
    assert full["network_grid"]["network_input_size"] == size
    assert half["network_grid"]["network_input_size"] == [n // 2 for n in size]
    levels = json.loads((folder / "half-resolution" / "routing.json").read_text())["levels"]
    assert levels["1"]["spacing_mm"] == pytest.approx(2 * full["network_grid"]["spacing_mm"])
    expert_map = sitk.ReadImage(str(folder / "half-resolution" / "maps" / "level1_x_expert.nii.gz"))
    maps = json.loads((folder / "half-resolution" / "maps.json").read_text())
    assert maps["network_input"]["size"] == half["network_grid"]["network_input_size"]
    assert maps["maps"][0]["spacing_mm"] == pytest.approx([2 * full["network_grid"]["spacing_mm"]] * 3)
    assert list(expert_map.GetSize()) == half["network_grid"]["network_input_size"]
    lattice = sitk.DisplacementFieldTransform(sitk.ReadTransform(str(folder / "half-resolution" / "transform.h5")))
    assert lattice.GetDisplacementField().GetSpacing() == pytest.approx([full["network_grid"]["spacing_mm"]] * 3)


def test_the_mirror_ensemble_changes_the_field_but_not_the_maps(case):
    folder, weights = case
    plain = run(folder, weights, "no-flips", refine_steps=0, network_flips=0, network_swap=False)
    mirrored = run(folder, weights, "flips", refine_steps=0, network_flips=1, network_swap=False)
    assert plain["method"]["network_flips"] == 0
    assert mirrored["method"]["network_flips"] == 1
    read = lambda name, file: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name / file)))  # noqa: E731
    assert np.abs(written_field(folder / "no-flips") - written_field(folder / "flips")).max() > 1e-3
    expert_map = "maps/level1_x_expert.nii.gz"
    assert np.array_equal(read("no-flips", expert_map), read("flips", expert_map))


def test_the_swap_ensemble_is_the_antisymmetric_mean_of_the_two_directions_and_keeps_the_maps(case):
    folder, weights = case
    prepared = prepare(request(folder, weights, "never-written", refine_steps=0, network_flips=0, network_swap=True))
    model, pair = prepared.network.model, prepared.pair
    with torch.no_grad():
        swapped = predict(prepared)
        forward, backward = model(pair.fixed, pair.moving), model(pair.moving, pair.fixed)
    expected = resize_field((forward.displacement - backward.displacement) / 2, pair.grid.shape)
    assert swapped.grid.size == pair.grid.size  # the small pair is predicted at full resolution
    assert (forward.displacement + backward.displacement).abs().max() > 1e-3  # the two directions disagree
    assert torch.allclose(swapped.displacement, expected, atol=1e-6)
    assert all(torch.equal(swapped.maps[name], forward.maps[name]) for name in forward.maps)
    summary = run(folder, weights, "no-swap", refine_steps=0, network_swap=False)
    assert summary["method"]["network_swap"] is False
    defaults = run(folder, weights, "default-ensembles", refine_steps=0)["method"]
    assert (defaults["network_flips"], defaults["network_swap"]) == (DEFAULT_NETWORK_FLIPS["cpu"],
                                                                   DEFAULT_NETWORK_SWAP["cpu"])


def test_more_mirrors_than_axes_are_refused_before_anything_is_written(case):
    folder, weights = case
    with pytest.raises(InputError, match="--network-flips must be between 0 and 3"):
        run(folder, weights, "four-flips", network_flips=4)
    assert not (folder / "four-flips").exists()


def test_prepare_and_predict_give_the_field_that_register_writes_for_the_network_alone(case):
    folder, weights = case
    run(folder, weights, "alone", refine_steps=0)
    prepared = prepare(request(folder, weights, "never-written", refine_steps=0))
    prediction = predict(prepared)
    lattice = transform_lattice(prepared.pair.grid, Grid.of(sitk.ReadImage(str(folder / "fixed.nii.gz"))))
    field = total_displacement(prediction.displacement, prepared.pair.grid, lattice, prepared.start.affine)
    written = written_field(folder / "alone")
    assert np.abs(field).max() > 1e-4  # the untrained tiny network deforms a little (less once swapped)
    assert np.allclose(field, written, rtol=1e-5, atol=1e-7)
    assert not (folder / "never-written").exists()


def test_predict_without_a_network_is_refused(case):
    folder, weights = case
    with pytest.raises(ValueError, match="no network"):
        predict(prepare(RegistrationRequest(folder / "fixed.nii.gz", folder / "moving.nii.gz", folder / "none",
                                            model="none", device="cpu")))


def test_adaptation_changes_the_network_field_and_maps_and_is_recorded(case):
    folder, weights = case
    plain = run(folder, weights, "not-adapted", refine_steps=0)
    shipped = weights.read_bytes()
    adapted = run(folder, weights, "adapted", refine_steps=0, adapt_steps=3)
    assert weights.read_bytes() == shipped
    assert (plain["method"]["adapt_steps"], plain["method"]["adapt_learning_rate"]) == (0, None)
    assert adapted["method"]["adapt_steps"] == 3 and adapted["method"]["adapt_learning_rate"] == ADAPT_LEARNING_RATE
    assert "adapt" in adapted["seconds"] and "adapt" not in plain["seconds"]
    read = lambda name: written_field(folder / name)  # noqa: E731
    # The untrained network's swapped field is about 4e-4 mm at most; 3 steps moved it by 0.17 mm (20 steps: 0.3).
    assert np.abs(read("not-adapted")).max() < 1e-3 and np.abs(read("adapted") - read("not-adapted")).max() > 0.05


@pytest.mark.parametrize("options, message", [
    ({"adapt_steps": -1}, "--adapt-steps must be between 0 and"),
    ({"adapt_steps": 5, "model": "none"}, "--adapt-steps adapts a network's weights"),
])
def test_bad_adaptation_requests_are_refused_before_anything_is_written(case, options, message):
    folder, weights = case
    arguments = {"model": str(weights), **options}
    with pytest.raises(InputError, match=message):
        register(RegistrationRequest(folder / "fixed.nii.gz", folder / "moving.nii.gz", folder / "bad-adapt",
                                     device="cpu", **arguments))
    assert not (folder / "bad-adapt").exists()


def test_the_refinement_after_the_network_starts_one_level_above_its_input_or_where_asked(case):
    """The shipped network (a tiny untrained one is rejected, and the refinement then starts from scratch)."""
    folder, _ = case
    shipped = {"model": "shmoareg", "refine_steps": 6, "routing_maps": "none", "network_max_voxels": 1000}
    default = register(replace(request(folder, "unused", "start-default"), **shipped))
    finer = register(replace(request(folder, "unused", "start-2"), **shipped, refine_start=2))
    assert default["network_prediction"] == finer["network_prediction"] == "used"
    # the network saw the working grid averaged 2x; the refinement starts NETWORK_REFINE_START_FACTOR above that
    assert NETWORK_REFINE_START_FACTOR["cpu"] == 2 and list(default["method"]["settings"]["levels"]) == [4, 2, 1]
    assert list(finer["method"]["settings"]["levels"]) == [2, 1]
    with pytest.raises(InputError, match="refine_start must be one of the refinement's levels 8, 4, 2, 1, not 3"):
        register(replace(request(folder, "unused", "start-3"), **shipped, refine_start=3))
    assert not (folder / "start-3").exists()
