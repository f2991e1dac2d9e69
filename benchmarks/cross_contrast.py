"""Cross-contrast in seconds (issue 24, point 6): the default ``register`` on a 1 mm brain within one contrast
(local NCC) and across contrasts (MIND-SSC), timed and scored on the known-warp cases.

Run: ``.venv/bin/python benchmarks/cross_contrast.py --label after`` (options: ``--brains``, ``--repeats``,
``--threads``; 4-5 minutes a repeat of both brains on this 2-core machine). To time another engine, put its
package first on the path: ``PYTHONPATH=/path/to/engine .venv/bin/python benchmarks/cross_contrast.py --label
before`` (the folder holding that engine's ``shmoareg``; the results record which one ran).

Cases (``bench_known_warps.scored_cases``): Colin27 at 1 mm (seed 1, the figures reported) and MNI152 at 1 mm
(seed 11, the cases choices are made on), each warped by a known field and registered to itself ("same") and to
its grey-matter-bright contrast ("cross"). Every run is one ``shmoareg register`` process with the defaults
(``--device cpu``), ``--threads`` threads for torch, OpenMP and ITK (default ``methods.THREADS``;
``compare.run_timed``); the repeats interleave the cases, so that a slow spell of this shared machine falls on all
of them. Recorded per run: wall seconds (process start to exit), CPU seconds (user and system; steadier than the
wall time when other jobs share the cores, and with one thread close to the work done), the stages' seconds from
``summary.json``, peak memory, mean end-point error and Dice; per case the medians; per brain the ratio of the cross
case's median to the same-contrast one's, in wall and in CPU seconds. Written to ``results/cross_contrast_cpu.json``
under ``--label`` (other labels are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import shmoareg
from shmoareg.known_warps import KnownWarpCase

import compare
import methods
import known_warp_runs as runs
from bench_known_warps import SEED, TUNING_SEED, scored_cases

RESULTS_JSON = runs.HERE / "results" / "cross_contrast_cpu.json"
SEEDS = {"colin27": SEED, "mni152": TUNING_SEED}
MEDIAN_KEYS = ("seconds", "cpu_seconds", "register_seconds", "peak_memory_mb", "epe_mean_mm", "dice")
RATIO_KEYS = ("seconds", "cpu_seconds")  # cross over same, of the medians


def timed_run(case: KnownWarpCase, paths: dict[str, str], repeat: int, threads: int) -> dict:
    """One default ``register`` of ``case`` (its images at ``paths``) in its own process on ``threads`` threads:
    seconds, memory, scores."""
    folder = runs.WORK / case.name / f"cross-contrast-{repeat}"
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / "output"
    measured = compare.run_timed([sys.executable, "-m", "shmoareg", "register", "--fixed", paths["fixed"],
                                  "--moving", paths["moving"], "--output-dir", str(output), "--device", "cpu"],
                                 folder, threads)
    scored = runs.scores(case, output)
    return {**measured, "register_seconds": scored["stage_seconds"]["register"],
            "epe_mean_mm": scored["epe_mm"]["mean_mm"], "dice": scored["dice"], **scored}


def summary(rows: list[dict]) -> dict:
    """The median of each of ``MEDIAN_KEYS`` over a case's runs, and the range of its wall seconds."""
    medians = {key: round(statistics.median(row[key] for row in rows), 3) for key in MEDIAN_KEYS}
    seconds = [row["seconds"] for row in rows]
    return {**medians, "seconds_min": min(seconds), "seconds_max": max(seconds),
            "similarity_used": rows[0]["similarity_used"], "refine_steps": rows[0]["refine_steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="key of this measurement in the results file")
    parser.add_argument("--brains", nargs="+", default=list(SEEDS), choices=list(SEEDS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=methods.THREADS)
    args = parser.parse_args()
    brains = runs.brains()
    cases = [case for name in args.brains for case in scored_cases(brains[name], name, SEEDS[name], with_ct=False)]
    paths = {case.name: case.write(runs.WORK / case.name) for case in cases}
    machine = compare.machine()
    rows: dict[str, list[dict]] = {case.name: [] for case in cases}
    for repeat in range(args.repeats):
        for case in cases:
            rows[case.name].append(timed_run(case, paths[case.name], repeat, args.threads))
            row = rows[case.name][-1]
            print(f"{case.name} run {repeat}: {row['seconds']:.1f} s, CPU {row['cpu_seconds']:.1f} s "
                  f"(register {row['register_seconds']:.1f} s), "
                  f"EPE {row['epe_mean_mm']:.3f} mm, Dice {row['dice']:.3f}", flush=True)
    medians = {name: summary(case_rows) for name, case_rows in rows.items()}
    ratios = {name: {key: round(medians[f"{name}-brain-gm-bright-{SEEDS[name]}"][key]
                                / medians[f"{name}-brain-t1-{SEEDS[name]}"][key], 3) for key in RATIO_KEYS}
              for name in args.brains}
    print(json.dumps({"medians": medians, "cross_over_same": ratios}, indent=1))
    report = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    report[args.label] = {"engine": os.path.dirname(shmoareg.__file__), "machine": machine, "threads": args.threads,
                          "load_average_at_end": os.getloadavg(), "repeats": args.repeats,
                          "cross_over_same": ratios, "medians": medians, "runs": rows}
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
