"""Side-by-side registration benchmark: every available method on the same pairs, scored the same way.

Run: ``.venv/bin/python benchmarks/compare.py`` (options: ``--groups``, ``--pairs``, ``--methods``, ``--repeats``,
``--update``); the real-brain group alone, one pair, a few methods::

    .venv/bin/python benchmarks/compare.py --groups real --pairs oasis-11-12 --methods affine-only shmoareg --update

Writes ``benchmarks/results/compare.json`` (per pair and method; the pairs with their scored labels; the group
means) and, between their markers in ``benchmarks/RESULTS.md``, the per-group summary with the pair tables and the
target table; work files go to ``benchmarks/out/``.

The decision metric is the **real-brain group** (``--groups real``): OASIS-TRT-20 subjects 11-20 of Mindboggle-101
(``../shared/data/oasis-trt-20``, the team's validation subjects, never trained on; used in place, never copied),
T1 scans skull-stripped at 1 mm, each in its own native space (so the affine is part of the task), ten fixed pairs
of different subjects (``REAL_PAIRS``, named ``oasis-<fixed>-<moving>``; fixed brain mask: T1 > 0) scored on their
*manual* labels: Dice and HD95 per label over every label both subjects have, Dice reported as the mean over all of
them, over the DKT31 cortical labels (1000-2999) and over the subcortical ones (below 1000). The targets are judged
on this group's means once a method has run on all of its pairs. Without ``../shared/data`` the group is left out
with the reason printed.

The secondary **proxy group** (``--groups proxy``), at 2 mm (the package's ``shmoareg/sample_data``) and at 1 mm
(the same two brains at full resolution, fetched once by ``sources.py`` from the nilearn wheel and Debian's
mricron-data):

* ``mni-colin-*`` and ``colin-mni-1mm``: MNI152 2009a and Colin27, inter-subject, both ways.
  Labels are a *proxy*: a 3-class tissue split (CSF / GM / WM by intensity) from Otsu multiple
  thresholds over each image's nonzero (skull-stripped brain) voxels, not a manual segmentation.
* ``colin-synth-<seed>-*``: Colin27 (fixed) and Colin27 warped by a known random smooth
  diffeomorphic field of at most 8 mm (moving); the moving labels are the Colin27 proxy labels
  warped by the same field (nearest), so the label correspondence is exact.

Every method is one child process (``methods.py``), started by a small stdlib-only launcher;
wall seconds are the child's wall time (process start to exit, model loading and file writing
included) and peak memory is the child's ``ru_maxrss`` from ``os.wait4``. Each method's transform becomes a
displacement field on the fixed grid (``sitk.TransformToDisplacementField``); the moving
labels are resampled through it (nearest) for Dice and HD95, and its Jacobian determinant
comes from ``shmoareg.fields.jacobian_image``; SDlogJ and the fraction J <= 0 are taken over
the fixed image's brain mask. HD95 is computed label by label on the label's bounding box (the same numbers as
``hd95_per_label`` on the whole volume, at a fraction of the cost for ~100 labels at 1 mm); ``score_seconds``
records what scoring took.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.fields import jacobian_image, sampled_field
from shmoareg.grid import Grid
from shmoareg.known_warps import TISSUE_CLASSES, brain_mask, tissue_labels
from shmoareg.metrics import dice_per_label, hd95_per_label, jacobian_statistics, mean_dice
from shmoareg.resources import SAMPLE_PAIR
from shmoareg.spatial import warp, warp_labels
from shmoareg.synthetic import random_smooth_field

import methods
import sources

HERE = Path(__file__).resolve().parent
WORK = HERE / "out" / "compare"
SOURCES_CACHE = HERE / "out" / "sources"
RESULTS_JSON = HERE / "results" / "compare.json"
RESULTS_MD = HERE / "RESULTS.md"
TABLE_MARKERS = ("<!-- compare-table:begin -->", "<!-- compare-table:end -->")
TARGET_MARKERS = ("<!-- targets:begin -->", "<!-- targets:end -->")
METHODS = ["identity", "affine-only", "shmoareg", "shmoareg-no-refine", "shmoareg-model-none",
           methods.MODEL_NONE_3X, "shmoareg-gpu",
           *(name + suffix for name in methods.OTHER_NETWORKS for suffix in ("", methods.NO_REFINE_SUFFIX)),
           "sitk-demons", "elastix", "ants-syn"]
SYNTHETIC_SEEDS = {"2mm": (1, 2), "1mm": (1,)}
SYNTHETIC_MAX_DISPLACEMENT_MM = 8.0
SYNTHETIC_CONTROL_SPACING_MM = 16.0
BOTH_WAYS_RESOLUTION = "1mm"  # the proxy inter-subject pair is also run the other way round at this resolution
REAL_DATA = HERE.parent.parent / "shared" / "data" / "oasis-trt-20"  # ../shared/data/README.md; never copied here
VALIDATION_SUBJECTS = tuple(range(11, 21))  # the team's validation split: never trained on


def ring(subjects: tuple[int, ...]) -> list[tuple[int, int]]:
    """``subjects`` as a ring of (fixed, moving) pairs: each subject to the next, the last to the first."""
    return [(fixed, subjects[(index + 1) % len(subjects)]) for index, fixed in enumerate(subjects)]


REAL_PAIRS = ring(VALIDATION_SUBJECTS)  # 11->12, 12->13, ..., 19->20, 20->11
CORTICAL = (1000, 3000)  # DKT31 cortical labels: 1000s left, 2000s right; the subcortical ones lie below
REAL, PROXY = "real-brain", "proxy"
GROUPS = {"real": REAL, "proxy": PROXY}
# Issue 23: every target is judged on the real-brain group.
MAX_FOLDING_PERCENT = 0.01
GPU_SECONDS = 2.0
NETWORK_GAIN_SHARE = 2 / 3  # the network alone recovers this share of --model none's Dice gain over the affine
TIME_RATIO = 0.65  # the default takes at most this share of --model none's wall time
MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
json.dump({"seconds": time.perf_counter() - start, "peak_memory_mb": usage.ru_maxrss / 1024,
           "cpu_seconds": usage.ru_utime + usage.ru_stime, "returncode": os.waitstatus_to_exitcode(status)},
          open(sys.argv[1], "w"))
"""


