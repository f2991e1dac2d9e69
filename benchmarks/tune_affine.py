"""The affine stage's settings, side by side: seconds and label overlap after the affine alone on real brains.

Run (needs ``../shared/data``)::

    .venv/bin/python benchmarks/tune_affine.py --subjects train
    .venv/bin/python benchmarks/tune_affine.py --subjects validation --settings default

Pairs: a ring over the OASIS-TRT-20 subjects of the split (``train``: 01-10, where settings are chosen;
``validation``: 11-20, the pairs ``compare.py`` scores, only to report), each image in its native space. For each
named setting of ``SETTINGS``: the wall and CPU seconds of :func:`shmoareg.affine.initialise_affine` (median of ``--repeats``,
two threads; the CPU seconds are steadier on a busy machine) and the mean Dice over the labels both subjects have of the moving labels resampled through the
affine (nearest). Writes ``benchmarks/results/affine_<subjects>_cpu.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.affine import AffineSettings, initialise_affine
from shmoareg.grid import Grid, resample
from shmoareg.metrics import dice_per_label, mean_dice

import compare

SETTINGS = {
    "default": AffineSettings(),
    "iterations 60 40": AffineSettings(iterations=(60, 40)),
    "iterations 40 30": AffineSettings(iterations=(40, 30)),
    "16000 samples, iterations 60 40": AffineSettings(samples=16000, iterations=(60, 40)),
    "4000 samples, iterations 60 40": AffineSettings(samples=4000, iterations=(60, 40)),
}
SUBJECTS = {"train": tuple(range(1, 11)), "validation": compare.VALIDATION_SUBJECTS}


def ring(subjects: tuple[int, ...]) -> list[tuple[int, int]]:
    """(fixed, moving) pairs: each subject against the next one, the last against the first."""
    return [(fixed, subjects[(index + 1) % len(subjects)]) for index, fixed in enumerate(subjects)]


def affine_dice(fixed_labels: sitk.Image, moving_labels: sitk.Image, affine: sitk.Transform) -> float:
    """Mean Dice over the labels both maps have, of the moving labels resampled onto the fixed ones."""
    warped = resample(moving_labels, Grid.of(fixed_labels), affine, sitk.sitkNearestNeighbor)
    reference, moved = sitk.GetArrayViewFromImage(fixed_labels), sitk.GetArrayViewFromImage(warped)
    common = sorted((set(np.unique(reference)) & set(np.unique(sitk.GetArrayViewFromImage(moving_labels)))) - {0})
    return mean_dice({k: v for k, v in dice_per_label(reference, moved).items() if k in common})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", choices=sorted(SUBJECTS), default="train")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    torch.set_num_threads(2)
    images = {subject: [sitk.ReadImage(str(path)) for path in compare.subject_files(subject)]
              for subject in SUBJECTS[args.subjects]}
    results: dict[str, dict] = {}
    for name in args.settings:
        runs = []
        for fixed, moving in ring(SUBJECTS[args.subjects]):
            seconds, cpu_seconds = [], []
            for _ in range(args.repeats):
                started, started_cpu = time.perf_counter(), time.process_time()
                affine = initialise_affine(images[fixed][0], images[moving][0], SETTINGS[name])
                seconds.append(time.perf_counter() - started)
                cpu_seconds.append(time.process_time() - started_cpu)
            runs.append({"pair": [fixed, moving], "seconds": statistics.median(seconds),
                         "cpu_seconds": statistics.median(cpu_seconds),
                         "dice": affine_dice(images[fixed][1], images[moving][1], affine)})
        results[name] = {"mean_dice": float(np.mean([run["dice"] for run in runs])),
                         "median_seconds": statistics.median(run["seconds"] for run in runs),
                         "median_cpu_seconds": statistics.median(run["cpu_seconds"] for run in runs), "pairs": runs}
        print(f"| {name} | {results[name]['mean_dice']:.4f} | {results[name]['median_seconds']:.3f} | "
              f"{results[name]['median_cpu_seconds']:.3f} |", flush=True)
    output = compare.HERE / "results" / f"affine_{args.subjects}_cpu.json"
    output.write_text(json.dumps({"machine": compare.machine(), "settings": {
        name: vars(SETTINGS[name]) for name in args.settings}, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
