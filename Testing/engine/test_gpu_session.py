"""``benchmarks/gpu_session.sh --dry-run``: the GPU session's whole flow on the CPU at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from shmoareg.checkpoints import MODELS_DIR_ENV, save_checkpoint
from shmoareg.models import MODEL_NAMES, build_model
from shmoareg.protocol import DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_SWAP
from shmoareg.training.anatomy import cache_path, expand, subject_name
from shmoareg.training.config import load_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_session.sh"
PHASES = ["setup", "cuda_tests", "register", "warm_register", "forward", "adapt", "train", "collect"]
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


def test_the_warm_register_phase_times_each_request_on_one_engine(session):
    warm = json.loads((session / "gpu_session.json").read_text())["phases"]["warm_register"]
    assert len(warm["runs"]) == 3 and all(run["exit_code"] == 0 for run in warm["runs"])
    for run in warm["runs"]:
        stages = run["stage_seconds"]
        assert {"load", "affine", "preprocess", "predict", "register", "write"} <= set(stages)
        assert stages["total"] <= run["end_to_end_seconds"]  # the request's wait includes the whole run


def test_the_adapt_phase_records_dice_and_adaptation_seconds_per_setting(session):
    runs = json.loads((session / "gpu_session.json").read_text())["phases"]["adapt"]["runs"]
    assert [(run["adapt_steps"], run["refine_steps"]) for run in runs] == [(0, 0), (2, 0)]
    assert all(0 < run["mean_dice"] <= 1 and run["network_share"] == 1.0 for run in runs)
    assert "adapt" not in runs[0]["stage_seconds"] and runs[1]["stage_seconds"]["adapt"] > 0


def test_training_ran_three_steps_and_kept_the_checkpoint(session):
    train = json.loads((session / "gpu_session.json").read_text())["phases"]["train"]
    assert train["stopped"] == "finished its steps" and train["from_step"] == 0
    assert "stand-in subjects" in train["config"]  # the real-anatomy recipe, without ../shared/data
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
                             "--skip", "cuda_tests", "register", "warm_register", "forward", "adapt", "train"],
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(json.loads((tmp_path / "gpu_session.json").read_text())["phases"]) == ["setup", "collect"]
    refused = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--skip", "setup"], env=environment,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "invalid choice: 'setup'" in refused.stderr


@pytest.fixture(scope="module")
def gpu_session():
    """benchmarks/gpu_session.py as a module."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_session

    return gpu_session


def test_packed_wheels_unpack_to_wheels_that_pip_installs(gpu_session, tmp_path):
    """.whl/ travels xz-packed (room for the anatomy cache); the set-up phase unpacks it for pip."""
    wheels, name = tmp_path / "wheels", "tinypkg-1.0-py3-none-any.whl"
    wheels.mkdir()
    files = {"tinypkg/__init__.py": "ANSWER = 42\n",
             "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n"}
    files["tinypkg-1.0.dist-info/RECORD"] = "".join(f"{path},,\n" for path in [*files, "tinypkg-1.0.dist-info/RECORD"])
    with zipfile.ZipFile(wheels / name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    assert [path.name for path in gpu_session.pack_wheels(wheels)] == [name + gpu_session.PACKED]
    assert [path.name for path in wheels.iterdir()] == [name + gpu_session.PACKED]
    gpu_session.unpack_wheels(wheels, tmp_path / "unpacked")
    with zipfile.ZipFile(tmp_path / "unpacked" / name) as unpacked:
        assert {item.filename: unpacked.read(item).decode() for item in unpacked.infolist()} == files
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--find-links",
                    str(tmp_path / "unpacked"), "--target", str(tmp_path / "site"), "tinypkg"], check=True,
                   capture_output=True, timeout=120)
    assert (tmp_path / "site" / "tinypkg" / "__init__.py").read_text() == files["tinypkg/__init__.py"]


def test_the_session_carries_the_anatomy_cache_and_the_cpu_run_its_recipe_continues(gpu_session):
    """The device machine has no ../shared/data: the GPU recipe reads the subjects' cache files, which travel."""
    gpu, cpu = load_config(gpu_session.TRAIN_CONFIG), load_config(gpu_session.CPU_CONFIG)
    assert gpu.model == cpu.model and gpu.loss == cpu.loss  # it continues the CPU run's weights
    assert gpu.device == "cuda" and gpu.amp and gpu.optimiser.batch_size > 1
    assert gpu.output_dir == cpu.output_dir == str(gpu_session.RESUME_FROM.parent.relative_to(gpu_session.REPO))
    assert cpu.data.anatomy.cache_dir == gpu.data.anatomy.cache_dir == gpu_session.ANATOMY_CACHE
    assert gpu_session.ANATOMY_CACHE in gpu_session.CARRY
    assert all(pattern.startswith(f"{gpu_session.ANATOMY_CACHE}/") and pattern.endswith("-*.npz")
               for pattern in gpu.data.anatomy.subjects + gpu.data.anatomy.validation_subjects)


def test_the_gpu_recipe_reads_the_cpu_recipes_subjects_from_their_cache_files(gpu_session, tmp_path, monkeypatch):
    """On a stand-in ../shared/data laid out as the real one (SynthSeg's 20 maps, OASIS-TRT-20's 20 subjects)."""
    data = tmp_path / "shared" / "data"
    (data / "synthseg-label-maps").mkdir(parents=True)
    for number in range(1, 21):
        (data / "synthseg-label-maps" / f"training_seg_{number:02d}.nii.gz").write_text(f"map {number}")
        subject = data / "oasis-trt-20" / f"{number:02d}"
        subject.mkdir(parents=True)
        for name in ("labels.nii.gz", "t1_brain.nii.gz"):
            (subject / name).write_text(f"{name} {number}")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    cpu, gpu = (load_config(config).data.anatomy for config in (gpu_session.CPU_CONFIG, gpu_session.TRAIN_CONFIG))
    for sources, cached in ((cpu.subjects, gpu.subjects), (cpu.validation_subjects, gpu.validation_subjects)):
        entries = expand(sources)
        for entry in entries:
            path = cache_path(entry, Path(cpu.cache_dir))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry.name)
        assert [path.name.rsplit("-", 1)[0] for path in expand(cached)] == [subject_name(e) for e in entries]
    assert len(expand(gpu.subjects)) == 30 and len(expand(gpu.validation_subjects)) == 10