@dataclasses.dataclass
class Pair:
    """Paths of one benchmark pair: images, label maps on their own grids, fixed brain mask, and the labels
    scored (the proxy tissue classes unless given)."""

    name: str
    kind: str  # "real-brain", "inter-subject" (proxy labels) or "synthetic"
    resolution: str  # "1mm" or "2mm"
    fixed: Path
    moving: Path
    fixed_labels: Path
    moving_labels: Path
    fixed_mask: Path
    labels: list[int] = dataclasses.field(default_factory=lambda: list(range(1, TISSUE_CLASSES + 1)))

    @property
    def group(self) -> str:
        """The pair group its numbers are averaged in: the real brains, or the proxy pairs by kind and resolution."""
        return REAL if self.kind == REAL else f"{PROXY} {self.kind} {self.resolution}"


def label_values(path: Path) -> set[int]:
    """The nonzero values of a label map."""
    return {int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkInt32)))} - {0}


def real_pair_name(fixed: int, moving: int) -> str:
    """The name of a real-brain pair: ``oasis-<fixed>-<moving>``."""
    return f"oasis-{fixed}-{moving}"


def subject_files(subject: int) -> tuple[Path, Path]:
    """The T1 scan and the manual label map of one OASIS-TRT-20 subject in ``REAL_DATA``."""
    folder = REAL_DATA / f"{subject:02d}"
    return folder / "t1_brain.nii.gz", folder / "labels.nii.gz"


def real_pair(fixed: int, moving: int) -> Pair:
    """One real-brain pair, files used in place; the fixed brain mask (T1 > 0) is written under ``WORK/pairs``."""
    (fixed_scan, fixed_labels), (moving_scan, moving_labels) = subject_files(fixed), subject_files(moving)
    folder = WORK / "pairs" / real_pair_name(fixed, moving)
    folder.mkdir(parents=True, exist_ok=True)
    mask = folder / "fixed_mask.nii.gz"
    if not mask.exists():
        sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(fixed_scan)) > 0, sitk.sitkUInt8), str(mask))
    labels = sorted(label_values(fixed_labels) & label_values(moving_labels))
    return Pair(folder.name, REAL, "1mm", fixed_scan, moving_scan, fixed_labels, moving_labels, mask, labels)


