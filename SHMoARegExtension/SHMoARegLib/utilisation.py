"""Expert utilisation as a table node (one row per level and axis, one column per expert) and a bar chart."""

from __future__ import annotations

import slicer
import vtk

from SHMoARegLib.routing import RoutingInfo

ROW_LABEL_COLUMN = "Level/axis"
LEVEL_COLUMN = "Level"
AXIS_COLUMN = "Axis"


def utilisationTable(scene: slicer.vtkMRMLScene, info: RoutingInfo, name: str) -> slicer.vtkMRMLTableNode:
    """Fractions of foreground voxels routed to each expert, per level and axis (rows sum to 1)."""
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
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in (labels, levels, axes, *expertColumns):
        table.AddColumn(column)
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
    for index in range(3, table.GetNumberOfColumns()):
        columnName = table.GetColumnName(index)
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {columnName}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetLabelColumnName(ROW_LABEL_COLUMN)
        series.SetYColumnName(columnName)
        colors.GetColor(index - 2, color)
        series.SetColor(color[:3])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        created.append(series)
    return created
