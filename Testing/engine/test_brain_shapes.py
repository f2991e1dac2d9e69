"""The brain-shaped training label map's building block: filling a closed surface mesh (benchmarks/brain_shapes.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

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


def test_the_makefile_the_scripts_and_the_recipes_name_the_same_label_map_files():
    yaml = pytest.importorskip("yaml")
    repository = Path(__file__).resolve().parents[2]
    macaque_shapes = pytest.importorskip("macaque_shapes")
    text = (repository / "Makefile").read_text()
    makefile = {name: re.search(rf"^{name} := (\S+)$", text, re.MULTILINE).group(1)
                for name in ("BRAIN_SHAPES", "MACAQUE_SHAPES")}
    assert brain_shapes.DEFAULT_OUTPUT == repository / makefile["BRAIN_SHAPES"]
    assert macaque_shapes.DEFAULT_OUTPUT == repository / makefile["MACAQUE_SHAPES"]
    recipes = sorted((repository / "Resources" / "configs").glob("train_*brainshapes*.yaml"))
    assert {"train_brainshapes_cpu.yaml", "train_unet_brainshapes_cpu.yaml"} <= {recipe.name for recipe in recipes}
    for recipe in recipes:
        label_maps = yaml.safe_load(recipe.read_text())["data"]["synthetic"]["label_maps"]
        assert label_maps[0] == makefile["BRAIN_SHAPES"] and set(label_maps) <= set(makefile.values()), recipe.name


def test_the_macaque_template_becomes_the_same_labels_at_human_size():
    macaque_shapes = pytest.importorskip("macaque_shapes")
    size = 40
    z, y, x = np.meshgrid(*(np.arange(size) - (size - 1) / 2.0,) * 3, indexing="ij")
    radius = np.sqrt(x * x + y * y + z * z)
    values = np.select([radius < 8, radius < 13, radius < 16], [100.0, 50.0, 10.0], 0.0).astype(np.float32)
    t1 = sitk.GetImageFromArray(values)
    t1.SetSpacing((0.5, 0.5, 0.5))
    labels = macaque_shapes.brain_labels(macaque_shapes.human_sized(t1))
    result = sitk.GetArrayFromImage(labels)
    brain = radius < 16
    assert np.prod(labels.GetSpacing()) * brain.sum() / 1000.0 == pytest.approx(macaque_shapes.BRAIN_ML, rel=1e-6)
    left, right = x < 0, x > 0
    assert (result[~brain] == 0).all()
    assert (result[(radius >= 13) & brain] == brain_shapes.CSF).all()
    shell = (radius >= 8) & (radius < 13)
    assert (result[shell & left] == brain_shapes.CORTEX).all()
    assert (result[shell & right] == brain_shapes.CORTEX + 1).all()
    core = radius < 8
    assert set(np.unique(result[core & left])) <= {brain_shapes.WHITE, brain_shapes.DEEP_WHITE}
    assert set(np.unique(result[core & right])) <= {brain_shapes.WHITE + 1, brain_shapes.DEEP_WHITE + 1}
