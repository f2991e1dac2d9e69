"""``benchmarks/gpu_session.sh --dry-run``: the GPU session's whole flow on the CPU at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shmoareg.checkpoints import MODELS_DIR_ENV, save_checkpoint
from shmoareg.models import MODEL_NAMES, build_model
from shmoareg.protocol import DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_SWAP

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_session.sh"
PHASES = ["setup", "cuda_tests", "register", "forward", "adapt", "train", "collect"]
MOST_FILES_BACK = 8  # a lent machine sends back at most 8 files from $OUT


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """The output folder of one dry run.

    Seeded weights of the current architectures stand in for the shipped ones
    (test_shipped_model checks those), so this checks the session's flow alone.
    """
    models = tmp_path_factory.mktemp("models")
    for name in ("shmoareg", "unet"):
        torch.manual_seed(0)
        save_checkpoint(build_model(name), models / f"{name}.safetensors", step=0)
    out = tmp_path_factory.mktemp("gpu_session")
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", MODELS_DIR_ENV: str(models)}
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_every_phase_ran_and_was_timed(session):
    summary = json.loads((session / "gpu_session.json").read_text())
    assert summary["dry_run"] is True and summary["device"]["torch"] == torch.__version__
    assert list(summary["phases"]) == PHASES
    assert all(phase["status"] == "ok" for phase in summary["phases"].values())
    assert list(summary["seconds"]) == [*PHASES, "total"] and summary["seconds"]["total"] > 0
    counts = summary["phases"]["cuda_tests"]["counts"]
    assert counts["tests"] >= 4 and counts["failures"] == counts["errors"] == 0


def test_register_and_forward_timings_are_positive(session):
    phases = json.loads((session / "gpu_session.json").read_text())["phases"]
    run = phases["register"]["runs"][0]
    assert run["prediction_seconds"] > 0 and run["refinement_seconds"] > 0 and run["end_to_end_seconds"] > 0
    assert run["host_peak_mb"] > 0
    assert run["network_ensemble"] == {"network_flips": DEFAULT_NETWORK_FLIPS["cpu"],
                                       "network_swap": DEFAULT_NETWORK_SWAP["cpu"]}  # the dry run is on CPU
    assert [m["model"] for m in phases["forward"]["models"]] == list(MODEL_NAMES)
    assert all(m["float32_seconds"] > 0 and m["bfloat16_seconds"] > 0 for m in phases["forward"]["models"])


def test_the_adapt_phase_records_dice_and_adaptation_seconds_per_setting(session):
    runs = json.loads((session / "gpu_session.json").read_text())["phases"]["adapt"]["runs"]
    assert [(run["adapt_steps"], run["refine_steps"]) for run in runs] == [(0, 0), (2, 0)]
    assert all(0 < run["mean_dice"] <= 1 and run["network_share"] == 1.0 for run in runs)
    assert "adapt" not in runs[0]["stage_seconds"] and runs[1]["stage_seconds"]["adapt"] > 0


def test_training_ran_three_steps_and_kept_the_checkpoint(session):
    train = json.loads((session / "gpu_session.json").read_text())["phases"]["train"]
    assert train["stopped"] == "finished its steps" and train["from_step"] == 0
    assert train["checkpoint_step"] == 3 and train["checkpoint_intact"] is True
    assert json.loads((session / "checkpoints" / "latest.json").read_text())["step"] == 3
    assert (session / "checkpoints" / "latest.safetensors").stat().st_size > 0
    assert (session / "checkpoints" / "latest.state.pt").is_file()


def test_few_enough_files_come_back(session):
    files = [path for path in session.rglob("*") if path.is_file()]
    assert len(files) <= MOST_FILES_BACK
    assert {"gpu_session.json", "gpu_session.log", "details.tar.gz"} <= {path.name for path in files}


def test_skipped_phases_do_not_run(tmp_path):
    environment = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path),
                             "--skip", "cuda_tests", "register", "forward", "adapt", "train"],
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(json.loads((tmp_path / "gpu_session.json").read_text())["phases"]) == ["setup", "collect"]
    refused = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--skip", "setup"], env=environment,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "invalid choice: 'setup'" in refused.stderr


def test_the_session_carries_the_label_map_its_recipe_trains_on():
    """The device machine cannot fetch data, so the recipe's brain-shaped label map travels in the carry list."""
    yaml = pytest.importorskip("yaml")
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_session

    recipe = yaml.safe_load(gpu_session.TRAIN_CONFIG.read_text())
    assert recipe["data"]["synthetic"]["label_maps"] == [gpu_session.BRAIN_SHAPES]
    assert gpu_session.BRAIN_SHAPES in gpu_session.CARRY
    assert recipe["output_dir"] == str(gpu_session.RESUME_FROM.parent.relative_to(gpu_session.REPO))
