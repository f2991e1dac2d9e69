"""The package carries what it needs: a plain (non-editable) ``pip install`` registers and runs the demo
(issue 12, defect 4b). Before, the weights and the sample pair lived outside the package, in the repository's
``Resources/``, so an installed package said "no shipped weights exist for model 'shmoareg'"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shmoareg.protocol import COMPLETION_MARKER, WEIGHTS_SUFFIX
from shmoareg.resources import SAMPLE_DATA_DIR, WEIGHTS_DIR, shipped_models

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_SECONDS = 300
DEMO_TIMEOUT_SECONDS = 600


def _copy_of_the_source(destination: Path) -> Path:
    """What an sdist holds: the project metadata and the engine package, nothing else of the checkout."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPOSITORY / name, destination / name)
    shutil.copytree(REPOSITORY / "SHMoARegExtension" / "shmoareg", destination / "SHMoARegExtension" / "shmoareg",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return destination


def test_the_package_data_is_the_weights_of_every_shipped_model_and_the_sample_pair():
    assert shipped_models()[0] == "shmoareg" and len(shipped_models()) >= 2
    for name in shipped_models():
        assert (WEIGHTS_DIR / f"{name}{WEIGHTS_SUFFIX}").stat().st_size > 100_000
        assert json.loads((WEIGHTS_DIR / f"{name}.json").read_text())["model"]["name"] == name
    assert sorted(path.name for path in SAMPLE_DATA_DIR.iterdir()) == ["colin27_t1_2mm.nii.gz",
                                                                       "mni152_2009a_t1_2mm.nii.gz"]


def test_a_plain_pip_install_registers_with_the_shipped_weights_and_runs_the_demo(tmp_path):
    source = _copy_of_the_source(tmp_path / "source")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS)
    assert install.returncode == 0, install.stderr[-2000:]
    installed = site / "shmoareg"
    assert sorted(path.name for path in (installed / "weights").glob("*" + WEIGHTS_SUFFIX)) == \
        sorted(f"{name}{WEIGHTS_SUFFIX}" for name in shipped_models())

    environment = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    environment.pop("SHMOAREG_MODELS_DIR", None)
    # The checkout stays on sys.path through the editable install's .pth, after PYTHONPATH: the import must
    # come from the installed copy, which is what a user of a plain install has.
    where = subprocess.run([sys.executable, "-c", "import shmoareg; print(shmoareg.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=environment, timeout=60)
    assert Path(where.stdout.strip()).parent == installed, where.stderr[-2000:]

    demo = subprocess.run([sys.executable, "-m", "shmoareg.demo", "--output-dir", str(tmp_path / "demo")],
                          cwd=tmp_path, capture_output=True, text=True, env=environment,
                          timeout=DEMO_TIMEOUT_SECONDS)
    assert demo.returncode == 0, demo.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "registration" / COMPLETION_MARKER).read_text())
    assert Path(summary["model"]["weights_path"]).parent == installed / "weights"
    assert Path(summary["inputs"]["fixed"]).parent == installed / "sample_data"
    assert (tmp_path / "demo" / "overview.png").stat().st_size > 10_000
