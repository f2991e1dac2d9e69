"""Shared helpers of the engine tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))

from phantoms import phantom_image, phantom_labels  # noqa: E402 (needs the path above)

# The small phantom of the bad-input suites: 24 x 22 x 20 voxels, anisotropic.
SMALL_GEOMETRY = dict(size=(24, 22, 20), spacing=(2.0, 2.0, 2.5), origin=(-24.0, -22.0, -24.0))


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """A folder with ``fixed.nii.gz``, ``moving.nii.gz`` (the same small phantom) and its labels ``seg.nii.gz``."""
    fixed = phantom_image(**SMALL_GEOMETRY)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(fixed, str(tmp_path / "moving.nii.gz"))
    sitk.WriteImage(phantom_labels(fixed), str(tmp_path / "seg.nii.gz"))
    return tmp_path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m shmoareg`` in a separate process and capture its output."""
    return subprocess.run([sys.executable, "-m", "shmoareg", *args], capture_output=True, text=True,
                          timeout=timeout)
