"""Shipped resources are found in a checkout and in an installed Slicer extension (issue 12, defect 4b)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from shmoareg.resources import RESOURCE_DIRS

REPOSITORY = Path(__file__).resolve().parents[2]


def test_an_installed_extension_finds_its_weights_and_sample_data_beside_the_package(tmp_path):
    """CMake installs Resources/ into the module folder, beside shmoareg/; the demo looked two folders up."""
    module = tmp_path / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    shutil.copytree(REPOSITORY / "SHMoARegExtension" / "shmoareg", module / "shmoareg",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("SampleData", "models"):
        shutil.copytree(REPOSITORY / "Resources" / name, module / "Resources" / name)
    probe = ("from shmoareg.demo import SAMPLE_DATA; from shmoareg.checkpoints import model_dirs, resolve_model; "
             "print(SAMPLE_DATA); print(resolve_model('shmoareg')[1]['weights_path'])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(module), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    sample_data, weights = result.stdout.split()
    assert Path(sample_data) == module / "Resources" / "SampleData"
    assert Path(weights).parent == module / "Resources" / "models"


def test_a_checkout_uses_the_repositorys_resources():
    assert RESOURCE_DIRS[0] == REPOSITORY / "Resources"
