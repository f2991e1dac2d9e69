"""``evaluate``: register every pair of a dataset split with a model and tabulate the results.

Each pair goes through :func:`shmoareg.pipeline.register` into ``<output>/pairs/<pair id>/``; its
``summary.json`` gives Dice (mean and per label), HD95, SDlogJ, the fraction of ``|J| <= 0`` and the
seconds taken. ``results.csv`` has one row per pair; ``results.json`` has the rows, their means and
the mean Dice per label. The pairs run as ``batch``'s do (:func:`shmoareg.cohort.runner.run_pairs`):
under ``torchrun`` they are dealt over the ranks and rank 0 writes the tables; a pair that fails is
recorded with its error and the others still run. Unlike ``batch``, every pair is registered afresh.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from shmoareg.cohort.runner import PairJob, PairResult, run_pairs
from shmoareg.errors import InputError
from shmoareg.jsonio import dumps
from shmoareg.pipeline import RegistrationRequest
from shmoareg.progress import Progress
from shmoareg.protocol import RESULTS_CSV_FILE, RESULTS_JSON_FILE
from shmoareg.training.datasets import PAIR_SPLITS, Pair, read_dataset

COLUMNS = ("pair", "fixed", "moving", "mean_dice_before", "mean_dice", "mean_hd95_mm", "sdlogj",
           "fraction_nonpositive", "seconds", "error")
MEAN_COLUMNS = ("mean_dice_before", "mean_dice", "mean_hd95_mm", "sdlogj", "fraction_nonpositive", "seconds")


def _finite_or_none(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _row(identifier: str, pair: Pair, summary: dict[str, Any]) -> dict[str, Any]:
    metrics = summary["metrics"]
    return {
        "pair": identifier, "fixed": str(pair.fixed), "moving": str(pair.moving),
        **{name: _finite_or_none(metrics.get(name)) for name in MEAN_COLUMNS if name != "seconds"},
        "seconds": summary["seconds"]["total"], "error": "",
        "dice": {label: _finite_or_none(v) for label, v in metrics.get("dice", {}).items()},
        "hd95_mm": {label: _finite_or_none(v) for label, v in metrics.get("hd95_mm", {}).items()},
    }


def _text(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _failed_row(identifier: str, pair: Pair, message: str) -> dict[str, Any]:
    return {"pair": identifier, "fixed": str(pair.fixed), "moving": str(pair.moving),
            **{name: None for name in MEAN_COLUMNS}, "error": message, "dice": {}, "hd95_mm": {}}


def _identifiers(pairs: list[Pair]) -> list[str]:
    """Pair ids, made unique by an index suffix where two pairs share one."""
    names = [pair.identifier for pair in pairs]
    return [name if names.count(name) == 1 else f"{name}_{index}" for index, name in enumerate(names)]


def _mean(values: list[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def _write_tables(output_dir: Path, rows: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = sorted({label for row in rows for label in row["dice"]}, key=lambda label: int(label))
    with open(output_dir / RESULTS_CSV_FILE, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(COLUMNS) + [f"dice_{label}" for label in labels])
        for row in rows:
            values = [row[name] for name in COLUMNS] + [row["dice"].get(label) for label in labels]
            writer.writerow(["" if value is None else value for value in values])
    results = {
        **header,
        "count": len(rows),
        "failed": sum(1 for row in rows if row["error"]),
        "mean": {name: _mean([row[name] for row in rows]) for name in MEAN_COLUMNS},
        "mean_dice_per_label": {label: _mean([row["dice"].get(label) for row in rows]) for label in labels},
        "pairs": rows,
    }
    (output_dir / RESULTS_JSON_FILE).write_text(dumps(results, indent=2) + "\n")
    return results


def evaluate(dataset: str | os.PathLike, model: str, output_dir: str | os.PathLike, *,
             split: str = "registration_val", refine_steps: Optional[int] = None, device: str = "auto",
             affine: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Register the ``split`` pairs of ``dataset`` with ``model`` (name or checkpoint path); returns the results."""
    if split not in PAIR_SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(PAIR_SPLITS)}")
    index = read_dataset(dataset)
    pairs = index.pairs[split]
    if not pairs:
        listed = [name for name, found in index.pairs.items() if found]
        raise InputError(f"dataset {index.source} lists no {split} pairs"
                         + (f"; it lists {', '.join(listed)}" if listed else "; give a dataset.json with pairs"))
    output_dir = Path(output_dir)
    jobs = [PairJob(identifier, RegistrationRequest(
        fixed=pair.fixed, moving=pair.moving, output_dir=output_dir / "pairs" / identifier,
        fixed_segmentation=pair.fixed_label, moving_segmentation=pair.moving_label, model=model,
        refine_steps=refine_steps, device=device, affine=affine)) for identifier, pair in zip(_identifiers(pairs), pairs)]

    def logged(job: PairJob, result: PairResult) -> None:
        if result.summary is None:
            log(f"{job.identifier}: failed: {result.message}")
        else:
            log(f"{job.identifier}: mean Dice {_text(result.summary['metrics'].get('mean_dice'))}, "
                f"{result.summary['seconds']['total']:.1f} s")

    results = run_pairs(jobs, device=device, resume=False, progress=Progress("none"), after=logged)
    if results is None:  # a rank other than 0
        return {}
    rows = [_failed_row(result.identifier, pair, result.message) if result.summary is None
            else _row(result.identifier, pair, result.summary) for result, pair in zip(results, pairs)]
    model_details = next((result.summary.get("model") for result in results if result.summary), None)
    header = {"model": model, "model_details": model_details, "dataset": index.describe(), "split": split,
              "refine_steps": refine_steps, "device": device, "affine": affine}
    return _write_tables(output_dir, rows, header)