def real_pairs() -> tuple[list[Pair], Optional[str]]:
    """The real-brain group (``REAL_PAIRS`` of ``REAL_DATA``), and why it is missing if it is."""
    absent = [path for subject in VALIDATION_SUBJECTS for path in subject_files(subject) if not path.is_file()]
    if absent:
        return [], f"real-brain pairs left out: {absent[0]} is missing (../shared/data is not here)"
    return [real_pair(fixed, moving) for fixed, moving in REAL_PAIRS], None


def group_dice(dice: dict[int, float]) -> dict[str, float]:
    """Mean Dice over all labels, over the DKT31 cortical ones and over the subcortical ones (nan without any)."""
    cortical = {label: value for label, value in dice.items() if CORTICAL[0] <= label < CORTICAL[1]}
    subcortical = {label: value for label, value in dice.items() if label < CORTICAL[0]}
    return {"mean_dice": mean_dice(dice), "mean_dice_cortical": mean_dice(cortical),
            "mean_dice_subcortical": mean_dice(subcortical)}


def write_pair(name: str, kind: str, resolution: str, fixed: sitk.Image, moving: sitk.Image,
               fixed_labels: sitk.Image, moving_labels: sitk.Image) -> Pair:
    """Write one pair under ``WORK/pairs/<name>``."""
    folder = WORK / "pairs" / name
    folder.mkdir(parents=True, exist_ok=True)
    pair = Pair(name, kind, resolution, folder / "fixed.nii.gz", folder / "moving.nii.gz",
                folder / "fixed_labels.nii.gz", folder / "moving_labels.nii.gz", folder / "fixed_mask.nii.gz")
    for image, path in ((fixed, pair.fixed), (moving, pair.moving), (fixed_labels, pair.fixed_labels),
                        (moving_labels, pair.moving_labels), (brain_mask(fixed), pair.fixed_mask)):
        sitk.WriteImage(image, str(path))
    return pair


def _tensor(image: sitk.Image) -> torch.Tensor:
    """``(1, 1, Z, Y, X)`` tensor of an image's voxels."""
    return torch.from_numpy(sitk.GetArrayFromImage(image))[None, None]


def _image_like(array: torch.Tensor, reference: sitk.Image) -> sitk.Image:
    """Image of a ``(1, 1, Z, Y, X)`` tensor with the reference's geometry."""
    image = sitk.GetImageFromArray(array[0, 0].numpy())
    image.CopyInformation(reference)
    return image


def synthetic_pair(colin: sitk.Image, colin_labels: sitk.Image, seed: int, resolution: str) -> Pair:
    """Colin27 (fixed) and Colin27 resampled at ``p + u(p)`` for a seeded diffeomorphic ``u`` (moving)."""
    shape = colin.GetSize()[::-1]
    spacing = colin.GetSpacing()[0]
    field = random_smooth_field(shape, SYNTHETIC_MAX_DISPLACEMENT_MM / spacing, seed=seed,
                                control_spacing=SYNTHETIC_CONTROL_SPACING_MM / spacing)
    moving = warp(_tensor(colin).float(), field, padding_mode="zeros").clamp(0, 255).round().to(torch.uint8)
    moving_labels = warp_labels(_tensor(colin_labels).long(), field, method="nearest").to(torch.int16)
    return write_pair(f"colin-synth-{seed}-{resolution}", "synthetic", resolution, colin, _image_like(moving, colin),
                      colin_labels, _image_like(moving_labels, colin))


def pairs_at(resolution: str, mni: sitk.Image, colin: sitk.Image) -> list[Pair]:
    """The inter-subject pair(s) and the seeded synthetic-warp pairs of one resolution."""
    mni_labels, colin_labels = tissue_labels(mni), tissue_labels(colin)
    pairs = [write_pair(f"mni-colin-{resolution}", "inter-subject", resolution, mni, colin, mni_labels, colin_labels)]
    if resolution == BOTH_WAYS_RESOLUTION:
        pairs.append(write_pair(f"colin-mni-{resolution}", "inter-subject", resolution, colin, mni, colin_labels,
                                mni_labels))
    return pairs + [synthetic_pair(colin, colin_labels, seed, resolution) for seed in SYNTHETIC_SEEDS[resolution]]


