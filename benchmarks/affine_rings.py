"""The affine stage alone on both real-brain rings: its affine-only Dice over the manual labels and its seconds.

Run::

    .venv/bin/python benchmarks/affine_rings.py      # writes benchmarks/results/affine_rings_cpu.json

Rings of OASIS-TRT-20 (``../shared/data/oasis-trt-20``): the validation ring is ``compare.REAL_PAIRS``
(11 -> 12 ... 20 -> 11, the decision group), the training ring the same ring over subjects 01-10 (01 -> 02 ...
10 -> 01), a check that settings chosen on the one do not lose on the other. For each pair:
:func:`shmoareg.affine.initialise_affine` on the two T1 scans read as float32 (what ``register`` gives it), timed
in this process (median of ``--repeats``), and the moving labels pulled through it scored by ``compare.score``.
Prints a Markdown table of the means and the per-pair Dice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import SimpleITK as sitk

import compare
from shmoareg.affine import initialise_affine

RESULTS = compare.HERE / "results" / "affine_rings_cpu.json"
TRAINING_SUBJECTS = tuple(range(1, 11))


def measure(fixed: int, moving: int, repeats: int) -> dict:
    """The affine of one pair: its median seconds and its affine-only Dice."""
    pair = compare.real_pair(fixed, moving)
    fixed_image = sitk.ReadImage(str(pair.fixed), sitk.sitkFloat32)
    moving_image = sitk.ReadImage(str(pair.moving), sitk.sitkFloat32)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        affine = initialise_affine(fixed_image, moving_image)
        seconds.append(time.perf_counter() - start)
    scores = compare.score(pair, affine)
    return {"pair": pair.name, "seconds": round(statistics.median(seconds), 3),
            "mean_dice": scores["mean_dice"], "mean_dice_cortical": scores["mean_dice_cortical"],
            "mean_dice_subcortical": scores["mean_dice_subcortical"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _, missing = compare.real_pairs()
    if missing:
        raise SystemExit(f"the real-brain rings are missing: {missing}")
    rings = {"validation (11-20)": compare.REAL_PAIRS, "training (01-10)": compare.ring(TRAINING_SUBJECTS)}
    results = {name: [measure(fixed, moving, args.repeats) for fixed, moving in members]
               for name, members in rings.items()}
    RESULTS.write_text(json.dumps({"machine": compare.machine(), "repeats": args.repeats, "rings": results},
                                  indent=1))
    print("| ring | mean affine-only Dice | median seconds | per pair |\n| --- | ---: | ---: | --- |")
    for name, rows in results.items():
        per_pair = " ".join(f"{row['mean_dice']:.3f}" for row in rows)
        print(f"| {name} | {np.mean([row['mean_dice'] for row in rows]):.4f} | "
              f"{statistics.median(row['seconds'] for row in rows):.2f} | {per_pair} |")


if __name__ == "__main__":
    main()
