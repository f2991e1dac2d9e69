"""Tests of shmoareg.landmarks: markups JSON, CSV variants, round trip and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shmoareg.errors import InputError
from shmoareg.landmarks import pair_landmarks, read_labeled_landmarks, read_landmarks, write_landmarks_csv

LPS = np.array([[1.5, -2.0, 3.0], [-4.0, 5.25, -6.0]])
RAS = LPS * np.array([-1.0, -1.0, 1.0])
AB = ["a", "b"]


def _markups(path, points, system=None, **point_fields):
    markup = {"type": "Fiducial", "controlPoints": [
        {"label": f"F-{i + 1}", "position": list(map(float, p)), **point_fields} for i, p in enumerate(points)
    ]}
    if system is not None:
        markup["coordinateSystem"] = system
    path.write_text(json.dumps({"@schema": "markups-schema-v1.0.3.json#", "markups": [markup]}))
    return path


def _text(path, content):
    path.write_text(content)
    return path


# --- Slicer markups JSON --------------------------------------------------------------------

@pytest.mark.parametrize("system, points", [("LPS", LPS), ("RAS", RAS), (None, LPS)])
def test_markups_json_gives_lps(tmp_path, system, points):
    path = _markups(tmp_path / "points.mrk.json", points, system)
    read, labels = read_labeled_landmarks(path)
    np.testing.assert_array_equal(read, LPS)
    assert labels == ["F-1", "F-2"]


def test_markups_json_units(tmp_path):
    path = tmp_path / "units.mrk.json"
    document = {"markups": [{"coordinateUnits": {"codeValue": "mm", "codingSchemeDesignator": "UCUM"},
                             "controlPoints": [{"position": [1, 2, 3]}]}]}
    path.write_text(json.dumps(document))
    np.testing.assert_array_equal(read_landmarks(path), [[1, 2, 3]])
    document["markups"][0]["coordinateUnits"] = "um"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="coordinateUnits 'um'"):
        read_landmarks(path)


def test_markups_json_unplaced_point(tmp_path):
    path = _markups(tmp_path / "p.mrk.json", LPS, "LPS", positionStatus="undefined")
    with pytest.raises(InputError, match="'F-1' is not placed"):
        read_landmarks(path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"points": []}', "no 'markups' list"),
    ('{"markups": [{"controlPoints": []}]}', "holds no points"),
    ('{"markups": [{"coordinateSystem": "IJK", "controlPoints": []}]}', "'IJK' is not supported"),
    ('{"markups": [{"controlPoints": [{"label": "A", "position": [1, 2]}]}]}', "'A' needs a 3-element"),
    ('{"markups": [{"controlPoints": [{"position": [1, "b", 2]}]}]}', "'b' is not a number"),
])
def test_markups_json_bad_content(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        read_landmarks(_text(tmp_path / "bad.mrk.json", content))


# --- CSV ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, labels", [
    ("plain.csv", "1.5,-2,3\n-4,5.25,-6\n", ["1", "2"]),
    ("labelled.csv", "a,1.5,-2,3\nb,-4,5.25,-6\n", AB),
    ("header.csv", "label,x,y,z\na,1.5,-2,3\nb,-4,5.25,-6\n", AB),
    ("xyz_first.csv", "X, Y, Z, name\n1.5, -2, 3, a\n-4, 5.25, -6, b\n", AB),
    ("lps.csv", "label,l,p,s\na,1.5,-2,3\nb,-4,5.25,-6\n", AB),
    ("ras.csv", "label,r,a,s\na,-1.5,2,3\nb,4,-5.25,-6\n", AB),
    ("comment.csv", "# coordinate system: RAS\nlabel,x,y,z\na,-1.5,2,3\nb,4,-5.25,-6\n", AB),
    ("tabs.tsv", "label\tx\ty\tz\na\t1.5\t-2\t3\nb\t-4\t5.25\t-6\n", AB),
    ("slicer.fcsv", "# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                    "0,1.5,-2,3,0,0,0,1,1,1,0,a,,\n1,-4,5.25,-6,0,0,0,1,1,1,0,b,,\n", AB),
    ("old.fcsv", "# CoordinateSystem = 0\n0,-1.5,2,3\n1,4,-5.25,-6\n", ["0", "1"]),
])
def test_csv_variants_give_lps(tmp_path, name, content, labels):
    points, read_labels = read_labeled_landmarks(_text(tmp_path / name, content))
    np.testing.assert_array_equal(points, LPS)
    assert read_labels == labels


def test_fcsv_without_coordinate_system_is_ras(tmp_path):
    path = _text(tmp_path / "legacy.fcsv", "# columns = id,x,y,z,label\n0,-1.5,2,3,a\n1,4,-5.25,-6,b\n")
    np.testing.assert_array_equal(read_landmarks(path), LPS)


def test_csv_round_trip(tmp_path):
    points = np.array([[0.1, -1 / 3, 1e-7], [123.456789, 2.0, -0.5]])
    path = tmp_path / "out" / "points.csv"
    write_landmarks_csv(points, path, labels=["tip, left", "base"])
    read, labels = read_labeled_landmarks(path)
    np.testing.assert_array_equal(read, points)
    assert labels == ["tip, left", "base"]


def test_write_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="give one label per point"):
        write_landmarks_csv(LPS, tmp_path / "a.csv", labels=["only one"])
    with pytest.raises(InputError, match="shape"):
        write_landmarks_csv(np.zeros((2, 2)), tmp_path / "a.csv")


@pytest.mark.parametrize("content, message", [
    ("", "holds no points"),
    ("label,x,y,z\n", "holds no points"),
    ("1,2,three\n", "line 1: 'three' is not a number"),
    ("1,2,3\n1,2,3,4\n", "no header"),
    ("a,b,c,d\n1,2,3,4\n", "line 1: 'b' is not a number"),
    ("label,x,y,z\na,1,2\n", "line 2: 3 columns where 4 are expected"),
    ("# coordinate system: LPS\nlabel,r,a,s\na,1,2,3\n", "columns say RAS but a comment says LPS"),
    ("# coordinate system: IJK\n1,2,3\n", "unknown coordinate system 'IJK'"),
    ("1,2,nan\n", "not finite"),
])
def test_csv_bad_content(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        read_landmarks(_text(tmp_path / "bad.csv", content))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="landmark file not found"):
        read_landmarks(tmp_path / "nowhere.csv")


# --- pairing fixed and moving points --------------------------------------------------------

POINTS = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])


def test_points_with_the_same_labels_pair_by_label():
    moving = POINTS + 10.0
    fixed_points, moving_points, labels = pair_landmarks((POINTS, ["a", "b", "c"]),
                                                         (moving[[2, 0, 1]], ["c", "a", "b"]))
    np.testing.assert_array_equal(fixed_points, POINTS)
    np.testing.assert_array_equal(moving_points, moving)
    assert labels == ["a", "b", "c"]


def test_points_without_shared_labels_pair_by_order():
    _, moving_points, labels = pair_landmarks((POINTS, ["F-1", "F-2", "F-3"]), (POINTS[::-1], ["M-1", "M-2", "M-3"]))
    np.testing.assert_array_equal(moving_points, POINTS[::-1])
    assert labels == ["F-1", "F-2", "F-3"]


@pytest.mark.parametrize("fixed_labels, moving_labels, count, message", [
    (["a", "b", "c"], ["a", "b", "d"], 3, r"label\(s\) c, d are in only one"),
    (["a", "a", "c"], ["a", "b", "c"], 3, r"fixed landmarks repeat the label\(s\) a"),
    (["a", "b", "c"], ["x", "y"], 2, "3 fixed and 2 moving points"),
])
def test_unpairable_points_are_refused(fixed_labels, moving_labels, count, message):
    with pytest.raises(InputError, match=message):
        pair_landmarks((POINTS, fixed_labels), (POINTS[:count], moving_labels))