def make_pairs(groups: list[str]) -> tuple[list[Pair], list[str]]:
    """The pairs of ``groups`` (real-brain first), and why any of them are missing."""
    pairs, missing = [], []
    if REAL in groups:
        real, reason = real_pairs()
        pairs += real
        missing += [reason] if reason else []
    if PROXY in groups:
        read = lambda path: sitk.ReadImage(str(path))  # noqa: E731
        pairs += pairs_at("2mm", read(SAMPLE_PAIR["fixed"]), read(SAMPLE_PAIR["moving"]))
        try:
            brains = sources.public_brains(SOURCES_CACHE)
            pairs += pairs_at("1mm", read(brains["mni152"]), read(brains["colin27"]))
        except sources.SourceUnavailable as error:
            missing.append(f"1 mm proxy pairs left out: {error}")
    return pairs, missing


def child_environment(threads: int = methods.THREADS) -> dict[str, str]:
    """Environment of the method processes: the same thread count for torch, OpenMP and ITK."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads)}


def run_timed(command: list[str], folder: Path, threads: int = methods.THREADS) -> dict:
    """Run a command through the small ``MEASURE`` launcher on ``threads`` threads: wall seconds, CPU seconds (user
    and system, all threads), exit code, peak RSS (MB).

    The launcher, not this process, forks the method: on Linux a child's ``ru_maxrss`` starts at
    the RSS of the process it was forked from, and this one holds torch and the scoring arrays.
    """
    timing = folder / "timing.json"
    with open(folder / "log.txt", "w") as log:
        subprocess.run([sys.executable, "-S", "-c", MEASURE, str(timing), *command], stdout=log,
                       stderr=subprocess.STDOUT, env=child_environment(threads), check=True)
    measured = json.loads(timing.read_text())
    return {"seconds": round(measured["seconds"], 2), "cpu_seconds": round(measured["cpu_seconds"], 2),
            "peak_memory_mb": round(measured["peak_memory_mb"], 1), "returncode": measured["returncode"]}


Box = tuple[slice, slice, slice]


def label_boxes(labels: np.ndarray) -> dict[int, Box]:
    """The bounding box (``(Z, Y, X)`` slices) of every nonzero label of a label map, in one pass over it."""
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.ComputePerimeterOff()
    shapes.Execute(sitk.GetImageFromArray(labels))
    boxes = {}
    for label in shapes.GetLabels():
        x, y, z, size_x, size_y, size_z = shapes.GetBoundingBox(label)
        boxes[label] = (slice(z, z + size_z), slice(y, y + size_y), slice(x, x + size_x))
    return boxes


def _union(boxes: list[Box]) -> Box:
    """The smallest box holding every one of ``boxes``."""
    return tuple(slice(min(box[axis].start for box in boxes), max(box[axis].stop for box in boxes))
                 for axis in range(3))


def hd95_in_boxes(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float],
                  labels: list[int]) -> dict[int, float]:
    """``hd95_per_label``, each label computed on its bounding box in either map: the same numbers (it crops to
    that box itself) without two passes over the whole volume per label (~100 labels at 1 mm: 4.0 s, not 10.6 s)."""
    boxes = label_boxes(reference), label_boxes(prediction)
    distances = {}
    for label in labels:
        found = [by_label[label] for by_label in boxes if label in by_label]
        if found:
            box = _union(found)
            distances.update(hd95_per_label(reference[box], prediction[box], spacing, [label]))
    return distances


def score(pair: Pair, transform: sitk.Transform) -> dict:
    """Dice and HD95 per label of ``pair.labels`` and their means (all, cortical, subcortical), and Jacobian
    statistics over the fixed brain mask."""
    fixed_labels = sitk.ReadImage(str(pair.fixed_labels), sitk.sitkInt32)
    field = sampled_field(transform, fixed_labels)
    field_array = sitk.GetArrayFromImage(field)
    warped = sitk.Resample(sitk.ReadImage(str(pair.moving_labels), sitk.sitkInt32), fixed_labels,
                           sitk.DisplacementFieldTransform(sitk.Image(field)), sitk.sitkNearestNeighbor, 0)
    reference, prediction = sitk.GetArrayFromImage(fixed_labels), sitk.GetArrayFromImage(warped)
    dice = dice_per_label(reference, prediction, pair.labels)
    hd95 = hd95_in_boxes(reference, prediction, fixed_labels.GetSpacing(), pair.labels)
    jacobian = sitk.GetArrayFromImage(jacobian_image(field_array, Grid.of(fixed_labels)))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_mask))).astype(bool)
    return {"dice": dice, **group_dice(dice), "hd95_mm": hd95,
            "mean_hd95_mm": float(np.nanmean(list(hd95.values()))), **jacobian_statistics(jacobian, mask)}


def timed_score(pair: Pair, transform: sitk.Transform) -> dict:
    """:func:`score` and the seconds it took (``score_seconds``; not part of the method's time)."""
    start = time.perf_counter()
    return {**score(pair, transform), "score_seconds": round(time.perf_counter() - start, 2)}


def run_folder(pair: Pair, method: str) -> Path:
    """Where ``method``'s run on ``pair`` leaves its files."""
    return WORK / "runs" / pair.name / method


def evaluate(method: str, pair: Pair, repeats: int = 1) -> dict:
    """Run one method on one pair ``repeats`` times and score the last run; seconds is the median run.

    A failure or an unavailable method is recorded instead.
    """
    reason = methods.unavailable(method)
    if reason:
        return {"status": "not available", "reason": reason}
    if method == "identity":
        identity = sitk.Transform(3, sitk.sitkIdentity)
        return {"status": "ok", "seconds": 0.0, "peak_memory_mb": None, **timed_score(pair, identity)}
    output = run_folder(pair, method)
    runs = []
    for _ in range(repeats):
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        command = methods.command(method, pair.fixed, pair.moving, output)
        runs.append(run_timed(command, output))
        if runs[-1]["returncode"] != 0:
            tail = (output / "log.txt").read_text()[-500:]
            return {"status": "failed", "command": command, **runs[-1], "log_tail": tail}
    timing = {"seconds": float(np.median([run["seconds"] for run in runs])),
              "seconds_per_run": [run["seconds"] for run in runs],
              "peak_memory_mb": max(run["peak_memory_mb"] for run in runs), "returncode": 0}
    result = {"status": "ok", "command": command, **timing, **timed_score(pair, methods.load_transform(method, output))}
    return {**result, **engine_details(output)}


def engine_details(output: Path) -> dict:
    """Settings and stage timings from a ``shmoareg register`` summary.json, when there is one."""
    summary = output / "summary.json"
    if not summary.exists():
        return {}
    content = json.loads(summary.read_text())
    return {"engine": {key: content.get(key) for key in ("method", "network_grid", "seconds", "threads",
                                                          "network_share", "network_prediction")}}


def machine() -> dict:
    """What the numbers were measured on, including the load when the run started."""
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "simpleitk": sitk.Version.VersionString(), "cpu_count": os.cpu_count(),
            "threads_per_method": methods.THREADS, "load_average_at_start": os.getloadavg()}


