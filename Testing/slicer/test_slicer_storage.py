"""Nodes for and from the engine (issue 12): storage nodes released (4c), the default fixed volume (4h)."""

from __future__ import annotations

import vtk

from SHMoARegLib.volumes import defaultFixedVolume, defaultStorageNode, writeVolume


def test_a_default_storage_node_is_freed_when_python_lets_go(pair):
    """``CreateDefaultStorageNode`` hands over a reference: without releasing it, one node leaked per file."""
    storage = defaultStorageNode(pair.fixed)
    assert storage.IsA("vtkMRMLVolumeArchetypeStorageNode")
    alive = vtk.vtkWeakReference()
    alive.Set(storage)
    del storage
    assert alive.Get() is None


def test_writing_a_volume_keeps_working(pair, tmp_path):
    writeVolume(pair.fixed, tmp_path / "fixed.nrrd")
    assert (tmp_path / "fixed.nrrd").stat().st_size > 0


def test_the_default_fixed_volume_is_never_a_label_map(scene):
    """Issue 12, 4h: a label map is a scalar volume node too, and may come first in the scene."""
    assert defaultFixedVolume(scene) is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    assert defaultFixedVolume(scene) is None
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    assert defaultFixedVolume(scene) is image
