"""What a clinician checks in ``summary.json`` before trusting a result, as table nodes and sentences.

Landmark TRE before and after per point, with their mean and maximum judged against the AAPM TG-132
tolerance; Dice and HD95 before and after per segment; the Jacobian's smoothness (SDlogJ) and folding.
Values the engine reports as null show as NaN in the tables.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import slicer
import vtk

# AAPM TG-132 tolerance for landmark target registration error after registration.
TG132_MEAN_TOLERANCE_MM = 2.0
TG132_MAX_TOLERANCE_MM = 5.0
TG132_RULE = f"mean <= {TG132_MEAN_TOLERANCE_MM:g} mm, maximum <= {TG132_MAX_TOLERANCE_MM:g} mm"
PASS, FAIL = "pass", "fail"

LANDMARK_COLUMN = "Landmark"
TRE_BEFORE_COLUMN = "TRE before (mm)"
TRE_AFTER_COLUMN = "TRE after (mm)"
TOLERANCE_COLUMN = "TG-132 tolerance (mm)"
VERDICT_COLUMN = "TG-132"
MEAN_ROW = "mean"
MAXIMUM_ROW = "maximum"

SEGMENT_COLUMN = "Segment"
DICE_BEFORE_COLUMN = "Dice before"
DICE_AFTER_COLUMN = "Dice after"
HD95_BEFORE_COLUMN = "HD95 before (mm)"
HD95_AFTER_COLUMN = "HD95 after (mm)"


def landmarkTable(scene: slicer.vtkMRMLScene, metrics: dict, names: dict[str, str],
                  name: str) -> Optional[slicer.vtkMRMLTableNode]:
    """TRE per landmark (shown by ``names[label]``), then mean and maximum rows, each with its TG-132 tolerance
    and verdict on the value after registration; None when the run had no landmarks."""
    after = metrics.get("tre_per_point_mm")
    if after is None:
        return None
    before = metrics.get("tre_before_per_point_mm") or [None] * len(after)
    labels = metrics.get("landmark_labels") or [str(index + 1) for index in range(len(after))]
    if not len(before) == len(labels) == len(after):
        raise ValueError(f"summary metrics list {len(labels)} landmark labels, {len(before)} TRE values before and "
                         f"{len(after)} after; they must be as many")
    rows = [(names.get(label, label), valueBefore, valueAfter, TG132_MAX_TOLERANCE_MM)
            for label, valueBefore, valueAfter in zip(labels, before, after)]
    rows.append((MEAN_ROW, metrics.get("tre_before_mm"), metrics.get("tre_mm"), TG132_MEAN_TOLERANCE_MM))
    rows.append((MAXIMUM_ROW, metrics.get("tre_before_max_mm"), metrics.get("tre_max_mm"), TG132_MAX_TOLERANCE_MM))
    verdicts = [_verdict(valueAfter, tolerance) for _, _, valueAfter, tolerance in rows]
    table = _table(scene, name, [
        _stringColumn(LANDMARK_COLUMN, [row[0] for row in rows]),
        _doubleColumn(TRE_BEFORE_COLUMN, [row[1] for row in rows]),
        _doubleColumn(TRE_AFTER_COLUMN, [row[2] for row in rows]),
        _doubleColumn(TOLERANCE_COLUMN, [row[3] for row in rows]),
        _stringColumn(VERDICT_COLUMN, verdicts),
    ])
    table.SetColumnDescription(TRE_BEFORE_COLUMN, "distance between corresponding points before registration")
    table.SetColumnDescription(TRE_AFTER_COLUMN, "distance between the fixed point mapped by the transform and its "
                                                 "moving point")
    table.SetColumnDescription(VERDICT_COLUMN, f"AAPM TG-132 tolerance after registration: {TG132_RULE} (each point "
                                               "against the maximum)")
    return table


def segmentTable(scene: slicer.vtkMRMLScene, metrics: dict, names: dict[int, str],
                 name: str) -> Optional[slicer.vtkMRMLTableNode]:
    """Dice and HD95 before and after per segment (``names[label]``), then their means; None without
    segmentation metrics."""
    if metrics.get("dice") is None:
        return None
    perLabel = {key: metrics.get(key) or {} for key in ("dice_before", "dice", "hd95_before_mm", "hd95_mm")}
    labels = sorted({int(label) for values in perLabel.values() for label in values})
    rows = [(names.get(label, f"label {label}"), *(values.get(str(label)) for values in perLabel.values()))
            for label in labels]
    rows.append((MEAN_ROW, *(metrics.get(key) for key in ("mean_dice_before", "mean_dice", "mean_hd95_before_mm",
                                                           "mean_hd95_mm"))))
    columns = [_stringColumn(SEGMENT_COLUMN, [row[0] for row in rows])]
    for index, columnName in enumerate((DICE_BEFORE_COLUMN, DICE_AFTER_COLUMN, HD95_BEFORE_COLUMN, HD95_AFTER_COLUMN),
                                       start=1):
        columns.append(_doubleColumn(columnName, [row[index] for row in rows]))
    table = _table(scene, name, columns)
    table.SetColumnDescription(HD95_AFTER_COLUMN, "95th percentile of the distances between the fixed and the "
                                                  "warped segment's surfaces")
    return table


def tg132Passed(metrics: dict) -> Optional[bool]:
    """Whether the landmark TRE after registration is within the TG-132 tolerance; None without landmarks."""
    mean, maximum = metrics.get("tre_mm"), metrics.get("tre_max_mm")
    if mean is None or maximum is None:
        return None
    return mean <= TG132_MEAN_TOLERANCE_MM and maximum <= TG132_MAX_TOLERANCE_MM


def describeMetrics(summary: dict) -> list[str]:
    """Sentences on the checks ``summary.json`` reports: smoothness and folding, overlap, landmark TRE."""
    metrics = summary.get("metrics") or {}
    sentences = []
    if metrics.get("sdlogj") is not None and metrics.get("fraction_nonpositive") is not None:
        sentences.append(f"Smoothness: SDlogJ {metrics['sdlogj']:.3f}; folding: "
                         f"{100 * metrics['fraction_nonpositive']:.2f} % of voxels with J <= 0.")
    if metrics.get("mean_dice") is not None:
        sentences.append(f"Mean Dice {_number(metrics.get('mean_dice_before'), 3)} -> "
                         f"{_number(metrics['mean_dice'], 3)}.")
    if metrics.get("mean_hd95_mm") is not None:
        sentences.append(f"Mean HD95 {_number(metrics.get('mean_hd95_before_mm'), 1)} -> "
                         f"{_number(metrics['mean_hd95_mm'], 1)} mm.")
    passed = tg132Passed(metrics)
    if passed is not None:
        sentences.append(f"Landmark TRE mean {_number(metrics.get('tre_before_mm'), 2)} -> "
                         f"{_number(metrics['tre_mm'], 2)} mm, maximum {_number(metrics.get('tre_before_max_mm'), 2)} "
                         f"-> {_number(metrics['tre_max_mm'], 2)} mm: {'within' if passed else 'OUTSIDE'} the "
                         f"AAPM TG-132 tolerance ({TG132_RULE}).")
    return sentences


def _verdict(value: Optional[float], tolerance: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return PASS if value <= tolerance else FAIL


def _number(value: Optional[float], decimals: int) -> str:
    return "?" if value is None else f"{value:.{decimals}f}"


def _stringColumn(name: str, values: Sequence[str]) -> vtk.vtkStringArray:
    column = vtk.vtkStringArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(value)
    return column


def _doubleColumn(name: str, values: Sequence[Optional[float]]) -> vtk.vtkDoubleArray:
    column = vtk.vtkDoubleArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(math.nan if value is None else float(value))
    return column


def _table(scene: slicer.vtkMRMLScene, name: str, columns: list[vtk.vtkAbstractArray]) -> slicer.vtkMRMLTableNode:
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in columns:
        table.AddColumn(column)
    return table
