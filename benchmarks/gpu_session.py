"""One command for a lent GPU machine: set-up, CUDA tests, timings, then training until time runs out.

Run it through ``benchmarks/gpu_session.sh [--dry-run] [--minutes M] [--out DIR]``, which sets
PYTHONPATH; benchmarks/README.md ("GPU session") says how to prepare the wheels and call it.
Phases: ``setup`` (wheels from .whl/ for what the machine lacks), ``cuda_tests`` (pytest -m cuda),
``register`` (1 mm 160x192x224 pair, a fresh process each run), ``warm_register`` (the same pair end to end on the
warm engine, ``shmoareg serve``), ``forward`` (both networks at 160x192x224, float32 and
bfloat16), ``adapt`` (test-time adaptation on a labelled 1 mm pair),
``train`` (the real-anatomy GPU recipe continuing the CPU run, stopped with SIGINT before the deadline) and
``collect``. ``--dry-run`` is the same flow on the CPU at toy sizes, in well under a minute.

DIR receives few files, as a lent machine sends back at most 8: ``gpu_session.json`` (rewritten after
every phase), ``gpu_session.log``, ``checkpoints/latest.*`` (the continued run, to copy back into
runs/anatomy_cpu/checkpoints) and ``details.tar.gz`` (pytest report, register summaries, training logs,
configs and the best checkpoint). The bulky work (images, fields) happens in a temporary folder.

``gpu_session.py --travel-size`` prints what a device call carrying CARRY would send (used by
benchmarks/gpu_wheels.sh); ``--pack-wheels`` shrinks the wheels in .whl/ so that the anatomy cache fits beside
them; ``--anatomy-cache`` makes the real-anatomy cache that the train phase reads (where ../shared/data is).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import lzma
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl"
PACKED = ".xz"  # a wheel in .whl/ as <wheel>.xz: its files stored uncompressed, the whole compressed by xz
SITE = Path(tempfile.gettempdir()) / "shmoareg-gpu-site"
# Modules the engine and its tests import, and the distributions that provide them.
REQUIRED = {"SimpleITK": "SimpleITK", "yaml": "PyYAML", "psutil": "psutil", "safetensors": "safetensors",
            "numpy": "numpy", "pytest": "pytest"}
# The real-anatomy recipe for the GPU, the CPU recipe whose run it continues and whose subjects' cache it reads
# (runs/ is git-ignored and ../shared/data stays behind, so the cache and the checkpoint travel with the call).
TRAIN_CONFIG = REPO / "Resources" / "configs" / "train_anatomy_gpu.yaml"
CPU_CONFIG = REPO / "Resources" / "configs" / "train_anatomy_cpu.yaml"
RESUME_FROM = REPO / "runs" / "anatomy_cpu" / "checkpoints"
ANATOMY_CACHE = "runs/data/anatomy"  # both recipes' data.anatomy.cache_dir; --anatomy-cache makes it
LATEST_FILES = ("latest.safetensors", "latest.json", "latest.state.pt")
CARRY = [".whl", ANATOMY_CACHE, *(str((RESUME_FROM / name).relative_to(REPO)) for name in LATEST_FILES)]
TRAVEL_LIMIT_MIB = 64
STOP_RESERVE_SECONDS = 45   # SIGINT grace (30 s) plus collecting the outputs
MIN_TRAIN_SECONDS = 60
DRY_RUN_TRAINING = {("data", "shape"): [32, 32, 32], ("validation", "pairs"): 1, ("optimiser", "steps"): 3,
                    ("optimiser", "batch_size"): 2, ("checkpoint_every",): 1, ("log_every",): 1}
DRY_RUN_SHAPE_ZYX = (32, 32, 32)
DRY_RUN_SPACING_MM = 2.0
DETAIL_SUFFIXES = {".json", ".jsonl", ".yaml", ".xml", ".log"}
OUTPUTS = ("gpu_session.json", "gpu_session.log", "details.tar.gz", "checkpoints")
CUDA_TESTS_TIMEOUT_SECONDS = 300
# The warm_register phase: requests to one warm engine, and issue 24's end-to-end target on the GPU.
WARM_REQUESTS = 3
WARM_TARGET_SECONDS = 2.0
# The adapt phase's (--adapt-steps, --refine-steps) runs; None: register's default refinement.
ADAPT_SETTINGS = ((0, 0), (25, 0), (100, 0), (0, None), (25, None))
DRY_RUN_ADAPT_SETTINGS = ((0, 0), (2, 0))


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


class Session:
    """The output folder, a scratch folder, the log, the deadline and the summary being built."""

    def __init__(self, out: Path, dry_run: bool, minutes: float) -> None:
        self.out, self.dry_run = out, dry_run
        self.device = "cpu" if dry_run else "cuda"
        clear_previous(out)
        self.work = Path(tempfile.mkdtemp(prefix="shmoareg-gpu-session-"))
        self.log_path = out / "gpu_session.log"
        self.log_path.write_text("")
        self.started = time.monotonic()
        self.deadline = self.started + 60 * minutes
        self.summary: dict[str, Any] = {
            "dry_run": dry_run, "minutes": minutes,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": describe_device(), "phases": {}, "seconds": {},
        }

    def note(self, message: str) -> None:
        """Print ``message`` and append it to the log."""
        print(message, flush=True)
        with open(self.log_path, "a") as log:
            log.write(message + "\n")

    def run(self, command: list[str], capture: Optional[Path] = None, timeout: Optional[float] = None) -> int:
        """Run ``command`` in the repository; its output goes to the log (and to ``capture`` first when given)."""
        self.note(f"$ {shlex.join(command)}")
        target = capture or self.log_path
        with open(target, "a") as stream:
            code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO,
                                  timeout=timeout).returncode
        if capture is not None:
            with open(self.log_path, "a") as log:
                log.write(capture.read_text())
        return code

    def seconds_left(self) -> float:
        """Seconds until the ``--minutes`` budget runs out."""
        return self.deadline - time.monotonic()

    def phase(self, name: str, action: Callable[["Session"], dict[str, Any]]) -> None:
        """Run one phase, record its result and seconds, and rewrite gpu_session.json."""
        self.note(f"== {name}")
        started = time.monotonic()
        try:
            result = action(self)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - a failed phase must not stop the others
            with open(self.log_path, "a") as log:
                log.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            result = {"error": one_line(f"{type(error).__name__}: {error}")}
        result["status"] = "failed" if "error" in result else "skipped" if "skipped" in result else "ok"
        seconds = round(time.monotonic() - started, 2)
        self.summary["phases"][name] = result
        self.summary["seconds"][name] = seconds
        self.note(f"== {name}: {result['status']} in {seconds} s"
                  + (f" ({result.get('error') or result.get('skipped')})" if result["status"] != "ok" else ""))
        self.save()

    def save(self) -> None:
        """Write gpu_session.json with the total seconds so far."""
        self.summary["seconds"].pop("total", None)  # kept last
        self.summary["seconds"]["total"] = round(time.monotonic() - self.started, 2)
        (self.out / "gpu_session.json").write_text(json.dumps(self.summary, indent=2) + "\n")


def clear_previous(out: Path) -> None:
    """Create ``out``, removing what an earlier session left there (so nothing stale comes back)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def describe_device() -> dict[str, Any]:
    """The card (or CPU), torch and Python versions, and the CPU count."""
    cuda = torch.cuda.is_available()
    return {"name": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
            "cuda_available": cuda, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


# -- set-up ----------------------------------------------------------------------------------------
def use_site() -> None:
    """Put the wheel install folder on this process's and its children's import path."""
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(SITE) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE), *filter(None, paths)])
    importlib.invalidate_caches()


