"""A network's per-voxel maps on its own grids in the fixed image's frame, with maps.json (issue 10, point 2;
issue 24: written at the network's resolution)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import rotation_direction
from shmoareg import pipeline
from shmoareg.grid import Grid, network_grid
from shmoareg.model_maps import CATEGORY_COLOURS, colour_map_for, foreground_per_cell, level_grid, write_model_maps
from shmoareg.models.base import AXES, MapSpec, ModelOutput, RegistrationNetwork, RoutingRecord
from shmoareg.models.shmoareg_net import expert_map_name
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.protocol import MAP_PERCENTILES
from shmoareg.routing_maps import write_routing_maps
from shmoareg.synthetic import synthetic_pair, to_sitk

DIRECTION = rotation_direction((0.3, -0.2, 0.1))
PARITY = ("even", "odd")
SPECS = [MapSpec("parity1", "categorical", 1, "parity of the level-1 voxel's x index", categories=PARITY, axis="x"),
         MapSpec("parity2", "categorical", 2, "parity of the level-2 voxel's x index", categories=PARITY),
         MapSpec("position1", "scalar", 1, "physical x of the level-1 voxel", units="mm"),
         MapSpec("position2", "scalar", 2, "physical x of the level-2 voxel", units="mm")]


def level_index(grid: Grid, points: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) index in ``grid`` of physical ``points`` (..., 3)."""
    to_index = np.linalg.inv(grid.direction_matrix * np.asarray(grid.spacing))
    return (points - np.asarray(grid.origin)) @ to_index.T


