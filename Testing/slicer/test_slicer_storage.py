"""Storage nodes made for the engine's files are released (issue 12, defect 4c)."""

from __future__ import annotations

import vtk

from SHMoARegLib.volumes import defaultStorageNode, writeVolume


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
