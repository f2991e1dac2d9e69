"""Expert utilisation as a table node (one row per level and axis, one column per expert) and a bar chart.

The table's last column, when the engine reported it, is the network share: how much of the final
deformation the network's prediction (whose routing the table shows) accounts for.
"""

from __future__ import annotations

import slicer
import vtk

from SHMoARegLib.routing import RoutingInfo

ROW_LABEL_COLUMN = "Level/axis"
LEVEL_COLUMN = "Level"
AXIS_COLUMN = "Axis"
NETWORK_SHARE_COLUMN = "Network share"
NETWORK_SHARE_DESCRIPTION = ("share of the final deformation beyond the affine (over the fixed foreground) that the "
                             "network's prediction accounts for, 0 to 1: the routing maps are the prediction's, "
                             "refined afterwards on the pair")
FIRST_EXPERT_COLUMN = 3


def utilisationTable(scene: slicer.vtkMRMLScene, info: RoutingInfo, name: str) -> slicer.vtkMRMLTableNode:
    """Fractions of foreground voxels routed to each expert, per level and axis (the expert columns of a row sum
    to 1), then the network share, the same on every row."""
    rows = [(level, axis, fractions) for level, axes in info.utilisation.items() for axis, fractions in axes.items()]
    labels, levels, axes = vtk.vtkStringArray(), vtk.vtkIntArray(), vtk.vtkStringArray()
    for array, columnName in ((labels, ROW_LABEL_COLUMN), (levels, LEVEL_COLUMN), (axes, AXIS_COLUMN)):
        array.SetName(columnName)
    expertColumns = []
    for expert in info.experts:
        column = vtk.vtkDoubleArray()
        column.SetName(expert.colorName)
        expertColumns.append(column)
    for level, axis, fractions in rows:
        labels.InsertNextValue(f"L{level} {axis}")
        levels.InsertNextValue(level)
        axes.InsertNextValue(axis)
        for column, fraction in zip(expertColumns, fractions):
            column.InsertNextValue(fraction)
    columns = [labels, levels, axes, *expertColumns]
    if info.networkShare is not None:
        networkShare = vtk.vtkDoubleArray()
        networkShare.SetName(NETWORK_SHARE_COLUMN)
        for _ in rows:
            networkShare.InsertNextValue(info.networkShare)
        columns.append(networkShare)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in columns:
        table.AddColumn(column)
    if info.networkShare is not None:
        table.SetColumnDescription(NETWORK_SHARE_COLUMN, NETWORK_SHARE_DESCRIPTION)
    for column, expert in zip(expertColumns, info.experts):
        table.SetColumnDescription(column.GetName(), f"expert {expert.name}: kernel {expert.kernelSize}, "
                                   f"dilation {expert.dilation}, receptive field {expert.receptiveField} voxels")
    return table


def utilisationChart(scene: slicer.vtkMRMLScene, table: slicer.vtkMRMLTableNode,
                     colors: slicer.vtkMRMLColorTableNode, name: str) -> list[slicer.vtkMRMLNode]:
    """A bar chart of ``table`` (one series per expert, coloured as in ``colors``); returns chart then series."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle("level and axis")
    chart.SetYAxisTitle("fraction of foreground voxels")
    created: list[slicer.vtkMRMLNode] = [chart]
    color = [0.0, 0.0, 0.0, 0.0]
    for index in range(FIRST_EXPERT_COLUMN, table.GetNumberOfColumns()):
        columnName = table.GetColumnName(index)
        if columnName == NETWORK_SHARE_COLUMN:
            continue
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {columnName}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetLabelColumnName(ROW_LABEL_COLUMN)
        series.SetYColumnName(columnName)
        colors.GetColor(index - FIRST_EXPERT_COLUMN + 1, color)
        series.SetColor(color[:3])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        created.append(series)
    return created