def fake_maps(network: Grid) -> dict[str, torch.Tensor]:
    """The maps of :data:`SPECS` on the levels of ``network`` (level 2 of an odd size rounds up)."""
    maps = {}
    for level in (1, 2):
        shape = tuple(-(-n // 2 ** (level - 1)) for n in network.shape)
        grid = level_grid(network, level, shape)
        x_index = torch.arange(shape[2]).expand(*shape)
        maps[f"parity{level}"] = (x_index % 2 + 1)[None, None].long()
        maps[f"position{level}"] = torch.from_numpy(grid.physical_points()[..., 0])[None, None].float()
    return maps


@pytest.fixture
def written(tmp_path):
    fixed = Grid((30, 26, 20), (1.2, 1.4, 2.0), (5.0, -3.0, 8.0), DIRECTION)
    network = Grid((15, 13, 11), (2.5, 2.5, 2.5), (4.0, -4.0, 7.0), DIRECTION)  # odd sides: level 2 rounds up
    foreground = np.ones(fixed.shape, dtype=np.uint8)
    foreground[:8] = 0  # 16 mm of the fixed image: some network voxels have no foreground voxel nearest
    content = write_model_maps(fake_maps(network), SPECS, network, fixed, foreground, lambda name: tmp_path / name,
                               model="fake")
    return tmp_path, fixed, network, foreground > 0, json.loads(json.dumps(content, allow_nan=False))


def read(path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def level_shape(network: Grid, level: int) -> tuple[int, ...]:
    """The (Z, Y, X) shape of a level of ``network`` (an odd size rounds up)."""
    return tuple(-(-n // 2 ** (level - 1)) for n in network.shape)


def nearest_cell_values(values: np.ndarray, grid: Grid, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value of the ``grid`` voxel nearest to each physical point (clamped to the grid), and whether the point
    is clear of a tie between two voxels."""
    index = level_index(grid, points)
    nearest = np.clip(np.rint(index), 0, np.asarray(grid.size) - 1).astype(int)
    clear = (np.abs(index - np.floor(index) - 0.5) > 1e-6).all(axis=-1)
    return values[nearest[..., 2], nearest[..., 1], nearest[..., 0]], clear


def test_every_map_is_on_its_levels_grid_with_its_entry(written):
    folder, fixed, network, _, content = written
    assert [entry["name"] for entry in content["maps"]] == [spec.name for spec in SPECS]
    assert content["model"] == "fake" and content["network_input"]["size"] == list(network.size)
    for spec, entry in zip(SPECS, content["maps"]):
        assert entry["file"] == f"maps/{spec.name}.nii.gz"
        image, _ = read(folder / entry["file"])
        grid = level_grid(network, spec.level, level_shape(network, spec.level))
        assert image.GetSize() == grid.size and np.allclose(image.GetSpacing(), [2.5 * 2 ** (spec.level - 1)] * 3)
        assert np.allclose(image.GetOrigin(), grid.origin) and np.allclose(image.GetDirection(), DIRECTION)
        assert (entry["kind"], entry["level"], entry["units"], entry["description"], entry["axis"]) == (
            spec.kind, spec.level, spec.units, spec.description, spec.axis)
        assert entry["spacing_mm"] == pytest.approx([2.5 * 2 ** (spec.level - 1)] * 3)


def test_a_categorical_map_is_the_networks_values_zero_where_no_foreground_voxel_is_nearest(written):
    folder, fixed, network, inside, content = written
    points = fixed.physical_points()
    for level, entry in ((1, content["maps"][0]), (2, content["maps"][1])):
        image, values = read(folder / entry["file"])
        assert image.GetPixelID() == sitk.sitkUInt8
        grid = level_grid(network, level, level_shape(network, level))
        covered = foreground_per_cell(inside, grid, fixed) > 0
        parity = np.broadcast_to(np.arange(grid.size[0]) % 2 + 1, values.shape)
        assert 0 < covered.sum() < covered.size  # the fixture's foreground leaves some network voxels uncovered
        assert np.array_equal(values[covered], parity[covered]) and (values[~covered] == 0).all()
        # the shares count the fixed foreground's voxels by their nearest network voxel
        seen, clear = nearest_cell_values(values, grid, points)
        assert clear[inside].mean() > 0.9 and (seen[inside] > 0).all()
        assert [c["name"] for c in entry["categories"]] == list(PARITY)
        assert [c["value"] for c in entry["categories"]] == [1, 2]
        assert [c["colour"] for c in entry["categories"]] == list(CATEGORY_COLOURS[:2])
        shares = [c["share"] for c in entry["categories"]]
        assert shares == pytest.approx([np.mean(seen[inside] == 1), np.mean(seen[inside] == 2)], abs=0.01)
        assert sum(shares) == pytest.approx(1.0)


def test_a_scalar_map_is_written_everywhere_with_the_foregrounds_statistics(written):
    folder, fixed, network, inside, content = written
    points = fixed.physical_points()
    for level, entry in ((1, content["maps"][2]), (2, content["maps"][3])):
        image, values = read(folder / entry["file"])
        assert image.GetPixelID() == sitk.sitkFloat32
        grid = level_grid(network, level, level_shape(network, level))
        # each voxel holds its own physical x (to the 4 significant digits written)
        assert np.allclose(values, grid.physical_points()[..., 0], atol=0.02)
        assert entry["colour_map"] == "inferno"
        statistics = entry["statistics"]
        seen, clear = nearest_cell_values(values, grid, points)
        chosen = seen[inside].astype(np.float64)
        assert statistics["mean"] == pytest.approx(chosen.mean(), abs=0.05)
        assert (statistics["min"], statistics["max"]) == pytest.approx((chosen.min(), chosen.max()))
        for p, value in zip(MAP_PERCENTILES, np.percentile(chosen, MAP_PERCENTILES, method="inverted_cdf")):
            assert statistics[f"p{p}"] == pytest.approx(value, abs=0.02 + 2.5 * 2 ** (level - 1))


def test_without_files_maps_json_still_gives_the_statistics(tmp_path):
    fixed = Grid((12, 10, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    network = Grid((6, 5, 4), (4.0, 4.0, 4.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel()))
    content = write_model_maps(fake_maps(network), SPECS, network, fixed, np.ones(fixed.shape), lambda n: tmp_path / n,
                               write_files=False)
    assert [entry["file"] for entry in content["maps"]] == [None] * 4 and list(tmp_path.iterdir()) == []
    assert sum(c["share"] for c in content["maps"][0]["categories"]) == pytest.approx(1.0)


def test_maps_must_match_their_specs(tmp_path):
    fixed = Grid((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    maps = fake_maps(fixed)
    with pytest.raises(ValueError, match="describes"):
        write_model_maps({**maps, "extra": maps["parity1"]}, SPECS, fixed, fixed, np.ones(fixed.shape),
                         lambda n: tmp_path / n)
    maps["parity1"] = maps["parity1"] * 2  # value 4 with two categories
    with pytest.raises(ValueError, match="outside 0..2"):
        write_model_maps(maps, SPECS, fixed, fixed, np.ones(fixed.shape), lambda n: tmp_path / n)


def test_colour_maps_follow_the_units():
    assert [colour_map_for(units) for units in ("", "nats", "mm", "voxels", "probability")] == [
        "viridis", "viridis", "inferno", "inferno", "viridis"]


PLACEMENT_FIXED = Grid((13, 11, 9), (1.2, 1.4, 2.0), (5.0, -3.0, 8.0), DIRECTION)


@pytest.mark.parametrize("spacing", [1.5, 0.65])  # network voxels larger, and smaller, than the fixed image's
def test_foreground_per_cell_counts_the_fixed_voxels_nearest_to_each_network_voxel(spacing):
    network = network_grid(PLACEMENT_FIXED.reference_image(), spacing)
    z, y, x = network.shape
    numbered = np.arange(x * y * z).reshape(z, y, x)
    cell_of_voxel, clear = nearest_cell_values(numbered, network, PLACEMENT_FIXED.physical_points())
    # a random mask of the voxels whose nearest network voxel is unambiguous (not halfway between two)
    inside = (np.random.default_rng(3).random(PLACEMENT_FIXED.shape) > 0.4) & clear
    assert inside.sum() > 0.15 * inside.size
    expected = np.bincount(cell_of_voxel[inside], minlength=x * y * z).reshape(z, y, x)
    counts = foreground_per_cell(inside, network, PLACEMENT_FIXED)
    assert counts.shape == network.shape and counts.sum() == inside.sum()
    assert np.array_equal(counts, expected)


def test_maps_on_a_grid_turned_against_the_fixed_image_are_refused():
    turned = Grid((8, 8, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), rotation_direction((0.0, 0.0, 0.4)))
    with pytest.raises(ValueError, match="axes"):
        foreground_per_cell(np.ones(PLACEMENT_FIXED.shape, bool), turned, PLACEMENT_FIXED)


def test_expert_maps_and_gate_maps_align_with_the_fixed_image_in_physical_space(tmp_path):
    fixed = Grid((30, 26, 20), (1.2, 1.4, 2.0), (5.0, -3.0, 8.0), DIRECTION)
    network = network_grid(fixed.reference_image(), 1.5)
    # Level 2: expert 2 wins for x along network index axis i in its upper half, expert 1 elsewhere.
    z, y, x = (n // 2 for n in network.shape)
    gates = torch.zeros(1, 3, 2, z, y, x)
    upper = torch.arange(x) >= x // 2
    gates[:, :, 1, ..., upper] = 1.0
    gates[:, :, 0, ..., ~upper] = 1.0
    foreground = np.ones(fixed.shape, dtype=np.uint8)
    foreground[0] = 0
    specs = [MapSpec(expert_map_name(2, axis), "categorical", 2, "expert", categories=("a", "b"), axis=axis)
             for axis in AXES]
    maps = {expert_map_name(2, axis): gates[:, index].argmax(dim=1, keepdim=True) + 1
            for index, axis in enumerate(AXES)}
    output = lambda name: tmp_path / name  # noqa: E731
    summary = write_model_maps(maps, specs, network, fixed, foreground, output)
    content = write_routing_maps(RoutingRecord(decoder_gates={2: gates}), [{"name": "a"}, {"name": "b"}], network,
                                 fixed, foreground, output, "full", summary)
    expert_map, _ = read(tmp_path / "maps" / "level2_x_expert.nii.gz")
    assert expert_map.GetSize() == level_grid(network, 2, (z, y, x)).size

    def overlaid(image: sitk.Image) -> np.ndarray:
        """``image`` as a viewer overlays it on the fixed image: sampled nearest at each fixed voxel."""
        return sitk.GetArrayFromImage(sitk.Resample(image, fixed.reference_image(), sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0.0))

    values = overlaid(expert_map)
    inside = foreground > 0
    assert (values[inside] > 0).all()
    # the network grid's centre plane along its first axis separates the experts in physical space
    centre = np.asarray(network.origin) + network.direction_matrix @ (
        (np.asarray(network.size) - 1) / 2 * np.asarray(network.spacing))
    side = (fixed.physical_points() - centre) @ network.direction_matrix[:, 0]
    clear = (np.abs(side) > 3.0) & inside
    assert np.all(values[clear & (side > 0)] == 2) and np.all(values[clear & (side < 0)] == 1)
    fractions = content["utilisation"]["2"]["x"]
    assert sum(fractions) == pytest.approx(1.0)
    assert fractions[1] == pytest.approx(np.mean(values[inside] == 2), abs=0.01)
    gate = overlaid(sitk.ReadImage(str(tmp_path / "routing" / "level2_x_gate2.nii.gz")))
    assert np.all(gate[clear & (side > 0)] > 0.99) and np.all(gate[clear & (side < 0)] < 0.01)


class FakeNetwork(RegistrationNetwork):
    """No displacement; one categorical map at level 1 and one scalar map at level 2 (not in the registry)."""

    Config = dict

    def __init__(self) -> None:
        super().__init__({})
        self.name = "fake"

    def map_specs(self) -> list[MapSpec]:
        return [SPECS[0], SPECS[3]]

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        shape = fixed.shape[2:]
        coarse = tuple(-(-n // 2) for n in shape)
        return ModelOutput(torch.zeros(1, 3, *shape), maps={
            "parity1": (torch.arange(shape[2]).expand(*shape) % 2 + 1)[None, None].long(),
            "position2": torch.rand(1, 1, *coarse, generator=torch.Generator().manual_seed(0))})


def test_register_writes_the_maps_of_any_network(tmp_path, monkeypatch):
    pair = synthetic_pair((24, 28, 20), seed=1, max_displacement=2.0, num_labels=3)
    for name, tensor in (("fixed", pair.fixed_image), ("moving", pair.moving_image)):
        sitk.WriteImage(to_sitk(tensor, spacing=(2.0, 2.0, 2.0)), str(tmp_path / f"{name}.nii.gz"))
    metadata = {"weights": {"sha256": "0" * 64}, "weights_path": "fake", "model": {"config": {}}}
    monkeypatch.setattr(pipeline, "_load_network", lambda name, device: pipeline._Network(FakeNetwork(), metadata))
    summary = register(RegistrationRequest(tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", tmp_path / "out",
                                           model="fake", device="cpu", affine=False, refine_steps=0,
                                           network_max_voxels=1000))
    out = tmp_path / "out"
    content = json.loads((out / "maps.json").read_text())
    assert [entry["name"] for entry in content["maps"]] == ["parity1", "position2"]
    assert content["network_input"]["size"] == summary["network_grid"]["network_input_size"]  # averaged down 2x
    assert content["maps"][1]["spacing_mm"] == pytest.approx([4 * summary["network_grid"]["spacing_mm"]] * 3)
    assert not (out / "routing.json").exists()  # no expert routing
    assert {"maps.json", "maps/parity1.nii.gz", "maps/position2.nii.gz"} <= set(summary["files"])
    for entry in content["maps"]:  # each on its level's grid
        assert sitk.ReadImage(str(out / entry["file"])).GetSpacing() == pytest.approx(entry["spacing_mm"])


def test_a_length_in_network_voxels_is_written_in_mm(tmp_path):
    """RMAn's residual lengths are in voxels of the network input, whose spacing only the engine knows."""
    fixed = Grid((12, 10, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    network = Grid((6, 5, 4), (3.0, 3.0, 3.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel()))
    spec = MapSpec("length", "scalar", 1, "a residual's length", units="voxels")
    content = write_model_maps({"length": torch.full((1, 1, 4, 5, 6), 2.0)}, [spec], network, fixed,
                               np.ones(fixed.shape), lambda n: tmp_path / n)
    entry = content["maps"][0]
    assert entry["units"] == "mm" and entry["colour_map"] == "inferno"
    assert entry["statistics"]["mean"] == pytest.approx(6.0) and entry["statistics"]["max"] == pytest.approx(6.0)
    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / entry["file"]))), 6.0)


def test_foreground_per_cell_counts_past_255_fixed_voxels_along_an_axis():
    """A fine fixed image under a coarse network voxel: 300 fixed voxels along z nearest to each network voxel."""
    identity = tuple(np.eye(3).ravel())
    fixed = Grid((2, 3, 600), (1.0, 1.0, 0.1), (0.0, 0.0, 0.0), identity)
    network = Grid((2, 3, 2), (1.0, 1.0, 30.0), (0.0, 0.0, 14.95), identity)
    counts = foreground_per_cell(np.ones(fixed.shape, bool), network, fixed)
    assert counts.shape == (2, 3, 2) and (counts == 300).all()
