"""Fixtures of the MRML logic tests: a real headless scene (slicer-core) and a synthetic pair."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the module folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

import slicer  # noqa: E402

from SHMoARegLib.synthetic import addSyntheticPair  # noqa: E402

# The Slicer application registers the segmentation representations' conversion rules at start-up (copying a
# segment needs them); a bare MRML scene does not.
for _rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule(),
              slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule()):
    slicer.vtkSegmentationConverterFactory.GetInstance().RegisterConverterRule(_rule)


@pytest.fixture
def scene() -> slicer.vtkMRMLScene:
    return slicer.vtkMRMLScene()


@pytest.fixture
def pair(scene):
    return addSyntheticPair(scene)