def pack_wheels(folder: Path) -> list[Path]:
    """Replace each wheel in ``folder`` by ``<wheel>.xz`` (SimpleITK's shrinks from 50 to about 28 MiB, which
    leaves room for the anatomy cache in a device call's 64 MiB); returns the packed files."""
    packed = []
    for wheel in sorted(folder.glob("*.whl")):
        target = wheel.with_name(wheel.name + PACKED)
        partial = target.with_name(target.name + ".part")
        with zipfile.ZipFile(wheel) as source, lzma.open(partial, "wb") as stream, \
                zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as stored:
            for item in source.infolist():
                entry = zipfile.ZipInfo(item.filename, item.date_time)
                entry.external_attr, entry.file_size = item.external_attr, item.file_size
                with source.open(item) as data, stored.open(entry, "w") as copy:
                    shutil.copyfileobj(data, copy)
        partial.replace(target)
        wheel.unlink()
        packed.append(target)
    return packed


def unpack_wheels(folder: Path, target: Path) -> None:
    """Write the wheels that :func:`pack_wheels` packed in ``folder`` to ``target`` as wheels pip installs."""
    target.mkdir(parents=True, exist_ok=True)
    for packed in sorted(folder.glob(f"*.whl{PACKED}")):
        with lzma.open(packed) as source, open(target / packed.stem, "wb") as wheel:
            shutil.copyfileobj(source, wheel)


