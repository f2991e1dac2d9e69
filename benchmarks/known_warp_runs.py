"""Runs of ``register`` on known-warp cases (``shmoareg.known_warps``) and what they are scored by.

Shared by ``bench_known_warps.py`` and ``cross_contrast.py``. A run of :func:`run` is ``register`` in this
process (one torch thread), with its own output folder under ``benchmarks/out``; :func:`scores` reads a finished
run's folder, wherever it ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.known_warps import KnownWarpCase, end_point_error, error_map
from shmoareg.metrics import dice_per_label, mean_dice
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.protocol import COMPLETION_MARKER, TRANSFORM_FILE, UNCERTAINTY_FILE

import sources

HERE = Path(__file__).resolve().parent
WORK = HERE / "out" / "known_warps"
SOURCES_CACHE = HERE / "out" / "sources"
IDENTITY = sitk.Transform(3, sitk.sitkIdentity)


def brains() -> dict[str, sitk.Image]:
    """The 1 mm MNI152 (for tuning) and Colin27 (for the recorded figures) T1 brains."""
    return {name: sitk.ReadImage(str(path)) for name, path in sources.public_brains(SOURCES_CACHE).items()}


def label_dice(case: KnownWarpCase, transform: sitk.Transform) -> float:
    """Mean Dice of the moving labels resampled through ``transform`` (nearest) against the fixed labels."""
    warped = sitk.Resample(case.moving_labels, case.fixed_labels, transform, sitk.sitkNearestNeighbor, 0)
    return mean_dice(dice_per_label(sitk.GetArrayViewFromImage(case.fixed_labels), sitk.GetArrayViewFromImage(warped)))


def run(case: KnownWarpCase, name: str, **options) -> dict:
    """``register`` with ``options`` on ``case``: end-point error, Dice, Jacobian statistics, seconds."""
    folder = WORK / case.name
    paths = case.write(folder)
    output = folder / name
    torch.set_num_threads(1)
    started = time.perf_counter()
    register(RegistrationRequest(paths["fixed"], paths["moving"], output, device="cpu", **options))
    seconds = time.perf_counter() - started
    return {"case": case.name, "contrast": case.contrast, "run": name, "options": options, **scores(case, output),
            "seconds": round(seconds, 2), "output": str(output)}


def scores(case: KnownWarpCase, output: Path) -> dict:
    """What a finished ``register`` into ``output`` used and reached on ``case``: the similarity, the refinement
    steps, end-point error, Dice, Jacobian statistics and the seconds per stage (``summary.json``)."""
    summary = json.loads((Path(output) / COMPLETION_MARKER).read_text())
    transform = sitk.ReadTransform(str(Path(output) / TRANSFORM_FILE))
    return {"similarity_used": summary["method"]["similarity"], "refine_steps": summary["method"]["refine_steps"],
            "epe_mm": end_point_error(case, transform), "dice": label_dice(case, transform),
            "sdlogj": summary["metrics"]["sdlogj"], "folding_percent": 100 * summary["metrics"]["fraction_nonpositive"],
            "stage_seconds": summary["seconds"]}


def before(case: KnownWarpCase) -> dict:
    """The identity's scores: where every case starts."""
    return {"case": case.name, "contrast": case.contrast, "run": "before", "epe_mm": end_point_error(case, IDENTITY),
            "dice": label_dice(case, IDENTITY)}


def run_error_map(case: KnownWarpCase, output: Path) -> np.ndarray:
    """The true end-point error (mm) of a run's transform at every voxel of the fixed grid."""
    return error_map(case, sitk.ReadTransform(str(Path(output) / TRANSFORM_FILE)))


def uncertainty_map(output: Path) -> np.ndarray:
    """The uncertainty a run wrote (mm)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(Path(output) / UNCERTAINTY_FILE)))
