"""The network's maps in one table node (one row per map) and a bar chart.

Columns: the map, its level and displacement axis; for categorical maps the share of the fixed foreground's
voxels in each category (one column per category name, e.g. per expert; a row's shares sum to 1); for scalar
maps their units, mean and percentiles over the fixed foreground; last, when the engine reported it, the
network share: how much of the final deformation the network's prediction (whose maps the table shows)
accounts for. A cell that does not apply to its row (a category share of a scalar map, say) is NaN.
"""

from __future__ import annotations

import math
from typing import Optional

import slicer
import vtk

from SHMoARegLib.maps import MapsInfo

MAP_COLUMN = "Map"
LEVEL_COLUMN = "Level"
AXIS_COLUMN = "Axis"
UNITS_COLUMN = "Units"
# Scalar statistics: column name and the key of maps.json's "statistics".
STATISTIC_COLUMNS = (("Mean", "mean"), ("P5", "p5"), ("P25", "p25"), ("P50", "p50"), ("P75", "p75"), ("P95", "p95"))
NETWORK_SHARE_COLUMN = "Network share"
NETWORK_SHARE_DESCRIPTION = ("share of the final deformation beyond the affine (over the fixed foreground) that the "
                             "network's prediction accounts for, 0 to 1: the maps are the prediction's, refined "
                             "afterwards on the pair")
FIRST_CATEGORY_COLUMN = 3


def _column(array: vtk.vtkAbstractArray, name: str) -> vtk.vtkAbstractArray:
    array.SetName(name)
    return array


def utilisationTable(scene: slicer.vtkMRMLScene, info: MapsInfo, name: str,
                     networkShare: Optional[float] = None) -> slicer.vtkMRMLTableNode:
    """One row per map of ``info`` (see the module docstring)."""
    categoryNames: list[str] = []
    for mapInfo in info.categorical:
        categoryNames += [category.name for category in mapInfo.categories if category.name not in categoryNames]
    labels, levels, axes = (_column(vtk.vtkStringArray(), MAP_COLUMN), _column(vtk.vtkIntArray(), LEVEL_COLUMN),
                            _column(vtk.vtkStringArray(), AXIS_COLUMN))
    shares = [_column(vtk.vtkDoubleArray(), categoryName) for categoryName in categoryNames]
    units = _column(vtk.vtkStringArray(), UNITS_COLUMN)
    statistics = [_column(vtk.vtkDoubleArray(), columnName) for columnName, _ in STATISTIC_COLUMNS]
    share = _column(vtk.vtkDoubleArray(), NETWORK_SHARE_COLUMN)
    for mapInfo in info.maps:
        labels.InsertNextValue(mapInfo.name)
        levels.InsertNextValue(mapInfo.level)
        axes.InsertNextValue(mapInfo.axis or "")
        byName = {category.name: category.share for category in mapInfo.categories}
        for column, categoryName in zip(shares, categoryNames):
            column.InsertNextValue(byName.get(categoryName, math.nan))
        units.InsertNextValue(mapInfo.units)
        for column, (_, key) in zip(statistics, STATISTIC_COLUMNS):
            value = mapInfo.statistics.get(key)
            column.InsertNextValue(value if value is not None else math.nan)
        share.InsertNextValue(networkShare if networkShare is not None else math.nan)
    columns = [labels, levels, axes, *shares]
    if info.scalar:
        columns += [units, *statistics]
    if networkShare is not None:
        columns.append(share)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in columns:
        table.AddColumn(column)
    for categoryName in categoryNames:
        table.SetColumnDescription(categoryName, f"share of the fixed foreground's voxels in category {categoryName}")
    if info.scalar:
        for columnName, key in STATISTIC_COLUMNS:
            table.SetColumnDescription(columnName, f"{key} of a scalar map over the fixed foreground")
    if networkShare is not None:
        table.SetColumnDescription(NETWORK_SHARE_COLUMN, NETWORK_SHARE_DESCRIPTION)
    return table


def utilisationChart(scene: slicer.vtkMRMLScene, table: slicer.vtkMRMLTableNode, info: MapsInfo,
                     name: str) -> list[slicer.vtkMRMLNode]:
    """A bar chart of ``table``: one series per category, in its colour; with scalar maps only, their means.
    Returns the chart, then its series."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle("map")
    colors: dict[str, tuple[float, float, float]] = {}
    for mapInfo in info.categorical:
        for category in mapInfo.categories:
            colors.setdefault(category.name, category.color)
    if colors:
        chart.SetYAxisTitle("fraction of foreground voxels")
        series = list(colors.items())
    else:
        chart.SetYAxisTitle("mean over the foreground")
        series = [(STATISTIC_COLUMNS[0][0], (0.267, 0.005, 0.329))]
    created: list[slicer.vtkMRMLNode] = [chart]
    for columnName, color in series:
        node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {columnName}")
        node.SetAndObserveTableNodeID(table.GetID())
        node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        node.SetLabelColumnName(MAP_COLUMN)
        node.SetYColumnName(columnName)
        node.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(node.GetID())
        created.append(node)
    return created