def set_up(session: Session) -> dict[str, Any]:
    """Install from .whl/ whatever required module is missing (SimpleITK on the lent machines)."""
    if SITE.is_dir():
        use_site()
    missing = [module for module in REQUIRED if importlib.util.find_spec(module) is None]
    if not missing:
        return {"installed": []}
    names = [REQUIRED[module] for module in missing]
    if not WHEELS.is_dir():
        return {"error": f"{', '.join(names)} missing and no .whl/ folder: run benchmarks/gpu_wheels.sh where pip "
                         "reaches PyPI (then gpu_session.sh --pack-wheels) and carry .whl"}
    unpacked = session.work / "wheels"
    unpack_wheels(WHEELS, unpacked)
    code = session.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--find-links", str(WHEELS), "--find-links", str(unpacked), "--target", str(SITE),
                        *names])
    if code != 0:
        return {"error": f"pip could not install {', '.join(names)} from .whl/ (exit {code}); see gpu_session.log"}
    use_site()
    still = [module for module in missing if importlib.util.find_spec(module) is None]
    if still:
        return {"error": f"installed {', '.join(names)} but cannot import {', '.join(still)}"}
    return {"installed": names, "site": str(SITE)}


# -- CUDA tests ------------------------------------------------------------------------------------
def junit_counts(report: Path) -> dict[str, int]:
    """Test counts of a pytest JUnit XML report."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def cuda_tests(session: Session) -> dict[str, Any]:
    """``pytest -m cuda Testing/engine/test_cuda.py`` (every test skips without a GPU)."""
    report = session.work / "cuda_tests.xml"
    code = session.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={report}", "Testing/engine/test_cuda.py"], timeout=CUDA_TESTS_TIMEOUT_SECONDS)
    result: dict[str, Any] = {"exit_code": code, "counts": junit_counts(report) if report.is_file() else None}
    if code != 0:
        result["error"] = f"pytest exited {code}; failed tests are in gpu_session.log"
    return result


# -- timings ---------------------------------------------------------------------------------------
def small_pair(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A seeded 32^3 synthetic pair at 2 mm for the dry run: fixed, moving and their label maps."""
    import SimpleITK as sitk

    from shmoareg.synthetic import synthetic_pair, to_sitk

    folder.mkdir(parents=True, exist_ok=True)
    pair = synthetic_pair(DRY_RUN_SHAPE_ZYX, seed=11, max_displacement=3.0, num_labels=8)
    paths = tuple(folder / f"{name}.nii.gz" for name in ("fixed", "moving", "fixed_labels", "moving_labels"))
    for path, image in zip(paths, (pair.fixed_image, pair.moving_image, pair.fixed_labels, pair.moving_labels)):
        sitk.WriteImage(to_sitk(image, spacing=(DRY_RUN_SPACING_MM,) * 3), str(path))
    return paths