def _number(value: float | None, digits: int) -> str:
    """A table cell: rounded number, or a dash."""
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _share(engine: dict) -> str:
    """The network share, marked when the refinement rejected the network's prediction (README)."""
    rejected = " (prediction rejected)" if engine.get("network_prediction") == "rejected" else ""
    return _number(engine.get("network_share"), 2) + rejected


def _family(group: Optional[str]) -> str:
    """``REAL`` for the real-brain group, ``PROXY`` for every proxy group."""
    return REAL if group == REAL else PROXY


def _real_first(groups: list[str]) -> list[str]:
    """Pair groups with the real-brain group first, the others in their order."""
    return sorted(groups, key=lambda group: group != REAL)


DICE_COLUMNS = {REAL: ("cortical Dice", "subcortical Dice"), PROXY: ("Dice CSF / GM / WM",)}
RUN_COLUMNS = ("mean HD95 (mm)", "SDlogJ", "J<=0 (%)", "seconds", "peak MB", "network share", "load after")


def _row(cells: list[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _header(columns: list[str]) -> list[str]:
    """A markdown table's header and rule."""
    return [_row(columns), "|" + " --- |" * len(columns)]


def _dice_cells(result: dict, family: str) -> list[str]:
    """The Dice cells after the mean: cortical and subcortical on the real brains, per class on the proxy pairs."""
    if family == REAL:
        return [_number(result["mean_dice_cortical"], 3), _number(result["mean_dice_subcortical"], 3)]
    return [" / ".join(_number(value, 3) for value in result["dice"].values())]


def _run_cells(result: dict) -> list[str]:
    """The cells of ``RUN_COLUMNS`` for one run."""
    runs = len(result.get("seconds_per_run", []))
    seconds = _number(result["seconds"], 1) + (f" (median of {runs})" if runs > 1 else "")
    return [_number(result["mean_hd95_mm"], 2), _number(result["sdlogj"], 3),
            _number(100 * result["fraction_nonpositive"], 4), seconds, _number(result["peak_memory_mb"], 0),
            _share(result.get("engine", {})), _number(result.get("load_average"), 2)]


def _pair_row(pair: str, method: str, result: dict, family: str) -> str:
    """One row of a pair table; a method that did not run says why."""
    if result["status"] != "ok":
        blank = [""] * (len(DICE_COLUMNS[family]) + len(RUN_COLUMNS))
        return _row([pair, method, f"{result['status']}: {result.get('reason', 'see JSON')}", *blank])
    return _row([pair, method, _number(result["mean_dice"], 3), *_dice_cells(result, family), *_run_cells(result)])


def table(results: dict, groups: dict[str, str]) -> str:
    """Markdown tables, one row per pair and method: the real-brain pairs, then the proxy pairs."""
    tables = []
    for family in (REAL, PROXY):
        names = [name for name in results if _family(groups.get(name)) == family]
        if names:
            rows = _header(["pair", "method", "mean Dice", *DICE_COLUMNS[family], *RUN_COLUMNS])
            rows += [_pair_row(name, method, result, family) for name in names
                     for method, result in results[name].items()]
            tables.append("\n".join(rows))
    return "\n\n".join(tables)


SUMMARY_KEYS = ("mean_dice", "mean_dice_cortical", "mean_dice_subcortical", "mean_hd95_mm", "sdlogj", "seconds")


def group_members(groups: dict[str, str]) -> dict[str, list[str]]:
    """Pair group -> its pair names, from pair name -> group."""
    members: dict[str, list[str]] = {}
    for pair, group in groups.items():
        members.setdefault(group, []).append(pair)
    return members


def _method_order(method: str) -> int:
    """Sort key: the place of a method in ``METHODS`` (one no longer there last)."""
    return METHODS.index(method) if method in METHODS else len(METHODS)


def group_means(results: dict, groups: dict[str, str]) -> dict[str, dict[str, dict]]:
    """Per pair group and method, the means over the group's pairs run of ``SUMMARY_KEYS``, the largest J<=0
    fraction, the number of pairs run (``pairs``) and in the group (``group_pairs``); only methods that ran on every
    pair of the group that was run."""
    means: dict[str, dict[str, dict]] = {}
    for group, pairs in group_members(groups).items():
        run = [pair for pair in pairs if pair in results]
        for method in sorted({method for pair in run for method in results[pair]}, key=_method_order):
            runs = [results[pair].get(method) for pair in run]
            if not all(result and result["status"] == "ok" for result in runs):
                continue
            summary = {key: finite_mean([result.get(key, np.nan) for result in runs]) for key in SUMMARY_KEYS}
            summary["fraction_nonpositive_max"] = max(result["fraction_nonpositive"] for result in runs)
            means.setdefault(group, {})[method] = {**summary, "pairs": len(run), "group_pairs": len(pairs)}
    return means


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values; nan when there are none (a proxy pair has no cortical labels)."""
    finite = [value for value in values if value is not None and np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def summary_table(means: dict[str, dict[str, dict]]) -> str:
    """Markdown table of :func:`group_means` (pairs: run / in the group), the real-brain group first."""
    rows = _header(["group", "method", "pairs", "mean Dice", "cortical", "subcortical", "mean HD95 (mm)", "SDlogJ",
                    "max J<=0 (%)", "mean seconds"])
    for group in _real_first(list(means)):
        for method, m in means[group].items():
            rows.append(_row([group, method, f"{m['pairs']}/{m['group_pairs']}", _number(m["mean_dice"], 3),
                              _number(m["mean_dice_cortical"], 3), _number(m["mean_dice_subcortical"], 3),
                              _number(m["mean_hd95_mm"], 2), _number(m["sdlogj"], 3),
                              _number(100 * m["fraction_nonpositive_max"], 4), _number(m["seconds"], 1)]))
    return "\n".join(rows)


def _verdict(holds: Optional[bool]) -> str:
    return "not measured" if holds is None else ("**holds**" if holds else "**does not hold**")


DEFAULT, NETWORK_ALONE, NO_NETWORK, AFFINE = "shmoareg", "shmoareg-no-refine", "shmoareg-model-none", "affine-only"


def _complete(by_method: dict[str, dict]) -> dict[str, dict]:
    """The methods of one group's means that ran on every pair of the group: the only ones a target is judged on."""
    return {method: m for method, m in by_method.items() if m["pairs"] == m["group_pairs"]}


def _judge(group: dict[str, dict], method: str, other: str, key: str, holds: Callable[[float, float], bool],
           digits: int) -> list[str]:
    """Verdict and margin of ``holds(method's mean, other's mean)`` of ``key`` over a group."""
    if method not in group or other not in group:
        return [_verdict(None), f"needs `{method}` and `{other}` on every pair of the group"]
    a, b = group[method][key], group[other][key]
    return [_verdict(holds(a, b)), f"{a:.{digits}f} vs {b:.{digits}f}"]


def _time_target(real: dict[str, dict]) -> list[str]:
    """(a) The default's mean wall time against ``--model none``'s."""
    cells = _judge(real, DEFAULT, NO_NETWORK, "seconds", lambda a, b: a <= TIME_RATIO * b, 1)
    if DEFAULT in real and NO_NETWORK in real:
        cells[1] += f" s (x{real[DEFAULT]['seconds'] / real[NO_NETWORK]['seconds']:.2f})"
    return [f"default <= {TIME_RATIO} x `--model none` wall time", *cells]


def _gain_target(real: dict[str, dict]) -> list[str]:
    """(b) The share of ``--model none``'s Dice gain over the affine that the network alone recovers."""
    name = f"network alone >= {NETWORK_GAIN_SHARE:.2f} of `--model none`'s Dice gain over affine"
    if not all(method in real for method in (AFFINE, NETWORK_ALONE, NO_NETWORK)):
        return [name, _verdict(None), f"needs `{AFFINE}`, `{NETWORK_ALONE}` and `{NO_NETWORK}` on every pair"]
    affine, alone, none = (real[method]["mean_dice"] for method in (AFFINE, NETWORK_ALONE, NO_NETWORK))
    share = (alone - affine) / max(none - affine, 1e-9)
    return [name, _verdict(share >= NETWORK_GAIN_SHARE),
            f"affine {affine:.3f}, network alone {alone:.3f}, `--model none` {none:.3f}: share {share:.2f}"]


def _folding_target(real: dict[str, dict]) -> list[str]:
    """(c) The default's largest share of folded voxels over the group's pairs."""
    name = f"default: J <= 0 under {MAX_FOLDING_PERCENT} % on every pair"
    if DEFAULT not in real:
        return [name, _verdict(None), f"needs `{DEFAULT}` on every pair"]
    folding = 100 * real[DEFAULT]["fraction_nonpositive_max"]
    return [name, _verdict(folding < MAX_FOLDING_PERCENT), f"largest {folding:.4f} %"]


def _gpu_target(real: dict[str, dict]) -> list[str]:
    """The default on a GPU, end to end."""
    gpu = real.get("shmoareg-gpu")
    detail = f"{gpu['seconds']:.2f} s" if gpu else methods.unavailable("shmoareg-gpu") or "no GPU run"
    return [f"GPU: under {GPU_SECONDS:.0f} s per pair end to end",
            _verdict(None if gpu is None else gpu["seconds"] < GPU_SECONDS), detail]


def targets(means: dict[str, dict[str, dict]]) -> str:
    """Markdown table of the targets, judged on the real-brain group's means over all its pairs (the default's
    Dice against ``--model none``'s on every group, the proxy groups as secondary rows), with the margins."""
    complete = {group: _complete(by_method) for group, by_method in means.items()}
    real = complete.get(REAL, {})
    rows = [[f"{group}: default's Dice >= `--model none`'s",
             *_judge(complete[group], DEFAULT, NO_NETWORK, "mean_dice", lambda a, b: a >= b, 3)]
            for group in _real_first(list(complete))]
    rows += [_time_target(real), _gain_target(real), _folding_target(real),
             ["mean Dice >= ANTs SyN", *_judge(real, DEFAULT, "ants-syn", "mean_dice", lambda a, b: a >= b, 3)],
             ["mean wall seconds < elastix affine + B-spline",
              *_judge(real, DEFAULT, "elastix", "seconds", lambda a, b: a < b, 1)],
             _gpu_target(real)]
    header = _header(["target", "verdict", "by how much (real-brain group means unless said)"])
    return "\n".join(header + [_row(cells) for cells in rows])


def write_between(markers: tuple[str, str], markdown: str) -> None:
    """Replace the text between two markers of RESULTS.md (or append the markers and the text)."""
    begin, end = markers
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"{begin}\n{markdown}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text)


def parse_arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                        help="pair groups to run: real (OASIS-TRT-20 subjects 11-20, manual labels; the decision "
                             "metric) and proxy (MNI152/Colin27 at 1 and 2 mm) (default: both)")
    parser.add_argument("--pairs", nargs="+", help="pair names of those groups to run (default: all of them)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per method and pair; `seconds` is their median (default 1)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other results of results/compare.json and replace only those run now")
    return parser.parse_args()


def chosen_pairs(pairs: list[Pair], names: Optional[list[str]], missing: list[str]) -> list[Pair]:
    """The pairs named on the command line (all without names); a name that is not a pair of the groups stops."""
    unknown = sorted(set(names or []) - {pair.name for pair in pairs})
    if unknown:
        raise SystemExit(f"no pair {', '.join(unknown)} in the groups run; " + "; ".join(missing or ["see --groups"]))
    return [pair for pair in pairs if not names or pair.name in names]


def describe(pair: Pair) -> dict:
    """A pair's entry under ``pairs`` in results/compare.json."""
    return {"kind": pair.kind, "resolution": pair.resolution, "group": pair.group, "fixed": str(pair.fixed),
            "moving": str(pair.moving), "labels": pair.labels}


def real_group_definition() -> dict:
    """The real-brain group as results/compare.json records it: data, pairs and label sets."""
    return {"data": str(REAL_DATA), "pairs": {real_pair_name(*pair): pair for pair in REAL_PAIRS},
            "cortical_labels": [CORTICAL[0], CORTICAL[1] - 1], "subcortical_labels": [1, CORTICAL[0] - 1]}


def run_pairs(report: dict, pairs: list[Pair], chosen_methods: list[str], repeats: int, started: str) -> None:
    """Every method on every pair, into ``report["results"]``, one printed line each; the report is written after
    every run, so a stopped benchmark keeps what it measured."""
    for pair in pairs:
        by_method = report["results"].setdefault(pair.name, {})
        for method in chosen_methods:
            result = {**evaluate(method, pair, repeats), "load_average": os.getloadavg()[0], "measured": started}
            by_method[method] = result
            print(f"{pair.name:20s} {method:24s} {result['status']:14s} "
                  f"dice={result.get('mean_dice', float('nan')):.3f} s={result.get('seconds', float('nan'))} "
                  f"scoring s={result.get('score_seconds', float('nan'))}", flush=True)
            write_report(report)


def write_report(report: dict) -> None:
    """results/compare.json with the group means, and the generated tables of RESULTS.md."""
    groups = {name: info.get("group") or f"{PROXY} {info['kind']} {info['resolution']}"
              for name, info in report["pairs"].items()}
    report["group_means"] = group_means(report["results"], groups)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=2, default=str))
    write_between(TABLE_MARKERS, summary_table(report["group_means"]) + "\n\n" + table(report["results"], groups))
    write_between(TARGET_MARKERS, targets(report["group_means"]))


def main() -> None:
    """Build the pairs, run every method on every pair, write the JSON and the tables."""
    args = parse_arguments()
    start = time.perf_counter()
    pairs, missing = make_pairs([GROUPS[name] for name in args.groups])
    for reason in missing:
        print(reason, flush=True)
    chosen = chosen_pairs(pairs, args.pairs, missing)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = json.loads(RESULTS_JSON.read_text()) if args.update and RESULTS_JSON.exists() else {"results": {}}
    report.update(machine=machine(), started=report.get("started", started), missing=missing,
                  pairs={**report.get("pairs", {}), **{pair.name: describe(pair) for pair in pairs}})
    if any(pair.kind == REAL for pair in pairs):
        report["real_brain_group"] = real_group_definition()
    run_pairs(report, chosen, args.methods, args.repeats, started)
    report["total_seconds" if not args.update else "update_seconds"] = round(time.perf_counter() - start, 1)
    write_report(report)  # once more, with the total seconds


if __name__ == "__main__":
    main()
