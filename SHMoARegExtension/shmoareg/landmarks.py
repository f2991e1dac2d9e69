"""Landmark (point list) files: CSV/TSV, Slicer ``.fcsv`` and Slicer markups ``.mrk.json``.

Points are returned in physical LPS millimetres (the ITK/SimpleITK convention), one per row.

Markups JSON (``*.json``): the control points of every markups node in the file, in file
order. Each node's ``coordinateSystem`` is ``"LPS"`` (Slicer's default when absent) or
``"RAS"``; RAS points are converted by negating x and y. Units must be millimetres.
Control points whose ``positionStatus`` is not ``"defined"`` are refused, because dropping
them would break the correspondence between two lists.

CSV (any other name; tab-separated for ``*.tsv``). Lines starting with ``#`` are comments.
The coordinate system is decided as follows:

* a header row naming the columns ``r,a,s`` means RAS, ``l,p,s`` means LPS;
* a header naming ``x,y,z`` (or no header) means LPS, unless a comment line says
  ``# coordinate system: RAS`` (``=`` also accepted; Slicer's ``# CoordinateSystem = 0`` is RAS,
  ``= 1`` is LPS). ``.fcsv`` files without such a comment are RAS, as Slicer wrote them.

A header is recognised when the first row names a coordinate triple (case-insensitive); a
Slicer ``# columns = ...`` comment also serves as header. Labels come from a ``label`` or
``name`` column, else from the first column when it is not a coordinate. Without a header,
rows are ``x,y,z`` or ``label,x,y,z``. Unlabelled points get labels ``"1"``, ``"2"``, ...
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from shmoareg.errors import InputError

RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])
_COORDINATE_COLUMNS = {("x", "y", "z"): None, ("l", "p", "s"): "LPS", ("r", "a", "s"): "RAS"}
_LABEL_COLUMNS = ("label", "name")
_SYSTEM_COMMENT = re.compile(r"coordinate\s*system\s*[:=]\s*(\S+)", re.IGNORECASE)
_COLUMNS_COMMENT = re.compile(r"^#\s*columns\s*=\s*(.*)$", re.IGNORECASE)
_SYSTEM_NAMES = {"ras": "RAS", "0": "RAS", "lps": "LPS", "1": "LPS"}


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """Read a landmark file as an ``(N, 3)`` array of LPS millimetres (see the module notes)."""
    return read_labeled_landmarks(path)[0]


def read_labeled_landmarks(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read a landmark file as ``(points (N, 3) in LPS mm, labels)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"landmark file not found: {path} (check the path)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"cannot read landmark file {path}: not a UTF-8 text file") from None
    if path.name.lower().endswith(".json"):
        points, labels = _parse_markups_json(text, path)
    else:
        points, labels = _parse_csv(text, path)
    if not points:
        raise InputError(f"landmark file {path} holds no points; place at least one landmark")
    return np.array(points, dtype=np.float64), labels


def pair_landmarks(fixed: tuple[np.ndarray, list[str]], moving: tuple[np.ndarray, list[str]]
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Corresponding points ``(fixed (N, 3), moving (N, 3), labels)`` from two labelled lists.

    When both lists hold the same unique labels, points are paired by label (in the fixed
    list's order); when they share no label at all (e.g. Slicer's default names ``F-1`` and
    ``M-1``), by order. Anything else (some labels shared, some not; repeated labels; different
    counts) is refused with the labels at fault.
    """
    (fixed_points, fixed_labels), (moving_points, moving_labels) = fixed, moving
    shared = set(fixed_labels) & set(moving_labels)
    if not shared:
        if len(fixed_points) != len(moving_points):
            raise InputError(f"landmark files hold {len(fixed_points)} fixed and {len(moving_points)} moving points "
                             "with no label in common; give corresponding points, by label or in the same order")
        return fixed_points, moving_points, list(fixed_labels)
    for role, labels in (("fixed", fixed_labels), ("moving", moving_labels)):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise InputError(f"the {role} landmarks repeat the label(s) {', '.join(repeated)}; "
                             "give each point its own label")
    unmatched = sorted(set(fixed_labels) ^ set(moving_labels))
    if unmatched:
        raise InputError(f"landmark label(s) {', '.join(unmatched)} are in only one of the two files; "
                         "give both files the same labels")
    order = [moving_labels.index(label) for label in fixed_labels]
    return fixed_points, moving_points[order], list(fixed_labels)


