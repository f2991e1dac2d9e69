"""Routing outputs of a network model (written by the protocol stand-in) as label maps, gates and a table."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

import fake_engine
from mrml_helpers import fakeEngine, logicFor, sameGeometry
from SHMoARegLib import describeNetworkShare, routingKey
from SHMoARegLib.colors import SLICER_VIRIDIS_ID, VIRIDIS_NAME
from SHMoARegLib.scene import folderChildren, subjectHierarchy
from SHMoARegLib.utilisation import NETWORK_SHARE_COLUMN

EXPERT_NAMES = ["RF 3 (k3 d1)", "RF 5 (k3 d2)", "RF 7 (k7 d1)"]


@pytest.fixture
def routed(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    return logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation,
                          importGateMaps=True)


def test_routing_maps_are_on_the_fixed_grid(routed, pair):
    expected = {routingKey(level, axis) for level in fake_engine.LEVELS for axis in "xyz"}
    expected |= {routingKey(level, axis, expert) for level in fake_engine.GATE_LEVELS for axis in "xyz"
                 for expert in (1, 2, 3)}
    assert set(routed.routingNodes) == expected
    for node in routed.routingNodes.values():
        assert sameGeometry(node, pair.fixed)


def test_arg_max_maps_are_label_maps_with_one_named_colour_per_expert(routed):
    table = routed.expertColorTableNode
    assert table.GetNumberOfColors() == 4
    assert [table.GetColorName(index) for index in range(4)] == ["outside", *EXPERT_NAMES]
    rgba = [0.0] * 4
    table.GetColor(0, rgba)
    assert rgba[3] == 0.0  # outside the foreground stays transparent
    for level in fake_engine.LEVELS:
        for axisIndex, axis in enumerate("xyz"):
            node = routed.routingNodes[routingKey(level, axis)]
            assert node.IsA("vtkMRMLLabelMapVolumeNode")
            assert node.GetDisplayNode().GetColorNodeID() == table.GetID()
            values = slicer.util.arrayFromVolume(node)
            # Voxel for voxel what was written: bands of experts along the map's own axis.
            assert np.array_equal(values, fake_engine.expertMap(values.shape, 2 - axisIndex))
            assert np.array_equal(np.unique(values), [0, 1, 2, 3])


def test_gate_maps_are_scalar_volumes_shown_with_viridis(routed):
    gate = routed.routingNodes[routingKey(0, "y", 2)]
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
    assert columns[3:] == [*EXPERT_NAMES, NETWORK_SHARE_COLUMN]
    for row in range(table.GetNumberOfRows()):
        level, axis = int(table.GetCellText(row, 1)), table.GetCellText(row, 2)
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
        f"The routing maps are those of the network's prediction, refined afterwards by {fake_engine.REFINE_STEPS} "
        "steps on the pair; the prediction accounts for 69 % of the final deformation beyond the affine "
        "(network share 0.69).")


def test_everything_is_in_the_pair_folder(routed, scene):
    children = folderChildren(scene, routed.folderItemId)
    for node in [*routed.routingNodes.values(), routed.expertColorTableNode, routed.utilisationTableNode,
                 routed.utilisationChartNode, routed.transformNode, routed.warpedVolumeNode,
                 routed.warpedSegmentationNode]:
        assert node in children, node.GetName()


def test_outputs_follow_a_fixed_volume_placed_under_a_transform(scene, pair, tmp_path):
    placement = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "patient placement")
    pair.fixed.SetAndObserveTransformNodeID(placement.GetID())
    result = logicFor(scene, tmp_path, fakeEngine("routing")).register(pair.fixed, pair.moving)
    for node in [result.transformNode, result.warpedVolumeNode, *result.routingNodes.values()]:
        assert node.GetTransformNodeID() == placement.GetID(), node.GetName()
    assert pair.moving.GetTransformNodeID() == result.transformNode.GetID()


def test_gate_maps_are_left_out_by_default(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    result = logic.register(pair.fixed, pair.moving)
    assert set(result.routingNodes) == {routingKey(level, axis) for level in fake_engine.LEVELS for axis in "xyz"}


def test_second_run_keeps_the_first_runs_nodes(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("routing"))
    first = logic.register(pair.fixed, pair.moving)
    firstNodes = [first.transformNode, first.warpedVolumeNode, first.utilisationTableNode, *first.routingNodes.values()]
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

