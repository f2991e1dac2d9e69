"""Landmark point lists (markups fiducial nodes) to the engine's CSV files, paired by label or by order.

Two lists are paired by label when every point of both has a label, the labels are unique in each list
and the lists share labels (the label sets must then be equal). Otherwise they are paired by order (the
counts must be equal) and both files get the labels "1".."N", so the engine pairs them the same way;
this covers Slicer's own labels ("F-1", "F-2" in list F, "M-1" in list M), which name no correspondence.
Points are the control points' world positions (parent transforms applied), written in LPS as the
engine reads them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])
CSV_HEADER = ("label", "x", "y", "z")
CSV_COORDINATE_COMMENT = "# coordinate system: LPS"


@dataclass(frozen=True)
class LandmarkPairs:
    """The rows written for the engine (label, LPS point) and, by written label, the name to show."""

    fixedRows: list[tuple[str, np.ndarray]]
    movingRows: list[tuple[str, np.ndarray]]
    displayNames: dict[str, str]
    byLabel: bool


def pairLandmarks(fixed: slicer.vtkMRMLMarkupsFiducialNode,
                  moving: slicer.vtkMRMLMarkupsFiducialNode) -> LandmarkPairs:
    """Pair two point lists for the engine; raises ValueError with a one-line reason when they cannot be."""
    fixedLabels, fixedPoints = _controlPoints(fixed, "fixed")
    movingLabels, movingPoints = _controlPoints(moving, "moving")
    if _labelled(fixedLabels) and _labelled(movingLabels) and set(fixedLabels) & set(movingLabels):
        onlyFixed = [label for label in fixedLabels if label not in movingLabels]
        onlyMoving = [label for label in movingLabels if label not in fixedLabels]
        if onlyFixed or onlyMoving:
            parts = [f"{role} only: {', '.join(labels)}"
                     for role, labels in (("fixed", onlyFixed), ("moving", onlyMoving)) if labels]
            raise ValueError(f"landmark labels do not match ({'; '.join(parts)}); give corresponding points the "
                             "same label, or clear the labels to pair the points by order")
        return LandmarkPairs(list(zip(fixedLabels, fixedPoints)), list(zip(movingLabels, movingPoints)),
                             {label: label for label in fixedLabels}, byLabel=True)
    if len(fixedLabels) != len(movingLabels):
        raise ValueError(f"the fixed landmark list {fixed.GetName()!r} has {len(fixedLabels)} points and the moving "
                         f"list {moving.GetName()!r} {len(movingLabels)}; points without unique labels are paired by "
                         "order, so the counts must be equal")
    numbers = [str(index + 1) for index in range(len(fixedLabels))]
    names = {number: label or number for number, label in zip(numbers, fixedLabels)}
    return LandmarkPairs(list(zip(numbers, fixedPoints)), list(zip(numbers, movingPoints)), names, byLabel=False)


def writeLandmarks(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Write ``(label, LPS point)`` rows as the engine's landmark CSV (header ``label,x,y,z``, LPS comment)."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        stream.write(CSV_COORDINATE_COMMENT + "\n")
        writer = csv.writer(stream)
        writer.writerow(CSV_HEADER)
        for label, point in rows:
            writer.writerow([label, *(repr(float(value)) for value in point)])


def _controlPoints(node: slicer.vtkMRMLMarkupsFiducialNode, role: str) -> tuple[list[str], list[np.ndarray]]:
    """Labels and LPS world positions of a list's control points; every point must be placed."""
    if node is None or not node.IsA("vtkMRMLMarkupsFiducialNode"):
        raise ValueError(f"the {role} landmarks must be a point list (markups fiducial node)")
    count = node.GetNumberOfControlPoints()
    if count == 0:
        raise ValueError(f"the {role} landmark list {node.GetName()!r} has no points")
    labels, points = [], []
    for index in range(count):
        label = node.GetNthControlPointLabel(index).strip()
        if node.GetNthControlPointPositionStatus(index) != slicer.vtkMRMLMarkupsNode.PositionDefined:
            raise ValueError(f"point {label or index + 1} of the {role} landmark list {node.GetName()!r} has no "
                             "position; place it or delete it")
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(index, position)
        labels.append(label)
        points.append(RAS_TO_LPS * np.array(position))
    return labels, points


def _labelled(labels: list[str]) -> bool:
    """Whether the labels can pair points: none empty, none repeated."""
    return all(labels) and len(set(labels)) == len(labels)