def write_landmarks_csv(points: np.ndarray, path: str | os.PathLike, labels: list[str] | None = None) -> None:
    """Write points (LPS mm) as CSV with the header ``label,x,y,z``; labels default to 1..N."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"landmarks have shape {array.shape}; give an (N, 3) array of x, y, z")
    if labels is None:
        labels = [str(index + 1) for index in range(len(array))]
    if len(labels) != len(array):
        raise InputError(f"{len(labels)} labels for {len(array)} landmarks; give one label per point")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "x", "y", "z"])
        for label, point in zip(labels, array):
            writer.writerow([label, *(repr(float(value)) for value in point)])


def _coordinate(value: Any, where: str, path: Path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"landmark file {path}, {where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"landmark file {path}, {where}: coordinate {value!r} is not finite")
    return number


def _to_lps(point: list[float], system: str) -> list[float]:
    return list(np.asarray(point) * RAS_TO_LPS) if system == "RAS" else point


# --- Slicer markups JSON -------------------------------------------------------------------

def _parse_markups_json(text: str, path: Path) -> tuple[list[list[float]], list[str]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"cannot read landmark file {path}: not valid JSON ({error})") from None
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list):
        raise InputError(f"landmark file {path} is not a Slicer markups file (no 'markups' list)")
    points, labels = [], []
    for markup in markups:
        if not isinstance(markup, dict):
            raise InputError(f"landmark file {path}: every entry of 'markups' must be an object")
        system = _markup_system(markup, path)
        for index, control_point in enumerate(markup.get("controlPoints") or [], start=1):
            label, point = _control_point(control_point, index, path)
            points.append(_to_lps(point, system))
            labels.append(label)
    return points, labels


def _markup_system(markup: dict, path: Path) -> str:
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"landmark file {path}: coordinateSystem {system!r} is not supported; use LPS or RAS")
    units = markup.get("coordinateUnits", "mm")
    if isinstance(units, dict):
        units = units.get("codeValue")
    if units != "mm":
        raise InputError(f"landmark file {path}: coordinateUnits {units!r} is not supported; save in mm")
    return system


def _control_point(control_point: object, index: int, path: Path) -> tuple[str, list[float]]:
    if not isinstance(control_point, dict):
        raise InputError(f"landmark file {path}: control point {index} is not an object")
    label = str(control_point.get("label", index))
    status = control_point.get("positionStatus", "defined")
    if status != "defined":
        raise InputError(
            f"landmark file {path}: control point {label!r} is not placed (positionStatus {status!r}); "
            "place or delete it"
        )
    position = control_point.get("position")
    if not isinstance(position, list) or len(position) != 3:
        raise InputError(f"landmark file {path}: control point {label!r} needs a 3-element 'position'")
    where = f"control point {label!r}"
    return label, [_coordinate(value, where, path) for value in position]


# --- CSV ------------------------------------------------------------------------------------

def _parse_csv(text: str, path: Path) -> tuple[list[list[float]], list[str]]:
    comment_system, header, rows = _split_csv(text, path)
    if header is None and rows and _coordinate_names(rows[0][1]) is not None:
        header = rows.pop(0)[1]
    if header is None:
        label_column, coordinate_columns, system = _headerless_layout(rows, path)
    else:
        label_column, coordinate_columns, system = _header_layout(header, path)
    system = _resolve_system(system, comment_system, path)
    needed = max(coordinate_columns + [label_column or 0]) + 1
    points, labels = [], []
    for line_number, row in rows:
        where = f"line {line_number}"
        if len(row) < needed:
            raise InputError(f"landmark file {path}, {where}: {len(row)} columns where {needed} are expected")
        points.append(_to_lps([_coordinate(row[c], where, path) for c in coordinate_columns], system))
        labels.append(row[label_column] if label_column is not None else str(len(labels) + 1))
    return points, labels


def _split_csv(text: str, path: Path) -> tuple[str | None, list[str] | None, list[tuple[int, list[str]]]]:
    """Split into (coordinate system from comments, header from a columns comment, data rows)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    system, header, rows = None, None, []
    default_system = "RAS" if path.suffix.lower() == ".fcsv" else None
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            system = _comment_system(stripped, path) or system
            columns = _COLUMNS_COMMENT.match(stripped)
            if columns:
                header = _split_row(columns.group(1), ",")
            continue
        rows.append((line_number, _split_row(stripped, delimiter)))
    return system or default_system, header, rows


def _split_row(line: str, delimiter: str) -> list[str]:
    return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))]


def _comment_system(comment: str, path: Path) -> str | None:
    match = _SYSTEM_COMMENT.search(comment)
    if not match:
        return None
    name = match.group(1).strip().lower()
    if name not in _SYSTEM_NAMES:
        raise InputError(f"landmark file {path}: unknown coordinate system {match.group(1)!r}; use LPS or RAS")
    return _SYSTEM_NAMES[name]


def _coordinate_names(cells: list[str]) -> tuple[tuple[str, str, str], list[int]] | None:
    """The coordinate triple named in a header row and the indices of its columns, if any."""
    names = [cell.lower() for cell in cells]
    for triple in _COORDINATE_COLUMNS:
        if all(name in names for name in triple):
            return triple, [names.index(name) for name in triple]
    return None


def _header_layout(header: list[str], path: Path) -> tuple[int | None, list[int], str | None]:
    found = _coordinate_names(header)
    if found is None:
        raise InputError(
            f"landmark file {path}: the header {','.join(header)!r} names no coordinate columns; "
            "name them x,y,z (LPS), l,p,s or r,a,s"
        )
    triple, coordinate_columns = found
    names = [cell.lower() for cell in header]
    label_column = next((names.index(name) for name in _LABEL_COLUMNS if name in names), None)
    if label_column is None and 0 not in coordinate_columns:
        label_column = 0
    return label_column, coordinate_columns, _COORDINATE_COLUMNS[triple]


def _headerless_layout(rows: list[tuple[int, list[str]]], path: Path) -> tuple[int | None, list[int], None]:
    widths = {len(row) for _, row in rows}
    if widths <= {3}:
        return None, [0, 1, 2], None
    if widths == {4}:
        return 0, [1, 2, 3], None
    raise InputError(
        f"landmark file {path} has rows of {sorted(widths)} columns and no header; "
        "give x,y,z or label,x,y,z rows, or add a header naming the x,y,z columns"
    )


def _resolve_system(from_columns: str | None, from_comment: str | None, path: Path) -> str:
    if from_columns and from_comment and from_columns != from_comment:
        raise InputError(
            f"landmark file {path}: the columns say {from_columns} but a comment says {from_comment}; "
            "make them agree"
        )
    return from_columns or from_comment or "LPS"
