"""The brain-shaped training label map's building block: filling a closed surface mesh (benchmarks/brain_shapes.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vtk")
pytest.importorskip("nibabel")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import brain_shapes  # noqa: E402


def cube(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed, outward-facing triangle mesh of the axis-aligned cube [low, high]^3 (mm)."""
    corners = np.array([[x, y, z] for z in (low, high) for y in (low, high) for x in (low, high)], dtype=np.float64)
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    triangles = np.array([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))], dtype=np.int64)
    return corners, triangles


def test_filling_a_cube_marks_the_voxel_centres_inside_it():
    origin, dims = np.array([-0.5, -0.5, -0.5]), np.array([20, 16, 12])  # voxel centres at 0..19 mm (x) etc.
    mask = brain_shapes.fill(*cube(2.0, 9.0), origin, dims)
    assert mask.shape == (12, 16, 20)
    # Centres at -0.5 + i lie inside [2, 9] for i = 3..9: a 7-voxel cube, nothing else.
    expected = np.zeros_like(mask)
    expected[3:10, 3:10, 3:10] = True
    assert np.array_equal(mask, expected)


def test_the_makefile_the_script_and_the_recipes_name_one_label_map_file():
    yaml = pytest.importorskip("yaml")
    repository = Path(__file__).resolve().parents[2]
    makefile = re.search(r"^BRAIN_SHAPES := (\S+)$", (repository / "Makefile").read_text(), re.MULTILINE).group(1)
    assert brain_shapes.DEFAULT_OUTPUT == repository / makefile
    recipes = sorted((repository / "Resources" / "configs").glob("train_*brainshapes*.yaml"))
    assert {"train_brainshapes_cpu.yaml", "train_unet_brainshapes_cpu.yaml"} <= {recipe.name for recipe in recipes}
    for recipe in recipes:
        config = yaml.safe_load(recipe.read_text())
        assert config["data"]["synthetic"]["label_maps"] == [makefile], recipe.name