def register_figures(run: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one ``bench_register.run_once`` result (from register's summary.json)."""
    seconds, memory = run["stage_seconds"], run["memory"]
    return {"prediction_seconds": seconds.get("predict"), "refinement_seconds": seconds.get("register"),
            "end_to_end_seconds": seconds.get("total"), "wall_seconds": run["wall_seconds"],
            "gpu_peak_mb": memory.get("gpu_peak_mb"), "host_peak_mb": memory.get("host_peak_mb"),
            "stage_seconds": seconds, "network_grid": run["network_grid"], "network_ensemble": run["network_ensemble"]}


def time_register(session: Session) -> dict[str, Any]:
    """``register`` with the defaults on the 1 mm 160x192x224 benchmark pair (a 32^3 pair in the dry run)."""
    import bench_register

    if session.dry_run:
        pair = f"seeded synthetic {'x'.join(map(str, DRY_RUN_SHAPE_ZYX[::-1]))} (x, y, z) at {DRY_RUN_SPACING_MM} mm"
        fixed, moving, _, _ = small_pair(session.work / "small_pair")
    else:
        pair = "bench_register.py's SynthMorph-style 160x192x224 (x, y, z) pair at 1 mm, seed 11"
        fixed, moving = bench_register.make_pair(session.work / "pair160x192x224")
    repeats = 1 if session.dry_run else 2  # each run is a fresh process: the second shows the spread
    runs = [bench_register.run_once(fixed, moving, session.work / f"register-{i}", session.device)
            for i in range(repeats)]
    session.note(f"$ {runs[0]['command']} (in a fresh process, {repeats}x)")
    return {"pair": pair, "device": session.device, "runs": [register_figures(run) for run in runs]}


def time_warm_register(session: Session) -> dict[str, Any]:
    """Issue 24, point 7: the 1 mm benchmark pair end to end on the warm engine (``shmoareg serve``, as the Slicer
    module keeps it), every stage that can run on the device there (affine, prediction, refinement): seconds from
    the request to its done event, for each of ``WARM_REQUESTS`` requests (the first also warms the kernels)."""
    import bench_register
    import warm_engine
    from shmoareg.protocol import (FINAL_EVENTS, READY_EVENT, REQUEST_ARGUMENTS_KEY, REQUEST_COMMAND_KEY,
                                   SERVE_COMMAND)

    if session.dry_run:
        fixed, moving, _, _ = small_pair(session.work / "small_pair")
    else:
        fixed, moving = bench_register.make_pair(session.work / "pair160x192x224")
    engine = subprocess.Popen([sys.executable, "-m", "shmoareg", SERVE_COMMAND], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        warm_engine.until(engine, (READY_EVENT,))
        runs = []
        for index in range(WARM_REQUESTS):
            output = session.work / f"warm-register-{index}"
            words = ["--fixed", str(fixed), "--moving", str(moving), "--output-dir", str(output),
                     "--device", session.device]
            started = time.perf_counter()
            engine.stdin.write(json.dumps({REQUEST_COMMAND_KEY: "register", REQUEST_ARGUMENTS_KEY: words}) + "\n")
            engine.stdin.flush()
            final = warm_engine.until(engine, FINAL_EVENTS)
            run = {"end_to_end_seconds": round(time.perf_counter() - started, 3), "exit_code": final.get("exit_code")}
            if final.get("exit_code") == 0:
                run["stage_seconds"] = json.loads((output / "summary.json").read_text())["seconds"]
            runs.append(run)
    finally:
        engine.stdin.close()
        engine.wait(timeout=60)
    return {"device": session.device, "target_seconds": WARM_TARGET_SECONDS, "runs": runs}


def time_adaptation(session: Session) -> dict[str, Any]:
    """Test-time adaptation on the GPU (issue 9, point 5): the labelled 1 mm pair of ``tune_refinement.py`` (the
    dry run's 32^3 pair) registered with ``--adapt-steps N``, alone and before the default refinement: Dice,
    seconds per stage and network share, each run in a fresh process."""
    if session.dry_run:
        paths, settings = small_pair(session.work / "small_pair"), DRY_RUN_ADAPT_SETTINGS
    else:
        import tune_refinement

        paths, settings = tune_refinement.labelled_pair(session.work / "pair160x192x224"), ADAPT_SETTINGS
    import bench_register

    fixed, moving, fixed_labels, moving_labels = paths
    runs = []
    for adapt_steps, refine_steps in settings:
        options = ["--fixed-seg", str(fixed_labels), "--moving-seg", str(moving_labels), "--routing-maps", "none",
                   "--adapt-steps", str(adapt_steps), *(["--refine-steps", str(refine_steps)]
                                                       if refine_steps is not None else [])]
        run = bench_register.run_once(fixed, moving, session.work / f"adapt-{adapt_steps}-{refine_steps}",
                                      session.device, *options)
        runs.append({**run["method"], "mean_dice": run["mean_dice"], "network_share": run["network_share"],
                     "stage_seconds": run["stage_seconds"], "wall_seconds": run["wall_seconds"]})
        session.note(f"adapt {adapt_steps}, refine {run['method']['refine_steps']}: Dice {run['mean_dice']:.3f}, "
                     f"{run['stage_seconds']}")
    return {"device": session.device, "runs": runs}


def synchronise(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(call: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        synchronise(device)
        started = time.perf_counter()
        call()
        synchronise(device)
        times.append(time.perf_counter() - started)
    return round(min(times[1:]), 4)


@torch.no_grad()
def forward_figures(name: str, device: torch.device, shape_zyx: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Forward seconds (and peak GPU memory) of an untrained default ``name`` network, float32 and bfloat16."""
    from shmoareg.models import build_model

    torch.manual_seed(0)
    model = build_model(name).to(device).eval()
    fixed, moving = torch.rand(2, 1, 1, *shape_zyx, device=device)
    figures: dict[str, Any] = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
    for label, amp in (("float32", False), ("bfloat16", True)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            figures[f"{label}_seconds"] = best_seconds(lambda: model(fixed, moving), device, repeats)
        if device.type == "cuda":
            figures[f"{label}_gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return figures


def time_forward(session: Session) -> dict[str, Any]:
    """Every registered network's forward pass at bench_models.py's 160x192x224 (32^3 in the dry run)."""
    import bench_models
    from shmoareg.models import MODEL_NAMES

    device = torch.device(session.device)
    shape = DRY_RUN_SHAPE_ZYX if session.dry_run else bench_models.SHAPE_ZYX
    repeats = 1 if session.dry_run else 3
    models = [forward_figures(name, device, shape, repeats) for name in MODEL_NAMES]
    if device.type == "cuda":
        torch.cuda.empty_cache()  # leave the card to the training process
    return {"shape_xyz": list(shape[::-1]), "device": session.device, "repeats": repeats, "models": models}


# -- training --------------------------------------------------------------------------------------
def dry_run_subjects(folder: Path) -> list[str]:
    """Two stand-in subjects as anatomy cache files, so that the dry run needs no ../shared/data: the shipped
    MNI152 sample (the reference) with its tissue classes as labels, and its mirror image."""
    import hashlib

    import numpy as np
    import SimpleITK as sitk

    from shmoareg.known_warps import tissue_labels
    from shmoareg.training.anatomy import Subject, reference_image, save_subject

    reference = reference_image()
    classes = sitk.GetArrayFromImage(tissue_labels(reference))
    labels = np.select([classes == 1, classes == 2, classes == 3], [24, 3, 2], 0).astype(np.int16)  # CSF, GM, WM
    image = sitk.GetArrayFromImage(reference).astype(np.float16)
    paths = []
    for name, view in (("mni", np.s_[...]), ("mni-mirrored", np.s_[..., ::-1])):
        subject = Subject(name, np.ascontiguousarray(labels[view]), np.ascontiguousarray(image[view]),
                          hashlib.sha256(labels[view].tobytes() + image[view].tobytes()).hexdigest())
        paths.append(folder / f"{name}-dry-run.npz")
        save_subject(subject, paths[-1])
    return [str(path) for path in paths]


def dry_run_config(folder: Path) -> Path:
    """The GPU recipe shrunk to 3 steps of 2 pairs on a 32^3 grid, on stand-in subjects, starting from scratch."""
    import yaml

    values = yaml.safe_load(TRAIN_CONFIG.read_text())
    for keys, value in DRY_RUN_TRAINING.items():
        section = values
        for key in keys[:-1]:
            section = section.setdefault(key, {})
        section[keys[-1]] = value
    values.pop("init_from", None)  # the shipped weights are past step 3
    subjects = dry_run_subjects(folder / "anatomy")  # a fresh clone has neither ../shared/data nor the cache
    values["data"]["anatomy"].update(subjects=subjects, validation_subjects=subjects, cache_dir=str(folder / "anatomy"))
    path = folder / "train_dry_run.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def checkpoint_intact(weights: Path) -> bool:
    """Whether a checkpoint's weights match the sha256 its sidecar records."""
    from shmoareg.checkpoints import sha256_of

    sidecar = json.loads(weights.with_suffix(".json").read_text())
    return sidecar["weights"]["sha256"] == sha256_of(weights)


def copy_resume_checkpoint(session: Session, checkpoints: Path) -> Optional[int]:
    """Copy RESUME_FROM's latest.* to ``checkpoints``; returns its step (None when absent)."""
    if not all((RESUME_FROM / name).is_file() for name in LATEST_FILES):
        session.note(f"no complete {RESUME_FROM / 'latest.*'} (weights, sidecar, state): training starts from the "
                     "config's init_from")
        return None
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name in LATEST_FILES:
        shutil.copy2(RESUME_FROM / name, checkpoints / name)
    if not checkpoint_intact(checkpoints / LATEST_FILES[0]):
        raise RuntimeError(f"{RESUME_FROM / LATEST_FILES[0]} does not match its sidecar's sha256 (copied while "
                           "being written?); carry it again")
    return int(json.loads((checkpoints / "latest.json").read_text())["step"])


def training_figures(output: Path, log: Path) -> dict[str, Any]:
    """Steps reached, speed and last validation of a training run, from its log, metrics and checkpoint."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["seconds_per_step"] for r in records if r.get("phase") == "train" and "seconds_per_step" in r]
    validations = [r for r in records if r.get("phase") == "validation"]
    started = re.search(r"from step (\d+)", log.read_text())
    latest = output / "checkpoints" / LATEST_FILES[0]
    figures: dict[str, Any] = {"from_step": int(started.group(1)) if started else None,
                               "seconds_per_step": round(sum(speeds) / len(speeds), 4) if speeds else None,
                               "last_validation": {k: validations[-1].get(k) for k in ("step", "dice", "loss")}
                               if validations else None}
    if latest.is_file():
        figures["checkpoint_step"] = int(json.loads(latest.with_suffix(".json").read_text())["step"])
        figures["checkpoint_intact"] = checkpoint_intact(latest)
    return figures


def train(session: Session) -> dict[str, Any]:
    """Continue the CPU run on the real-anatomy GPU recipe (``--resume``) until SIGINT stops it before the
    deadline."""
    output = session.work / "train"
    config = dry_run_config(session.work) if session.dry_run else TRAIN_CONFIG
    resumed = None if session.dry_run else copy_resume_checkpoint(session, output / "checkpoints")
    budget = int(session.seconds_left() - STOP_RESERVE_SECONDS)
    if budget < MIN_TRAIN_SECONDS:
        return {"skipped": f"only {budget} s left before the stop reserve; raise --minutes"}
    log = session.work / "train.log"
    code = session.run(["timeout", "--signal=INT", "--kill-after=30", "--preserve-status", str(budget),
                        sys.executable, "-m", "shmoareg", "train", "--config", str(config), "--device",
                        session.device, "--resume", "--output-dir", str(output)], capture=log)
    recipe = ("the GPU recipe shrunk for the dry run, on stand-in subjects" if session.dry_run
              else str(TRAIN_CONFIG.relative_to(REPO)))
    result: dict[str, Any] = {"config": recipe, "copied_checkpoint_step": resumed, "time_limit_seconds": budget,
                              "exit_code": code}
    result["stopped"] = {0: "finished its steps", 130: "stopped by SIGINT at the time limit"}.get(code)
    if result["stopped"] is None:
        lines = log.read_text().strip().splitlines() or ["no output"]
        result["error"] = f"train exited {code}: {one_line(lines[-1])}"
    if (output / "metrics.jsonl").is_file():
        result.update(training_figures(output, log))
    if result.get("checkpoint_intact") is False:
        result["error"] = "latest checkpoint's weights do not match its sidecar (stopped while saving); use step_*"
    return result


# -- outputs ---------------------------------------------------------------------------------------
def collect(session: Session) -> dict[str, Any]:
    """Copy the latest checkpoint and pack the small files of the work folder into DIR, then remove it."""
    latest = session.work / "train" / "checkpoints"
    copied = []
    if (latest / LATEST_FILES[0]).is_file():
        (session.out / "checkpoints").mkdir(exist_ok=True)
        for name in LATEST_FILES:
            if (latest / name).is_file():
                shutil.copy2(latest / name, session.out / "checkpoints" / name)
                copied.append(f"checkpoints/{name}")
    details = [path for path in sorted(session.work.rglob("*")) if path.is_file()
               and (path.suffix in DETAIL_SUFFIXES or path.name == "best.safetensors")]
    with tarfile.open(session.out / "details.tar.gz", "w:gz") as archive:
        for path in details:
            archive.add(path, arcname=str(path.relative_to(session.work)))
    shutil.rmtree(session.work)
    return {"checkpoint": copied, "details": "details.tar.gz", "detail_files": len(details)}


# -- what a device call sends ----------------------------------------------------------------------
def mebibytes(paths: list[Path]) -> float:
    """Total size of the existing files among ``paths`` and under the existing folders among them, in MiB."""
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def travel_size() -> int:
    """Print what a device call carrying CARRY sends; 1 when it is over the 64 MiB limit."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    tree = mebibytes([REPO / name for name in listed if name])
    carried = {name: mebibytes([REPO / name]) for name in CARRY}
    total = tree + sum(carried.values())
    print(f"working tree {tree:.1f} MiB + carried {', '.join(f'{k} {v:.1f}' for k, v in carried.items())} MiB "
          f"= {total:.1f} MiB of {TRAVEL_LIMIT_MIB} MiB (all of runs/ would add {mebibytes([REPO / 'runs']):.1f} MiB)")
    print(f"carry: {json.dumps(CARRY)}")
    if total > TRAVEL_LIMIT_MIB:
        print(f"error: {total:.1f} MiB is over the {TRAVEL_LIMIT_MIB} MiB a device call carries; remove old or "
              f"unneeded wheels from .whl/ and pack them (--pack-wheels), and remove earlier anatomy cache files "
              f"from {ANATOMY_CACHE} (--anatomy-cache)",
              file=sys.stderr)
        return 1
    return 0


def anatomy_cache() -> int:
    """Cache the CPU recipe's subjects in its cache_dir (ANATOMY_CACHE; needs ../shared/data), remove the folder's
    other files and print its size; 2 when the subjects are missing."""
    from shmoareg.errors import InputError
    from shmoareg.training.anatomy import make_cache
    from shmoareg.training.config import load_config

    os.chdir(REPO)  # the recipes' paths are relative to the repository root
    anatomy = load_config(CPU_CONFIG).data.anatomy
    try:
        files = make_cache(anatomy)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(files)} subjects cached in {anatomy.cache_dir}: {mebibytes(files):.1f} MiB")
    return 0


PHASES: dict[str, Callable[[Session], dict[str, Any]]] = {
    "setup": set_up, "cuda_tests": cuda_tests, "register": time_register, "warm_register": time_warm_register,
    "forward": time_forward,
    "adapt": time_adaptation, "train": train, "collect": collect}
SKIPPABLE_PHASES = [name for name in PHASES if name not in ("setup", "collect")]  # the set-up and collection always run


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same flow on the CPU at toy sizes")
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole session's budget (default 9)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks/out/gpu_session"),
                        help="output folder (default: $OUT if set, else benchmarks/out/gpu_session)")
    parser.add_argument("--travel-size", action="store_true", help="print what a device call would carry, and exit")
    parser.add_argument("--pack-wheels", action="store_true",
                        help="xz-compress the wheels in .whl/ (set-up unpacks them), print the travel size, and exit")
    parser.add_argument("--anatomy-cache", action="store_true",
                        help=f"cache the real-anatomy subjects in {ANATOMY_CACHE} (needs ../shared/data), and exit")
    parser.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE_PHASES, metavar="PHASE",
                        help=f"phases to leave out, for a short follow-up call ({', '.join(SKIPPABLE_PHASES)})")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be positive, not {args.minutes}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run every phase; returns 0 when none failed."""
    args = parse_args(argv)
    if args.travel_size:
        return travel_size()
    if args.pack_wheels:
        print(f"packed {', '.join(path.name for path in pack_wheels(WHEELS)) or 'nothing (no .whl/*.whl)'}")
        return travel_size()
    if args.anatomy_cache:
        return anatomy_cache()
    if not args.dry_run and not torch.cuda.is_available():
        print(f"error: torch {torch.__version__} sees no GPU; use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    session = Session(args.out.resolve(), args.dry_run, args.minutes)
    session.note(f"gpu session on {session.summary['device']['name']} (torch {torch.__version__}); "
                 f"outputs in {session.out}")
    for name, action in PHASES.items():
        if name not in args.skip:
            session.phase(name, action)
    failed = [name for name, result in session.summary["phases"].items() if result["status"] == "failed"]
    session.note(f"gpu session done in {session.summary['seconds']['total']} s; "
                 + (f"failed: {', '.join(failed)}" if failed else "no phase failed")
                 + f"; summary in {session.out / 'gpu_session.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
