"""A network's maps (written by the protocol stand-in) as label maps and scalar volumes, SHMoAReg's gates, and
their table: SHMoAReg-style expert maps (``routing``) and another network's categorical and scalar maps (``maps``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import slicer

import fake_engine
from mrml_helpers import fakeEngine, logicFor, onGridInFrameOf, sameGeometry
from SHMoARegLib import RegistrationOptions, describeNetworkShare, routingKey
from SHMoARegLib.colors import INFERNO_NAME, SLICER_INFERNO_ID, SLICER_VIRIDIS_ID, VIRIDIS_NAME
from SHMoARegLib.maps import hexToRgb, readMapsInfo
from SHMoARegLib.scene import folderChildren, subjectHierarchy
from SHMoARegLib.utilisation import NETWORK_SHARE_COLUMN, STATISTIC_COLUMNS

EXPERT_NAMES = [expert["name"] for expert in fake_engine.EXPERTS]


@pytest.fixture
def routed(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    return logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation,
                          options=RegistrationOptions(importGateMaps=True))


@pytest.fixture
def otherMaps(scene, pair, tmp_path):
    return logicFor(scene, tmp_path, fakeEngine("maps")).register(pair.fixed, pair.moving)


def test_maps_and_gates_load_on_their_own_grids_in_the_fixed_frame(routed, pair, otherMaps):
    assert set(routed.mapNodes) == {routingKey(level, axis) for level in fake_engine.LEVELS for axis in "xyz"}
    assert set(routed.gateNodes) == {routingKey(level, axis, expert) for level in fake_engine.GATE_LEVELS
                                     for axis in "xyz" for expert in (1, 2, 3)}
    fixedSpacing = np.asarray(pair.fixed.GetSpacing())
    for key, node in [*routed.mapNodes.items(), *routed.gateNodes.items()]:
        level = int(key.split("_")[0].removeprefix("level"))
        assert onGridInFrameOf(node, pair.fixed, fixedSpacing * 2 ** level), key
    for node in otherMaps.mapNodes.values():  # maps on the fixed grid, as engines before issue 24 wrote them
        assert sameGeometry(node, pair.fixed)


def test_arg_max_maps_are_label_maps_with_one_named_colour_per_expert(routed):
    assert len(routed.mapColorTableNodes) == 1  # one table for every map of the same experts
    table = routed.mapColorTableNodes[0]
    assert table.GetNumberOfColors() == 4
    assert [table.GetColorName(index) for index in range(4)] == ["outside", *EXPERT_NAMES]
    rgba = [0.0] * 4
    table.GetColor(0, rgba)
    assert rgba[3] == 0.0  # outside the foreground stays transparent
    for value, colour in enumerate(fake_engine.CATEGORY_COLOURS, start=1):
        table.GetColor(value, rgba)
        assert rgba == pytest.approx([*hexToRgb(colour), 1.0])
    for level in fake_engine.LEVELS:
        for axisIndex, axis in enumerate("xyz"):
            node = routed.mapNodes[routingKey(level, axis)]
            assert node.IsA("vtkMRMLLabelMapVolumeNode")
            assert node.GetDisplayNode().GetColorNodeID() == table.GetID()
            values = slicer.util.arrayFromVolume(node)
            # Voxel for voxel what was written: bands of experts along the map's own axis.
            assert np.array_equal(values, fake_engine.expertMap(values.shape, 2 - axisIndex))
            assert np.array_equal(np.unique(values), [0, 1, 2, 3])


def test_gate_maps_are_scalar_volumes_shown_with_viridis(routed):
    gate = routed.gateNodes[routingKey(1, "y", 2)]
    assert not gate.IsA("vtkMRMLLabelMapVolumeNode")
    display = gate.GetDisplayNode()
    viridis = gate.GetScene().GetNodeByID(display.GetColorNodeID())
    assert viridis.GetID() == SLICER_VIRIDIS_ID or viridis.GetName() == VIRIDIS_NAME
    assert viridis.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    viridis.GetColor(0, first)
    viridis.GetColor(255, last)
    assert first[:3] == pytest.approx([0.267, 0.005, 0.329], abs=5e-3)  # dark purple ...
    assert last[:3] == pytest.approx([0.993, 0.906, 0.144], abs=5e-3)  # ... to yellow
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert np.unique(slicer.util.arrayFromVolume(gate)) == pytest.approx([0.1, 0.8])


def test_utilisation_table_rows_sum_to_one_per_level_and_axis(routed):
    table = routed.utilisationTableNode
    expected = fake_engine.utilisation()
    assert table.GetNumberOfRows() == len(fake_engine.LEVELS) * 3
    columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    assert columns == ["Map", "Level", "Axis", *EXPERT_NAMES, NETWORK_SHARE_COLUMN]
    for row in range(table.GetNumberOfRows()):
        level, axis = int(table.GetCellText(row, 1)), table.GetCellText(row, 2)
        assert table.GetCellText(row, 0) == routingKey(level, axis)
        fractions = [float(table.GetCellText(row, column)) for column in range(3, 6)]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-6)
        assert fractions == pytest.approx(expected[str(level)][axis])
    chart = routed.utilisationChartNode
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    assert routed.summary["routing"]["moaUtilisation"] == {"3": [0.5, 0.5]}


def test_utilisation_table_shows_the_network_share_of_the_final_deformation(routed):
    table = routed.utilisationTableNode
    column = table.GetNumberOfColumns() - 1
    assert table.GetColumnName(column) == NETWORK_SHARE_COLUMN
    shares = {float(table.GetCellText(row, column)) for row in range(table.GetNumberOfRows())}
    assert shares == {fake_engine.NETWORK_SHARE}
    description = table.GetColumnDescription(NETWORK_SHARE_COLUMN)
    assert "final deformation" in description and "network's prediction" in description
    assert routed.summary["routing"]["networkShare"] == fake_engine.NETWORK_SHARE
    # The status text says whose routing the maps show and how much refinement followed.
    assert describeNetworkShare(routed.summary) == (
        f"The network's maps are those of its prediction, refined afterwards by {fake_engine.REFINE_STEPS} "
        "steps on the pair; the prediction accounts for 69 % of the final deformation beyond the affine "
        "(network share 0.69).")


def test_everything_is_in_the_pair_folder(routed, scene):
    children = folderChildren(scene, routed.folderItemId)
    for node in [*routed.mapNodes.values(), *routed.gateNodes.values(), *routed.mapColorTableNodes,
                 routed.utilisationTableNode,
                 routed.utilisationChartNode, routed.transformNode, routed.warpedVolumeNode,
                 routed.warpedSegmentationNode]:
        assert node in children, node.GetName()


def test_outputs_follow_a_fixed_volume_placed_under_a_transform(scene, pair, tmp_path):
    placement = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "patient placement")
    pair.fixed.SetAndObserveTransformNodeID(placement.GetID())
    result = logicFor(scene, tmp_path, fakeEngine("routing")).register(pair.fixed, pair.moving)
    for node in [result.transformNode, result.warpedVolumeNode, *result.mapNodes.values()]:
        assert node.GetTransformNodeID() == placement.GetID(), node.GetName()
    assert pair.moving.GetTransformNodeID() == result.transformNode.GetID()


def test_gate_maps_are_left_out_by_default(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    result = logic.register(pair.fixed, pair.moving)
    assert result.gateNodes == {}
    assert set(result.mapNodes) == {routingKey(level, axis) for level in fake_engine.LEVELS for axis in "xyz"}


def test_second_run_keeps_the_first_runs_nodes(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    first = logic.register(pair.fixed, pair.moving)
    firstNodes = [first.transformNode, first.warpedVolumeNode, first.utilisationTableNode, *first.mapNodes.values()]
    second = logic.register(pair.fixed, pair.moving)
    for node in firstNodes:
        assert scene.IsNodePresent(node)
    assert second.transformNode.GetName() != first.transformNode.GetName()
    assert pair.moving.GetTransformNodeID() == second.transformNode.GetID()
    hierarchy = subjectHierarchy(scene)
    names = [hierarchy.GetItemName(item) for item in (first.folderItemId, second.folderItemId)]
    assert names == ["synthetic moving to synthetic fixed", "synthetic moving to synthetic fixed (2)"]


def test_non_blocking_run_is_driven_by_poll(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    fractions = []
    assert logic.register(pair.fixed, pair.moving, waitForCompletion=False,
                          progressCallback=lambda fraction, message: fractions.append(fraction)) is None
    assert logic.isRunning
    with pytest.raises(RuntimeError, match="already running"):
        logic.register(pair.fixed, pair.moving)
    result = None
    for _ in range(600):
        result = logic.poll(timeout=0.05)
        if result is not None:
            break
    assert result is not None and not logic.isRunning
    assert fractions[0] == 0.1 and fractions[-1] == 1.0
    assert logic.poll() is None
    assert list(tmp_path.iterdir()) == []  # temporary files removed



def test_overlay_choices_are_the_maps_then_the_gates(routed):
    choices = routed.overlayChoices()
    keys = [choice.key for choice in choices]
    assert keys[:6] == [routingKey(level, axis) for level in fake_engine.LEVELS for axis in "xyz"]
    assert keys[6:] == [routingKey(1, axis, expert) for axis in "xyz" for expert in (1, 2, 3)]
    assert choices[0].description == "the fake level1_x_expert" and choices[0].node is routed.mapNodes[keys[0]]
    assert choices[7].description == "decoder level 1, x displacement: the gate probability of expert k3d2"


def test_another_networks_categorical_map_is_a_label_map_with_its_categories(otherMaps, pair):
    assert set(otherMaps.mapNodes) == {name for name, *_ in fake_engine.OTHER_MAPS}
    assert otherMaps.gateNodes == {} and otherMaps.routing is None
    clusters = otherMaps.mapNodes["level1_cluster"]
    assert clusters.IsA("vtkMRMLLabelMapVolumeNode") and sameGeometry(clusters, pair.fixed)
    (table,) = otherMaps.mapColorTableNodes
    assert clusters.GetDisplayNode().GetColorNodeID() == table.GetID()
    assert [table.GetColorName(index) for index in range(4)] == ["outside", *fake_engine.CLUSTERS]


@pytest.mark.parametrize("name,builtIn,own,window", [
    ("residual_magnitude", SLICER_INFERNO_ID, INFERNO_NAME, (0.0, 4.0)),
    ("attention_gate", SLICER_VIRIDIS_ID, VIRIDIS_NAME, (0.0, 1.0))])
def test_scalar_maps_are_volumes_with_the_colour_map_of_their_units(otherMaps, pair, name, builtIn, own, window):
    node = otherMaps.mapNodes[name]
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert sameGeometry(node, pair.fixed)
    display = node.GetDisplayNode()
    colors = node.GetScene().GetNodeByID(display.GetColorNodeID())
    assert colors.GetID() == builtIn or colors.GetName() == own
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx(window)
    values = slicer.util.arrayFromVolume(node)
    assert values.max() == pytest.approx(window[1] if name == "residual_magnitude" else 0.9)


def test_the_table_has_shares_for_categorical_maps_and_statistics_for_scalar_maps(otherMaps):
    table = otherMaps.utilisationTableNode
    columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    statistics = [column for column, _ in STATISTIC_COLUMNS]
    assert columns == ["Map", "Level", "Axis", *fake_engine.CLUSTERS, "Units", *statistics, NETWORK_SHARE_COLUMN]
    rows = {table.GetCellText(row, 0): row for row in range(table.GetNumberOfRows())}
    assert list(rows) == [name for name, *_ in fake_engine.OTHER_MAPS]

    def numbers(row: int, names: list) -> list:
        return [float(table.GetCellText(row, columns.index(name))) for name in names]

    clusters = rows["level1_cluster"]
    assert numbers(clusters, list(fake_engine.CLUSTERS)) == pytest.approx(fake_engine.CLUSTER_SHARES)
    assert all(math.isnan(value) for value in numbers(clusters, statistics))
    for name, expected in (("residual_magnitude", fake_engine.RESIDUAL_STATISTICS),
                           ("attention_gate", fake_engine.GATE_STATISTICS)):
        assert numbers(rows[name], statistics) == pytest.approx([expected[key] for _, key in STATISTIC_COLUMNS])
        assert all(math.isnan(value) for value in numbers(rows[name], list(fake_engine.CLUSTERS)))
    assert table.GetCellText(rows["residual_magnitude"], columns.index("Units")) == "mm"
    assert int(table.GetCellText(rows["attention_gate"], 1)) == 2
    assert numbers(clusters, [NETWORK_SHARE_COLUMN]) == [fake_engine.NETWORK_SHARE]
    assert otherMaps.utilisationChartNode.GetNumberOfPlotSeriesNodes() == len(fake_engine.CLUSTERS)
    assert [choice.key for choice in otherMaps.overlayChoices()] == [name for name, *_ in fake_engine.OTHER_MAPS]


def test_maps_json_is_optional_but_must_be_consistent(tmp_path):
    assert readMapsInfo(tmp_path) is None
    good = {"name": "a", "file": "maps/a.nii.gz", "kind": "scalar", "level": 1, "statistics": {"mean": 1.0}}
    (tmp_path / "maps.json").write_text(json.dumps({"maps": [good]}))
    info = readMapsInfo(tmp_path)
    assert info.maps[0].path == tmp_path / "maps" / "a.nii.gz" and info.maps[0].statistics["p95"] is None
    for change, message in (({"kind": "vector"}, "kind"), ({"file": "../a.nii.gz"}, "inside the output folder"),
                            ({"level": 0}, "level"), ({"axis": "w"}, "axis"),
                            ({"kind": "categorical", "categories": [{"value": 2, "name": "b", "colour": "#000000",
                                                                     "share": 1.0}]}, "numbered"),
                            ({"kind": "categorical", "categories": [{"value": 1, "name": "b", "colour": "black",
                                                                     "share": 1.0}]}, "colour")):
        (tmp_path / "maps.json").write_text(json.dumps({"maps": [{**good, **change}]}))
        with pytest.raises(ValueError, match=message):
            readMapsInfo(tmp_path)
