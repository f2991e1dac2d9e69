"""Known-warp benchmark of issue 11: similarity across contrasts, the smoothness trade-off, the uncertainty map.

Run: ``.venv/bin/python benchmarks/bench_known_warps.py [--parts similarity smoothness uncertainty]``
(about 20 minutes on this 2-core machine, one torch thread). Writes ``results/known_warps.json`` and
the three tables between their markers in ``RESULTS.md``.

Cases (``shmoareg.known_warps``; fields of at most 8 mm, control points every 16 mm):

* *similarity* and *uncertainty*: Colin27 T1 at 1 mm, warped, against itself (same contrast) and
  against its non-monotonic "gm-bright" contrast (cross), and a CT-like image against an MR-like one
  from one random label map (96^3 at 2 mm; cross). Seed 1.
* *smoothness*: the same two brain cases built from MNI152 at 1 mm (seed 11): the default weight is
  chosen on them, not on the Colin27 cases the similarity table scores.

Scores: mean end-point error over the fixed labels' voxels (mm), mean Dice of the labels (tissue
proxies for the brains, the random labels for CT/MR), SDlogJ and folding over the fixed foreground,
wall seconds of ``register`` in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.known_warps import brain_case, label_case

import known_warp_runs as runs
from compare import write_between

RESULTS_JSON = runs.HERE / "results" / "known_warps.json"
MARKERS = {part: (f"<!-- known-warps-{part}:begin -->", f"<!-- known-warps-{part}:end -->")
           for part in ("similarity", "smoothness", "uncertainty")}
SIMILARITIES = ("auto", "lncc", "mind", "ngf")
MODELS = ("shmoareg", "none")
SMOOTHNESS_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
SEED = 1
TUNING_SEED = 11
TOP_SHARE = 0.1  # the most-uncertain tenth of the voxels


def scored_cases(brain: sitk.Image, name: str, seed: int, with_ct: bool) -> list:
    built = [brain_case(brain, "t1", seed), brain_case(brain, "gm-bright", seed)]
    for case in built:
        case.name = f"{name}-{case.name}"
    return built + ([label_case(seed)] if with_ct else [])


def similarity_part(brains: dict) -> list[dict]:
    """Every similarity, with and without the network, on the Colin27 and CT/MR cases."""
    rows = []
    for case in scored_cases(brains["colin27"], "colin27", SEED, with_ct=True):
        rows.append(runs.before(case))
        for model in MODELS:
            for similarity in SIMILARITIES:
                rows.append(runs.run(case, f"{model}-{similarity}", model=model, similarity=similarity))
                print(_line(rows[-1]), flush=True)
    return rows


def smoothness_part(brains: dict) -> list[dict]:
    """Default settings but the smoothness weight, on the MNI152 tuning cases."""
    rows = []
    for case in scored_cases(brains["mni152"], "mni152", TUNING_SEED, with_ct=False):
        rows.append(runs.before(case))
        for weight in SMOOTHNESS_WEIGHTS:
            rows.append(runs.run(case, f"smoothness-{weight}", smoothness=weight))
            print(_line(rows[-1]), flush=True)
    return rows


def ranks(values: np.ndarray) -> np.ndarray:
    order = np.empty(len(values))
    order[np.argsort(values, kind="stable")] = np.arange(len(values))
    return order


def tracking(uncertainty: np.ndarray, error: np.ndarray) -> dict:
    """How an uncertainty map tracks the true error: Spearman correlation, and the mean error in the most
    uncertain tenth against the rest."""
    top = uncertainty >= np.quantile(uncertainty, 1 - TOP_SHARE)
    return {"spearman": float(np.corrcoef(ranks(uncertainty), ranks(error))[0, 1]),
            "error_top_tenth_mm": float(error[top].mean()), "error_rest_mm": float(error[~top].mean()),
            "uncertainty_mean_mm": float(uncertainty.mean()), "error_mean_mm": float(error.mean())}


def uncertainty_part(brains: dict) -> list[dict]:
    """Default settings with the uncertainty map, against the true error, on the Colin27 and CT/MR cases."""
    rows = []
    for case in scored_cases(brains["colin27"], "colin27", SEED, with_ct=True):
        row = runs.run(case, "uncertainty", uncertainty=True)
        foreground = case.foreground
        row["tracking"] = tracking(runs.uncertainty_map(row["output"])[foreground],
                                   runs.run_error_map(case, row["output"])[foreground])
        row["uncertainty_seconds"] = row["stage_seconds"].get("uncertainty")
        rows.append(row)
        print(_line(row), row["tracking"], flush=True)
    return rows


def _line(row: dict) -> str:
    return (f"{row['case']} {row['run']}: EPE {row['epe_mm']['mean_mm']:.2f} mm, Dice {row['dice']:.3f}, "
            f"SDlogJ {row.get('sdlogj', 0):.3f}, {row.get('seconds', 0):.1f} s")


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def similarity_table(rows: list[dict]) -> str:
    lines = ["| case | contrast | model | similarity (used) | mean EPE (mm) | EPE p95 (mm) | Dice | SDlogJ "
             "| J<=0 (%) | refine steps | seconds |", "|" + " --- |" * 11]
    for row in rows:
        if row["run"] == "before":
            lines.append(f"| {row['case']} | {row['contrast']} | before | - | {row['epe_mm']['mean_mm']:.2f} "
                         f"| {row['epe_mm']['p95_mm']:.2f} | {row['dice']:.3f} | - | - | - | - |")
            continue
        options = row["options"]
        lines.append(f"| {row['case']} | {row['contrast']} | {options['model']} | {options['similarity']} "
                     f"({row['similarity_used']}) | {row['epe_mm']['mean_mm']:.2f} | {row['epe_mm']['p95_mm']:.2f} "
                     f"| {row['dice']:.3f} | {row['sdlogj']:.3f} | {row['folding_percent']:.3f} "
                     f"| {row['refine_steps']} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def smoothness_table(rows: list[dict]) -> str:
    lines = ["| case | smoothness W | mean EPE (mm) | Dice | SDlogJ | J<=0 (%) | seconds |", "|" + " --- |" * 7]
    for row in rows:
        weight = row["options"]["smoothness"] if row["run"] != "before" else "before"
        lines.append(f"| {row['case']} | {weight} | {row['epe_mm']['mean_mm']:.2f} | {row['dice']:.3f} "
                     f"| {_number(row.get('sdlogj'), 3)} | {_number(row.get('folding_percent'), 3)} "
                     f"| {_number(row.get('seconds'), 1)} |")
    return "\n".join(lines)


def uncertainty_table(rows: list[dict]) -> str:
    lines = ["| case | Spearman (uncertainty, true error) | true error, most uncertain tenth (mm) "
             "| true error, the rest (mm) | mean uncertainty (mm) | mean true error (mm) | extra seconds |",
             "|" + " --- |" * 7]
    for row in rows:
        t = row["tracking"]
        lines.append(f"| {row['case']} | {t['spearman']:.2f} | {t['error_top_tenth_mm']:.2f} "
                     f"| {t['error_rest_mm']:.2f} | {t['uncertainty_mean_mm']:.2f} | {t['error_mean_mm']:.2f} "
                     f"| {_number(row['uncertainty_seconds'], 1)} |")
    return "\n".join(lines)


PARTS = {"similarity": (similarity_part, similarity_table), "smoothness": (smoothness_part, smoothness_table),
         "uncertainty": (uncertainty_part, uncertainty_table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    brains = runs.brains()
    report = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    for part in args.parts:
        measure, table = PARTS[part]
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = measure(brains)
        report[part] = {"started": started, "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                                        "threads": 1, "load_average_at_end": os.getloadavg()},
                        "rows": rows}
        RESULTS_JSON.write_text(json.dumps(report, indent=1) + "\n")
        write_between(MARKERS[part], table(rows))


if __name__ == "__main__":
    main()
