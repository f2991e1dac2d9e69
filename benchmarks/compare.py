"""Side-by-side registration benchmark: every available method on the same pairs, scored the same way.

Run: ``.venv/bin/python benchmarks/compare.py`` (options: ``--methods``, ``--pairs``).
Writes ``benchmarks/results/compare.json``, and the pair table and the issue-5 target table
between their markers in ``benchmarks/RESULTS.md``; work files go to ``benchmarks/out/``.

The decision metric is the **real-brain group** (``--groups real``): OASIS-TRT-20 subjects 11-20 of Mindboggle-101
(``../shared/data/oasis-trt-20``, the team's validation subjects, never trained on), T1 scans skull-stripped at
1 mm, each in its own native space (so the affine is part of the task), ten fixed pairs of different subjects
(``REAL_PAIRS``) scored on their *manual* labels: Dice per label over every label both subjects have, reported as
the mean over all of them, over the DKT31 cortical labels (1000-2999) and over the subcortical ones (below 1000).
Without ``../shared/data`` the group is left out with the reason printed.

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
the fixed image's brain mask.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
REAL_DATA = HERE.parent.parent / "shared" / "data" / "oasis-trt-20"
REAL_PAIRS = [(fixed, 11 + (fixed - 10) % 10) for fixed in range(11, 21)]  # 11->12, ..., 19->20, 20->11
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
           "returncode": os.waitstatus_to_exitcode(status)}, open(sys.argv[1], "w"))
"""


@dataclass
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


def real_pairs() -> tuple[list[Pair], Optional[str]]:
    """The real-brain group (``REAL_PAIRS`` of ``REAL_DATA``), and why it is missing if it is."""
    folder = lambda subject: REAL_DATA / f"{subject:02d}"  # noqa: E731
    missing = [str(folder(s)) for s in range(11, 21) if not (folder(s) / "labels.nii.gz").is_file()]
    if missing:
        return [], f"real-brain pairs left out: {missing[0]} has no labels.nii.gz (../shared/data is not here)"
    pairs = []
    for fixed, moving in REAL_PAIRS:
        work = WORK / "pairs" / f"oasis-{fixed}-{moving}"
        work.mkdir(parents=True, exist_ok=True)
        mask = work / "fixed_mask.nii.gz"
        if not mask.exists():
            sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(folder(fixed) / "t1_brain.nii.gz")) > 0, sitk.sitkUInt8),
                            str(mask))
        labels = folder(fixed) / "labels.nii.gz", folder(moving) / "labels.nii.gz"
        pairs.append(Pair(work.name, REAL, "1mm", folder(fixed) / "t1_brain.nii.gz", folder(moving) / "t1_brain.nii.gz",
                          *labels, mask, sorted(label_values(labels[0]) & label_values(labels[1]))))
    return pairs, None


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
    pair = Pair(name, kind, resolution, folder / "fixed.nii.gz", folder / "moving.nii.gz", folder / "fixed_labels.nii.gz",
                folder / "moving_labels.nii.gz", folder / "fixed_mask.nii.gz")
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
    if resolution == TARGET_RESOLUTION:
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


def child_environment() -> dict[str, str]:
    """Environment of the method processes: the same thread count for torch, OpenMP and ITK."""
    threads = str(methods.THREADS)
    return {**os.environ, "OMP_NUM_THREADS": threads, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": threads}


def run_timed(command: list[str], folder: Path) -> dict:
    """Run a command through the small ``MEASURE`` launcher: wall seconds, exit code, peak RSS (MB).

    The launcher, not this process, forks the method: on Linux a child's ``ru_maxrss`` starts at
    the RSS of the process it was forked from, and this one holds torch and the scoring arrays.
    """
    timing = folder / "timing.json"
    with open(folder / "log.txt", "w") as log:
        subprocess.run([sys.executable, "-S", "-c", MEASURE, str(timing), *command], stdout=log,
                       stderr=subprocess.STDOUT, env=child_environment(), check=True)
    measured = json.loads(timing.read_text())
    return {"seconds": round(measured["seconds"], 2), "peak_memory_mb": round(measured["peak_memory_mb"], 1),
            "returncode": measured["returncode"]}


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
    hd95 = hd95_per_label(reference, prediction, fixed_labels.GetSpacing(), pair.labels)
    jacobian = sitk.GetArrayFromImage(jacobian_image(field_array, Grid.of(fixed_labels)))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_mask))).astype(bool)
    return {"dice": dice, **group_dice(dice), "hd95_mm": hd95,
            "mean_hd95_mm": float(np.nanmean(list(hd95.values()))), **jacobian_statistics(jacobian, mask)}


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
        return {"status": "ok", "seconds": 0.0, "peak_memory_mb": None, **score(pair, identity)}
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
    result = {"status": "ok", "command": command, **timing, **score(pair, methods.load_transform(method, output))}
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


def _ordered(results: dict, kinds: dict[str, str]) -> list[str]:
    """Pair names with the real-brain group first, otherwise as run."""
    return sorted(results, key=lambda name: kinds.get(name) != REAL)


def _dice_detail(result: dict) -> str:
    """Cortical / subcortical mean Dice of a real-brain pair, or the per-class Dice of a proxy pair."""
    if not np.isnan(result.get("mean_dice_cortical", np.nan)):
        return f"{_number(result['mean_dice_cortical'], 3)} / {_number(result['mean_dice_subcortical'], 3)}"
    return "/".join(_number(value, 3) for value in result["dice"].values())


def table(results: dict, kinds: dict[str, str]) -> str:
    """Markdown table: one row per pair and method, the real-brain group first."""
    rows = ["| pair | method | mean Dice | Dice cortical / subcortical (proxy: CSF/GM/WM) | mean HD95 (mm) | SDlogJ "
            "| J<=0 (%) | seconds | peak MB | network share | load after |", "|" + " --- |" * 11]
    for pair in _ordered(results, kinds):
        for method, result in results[pair].items():
            if result["status"] != "ok":
                rows.append(f"| {pair} | {method} | {result['status']}: {result.get('reason', 'see JSON')} "
                            + "| " * 8 + "|")
                continue
            runs = len(result.get("seconds_per_run", []))
            seconds = _number(result["seconds"], 1) + (f" (median of {runs})" if runs > 1 else "")
            rows.append(
                f"| {pair} | {method} | {_number(result['mean_dice'], 3)} | {_dice_detail(result)} "
                f"| {_number(result['mean_hd95_mm'], 2)} | {_number(result['sdlogj'], 3)} "
                f"| {_number(100 * result['fraction_nonpositive'], 4)} | {seconds} "
                f"| {_number(result['peak_memory_mb'], 0)} "
                f"| {_share(result.get('engine', {}))} "
                f"| {_number(result.get('load_average'), 2)} |")
    return "\n".join(rows)


SUMMARY_KEYS = ("mean_dice", "mean_dice_cortical", "mean_dice_subcortical", "mean_hd95_mm", "sdlogj", "seconds")


def group_means(results: dict, groups: dict[str, str]) -> dict[str, dict[str, dict]]:
    """Per pair group and method, the means over the group's pairs of ``SUMMARY_KEYS``, the largest J<=0
    fraction and the number of pairs; only methods that ran on every pair of the group."""
    members: dict[str, list[str]] = {}
    for pair, group in groups.items():
        if pair in results:
            members.setdefault(group, []).append(pair)
    means: dict[str, dict[str, dict]] = {}
    for group, pairs in members.items():
        methods_run = {method for pair in pairs for method in results[pair]}
        for method in sorted(methods_run, key=METHODS.index):
            runs = [results[pair].get(method) for pair in pairs]
            if not all(run and run["status"] == "ok" for run in runs):
                continue
            summary = {key: _finite_mean([run.get(key, np.nan) for run in runs]) for key in SUMMARY_KEYS}
            summary["fraction_nonpositive_max"] = max(run["fraction_nonpositive"] for run in runs)
            means.setdefault(group, {})[method] = {**summary, "pairs": len(pairs)}
    return means


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values; nan when there are none (a proxy pair has no cortical labels)."""
    finite = [value for value in values if value is not None and np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def summary_table(means: dict[str, dict[str, dict]]) -> str:
    """Markdown table of :func:`group_means`, the real-brain group first."""
    rows = ["| group | method | pairs | mean Dice | cortical | subcortical | mean HD95 (mm) | SDlogJ | max J<=0 (%) "
            "| mean seconds |", "|" + " --- |" * 10]
    for group in sorted(means, key=lambda name: name != REAL):
        for method, m in means[group].items():
            rows.append(f"| {group} | {method} | {m['pairs']} | {_number(m['mean_dice'], 3)} "
                        f"| {_number(m['mean_dice_cortical'], 3)} | {_number(m['mean_dice_subcortical'], 3)} "
                        f"| {_number(m['mean_hd95_mm'], 2)} | {_number(m['sdlogj'], 3)} "
                        f"| {_number(100 * m['fraction_nonpositive_max'], 4)} | {_number(m['seconds'], 1)} |")
    return "\n".join(rows)


def _ok(results: dict, pair: str, method: str) -> Optional[dict]:
    result = results.get(pair, {}).get(method)
    return result if result and result["status"] == "ok" else None


def _verdict(holds: Optional[bool]) -> str:
    return "not measured" if holds is None else ("**holds**" if holds else "**does not hold**")


DEFAULT, NETWORK_ALONE, NO_NETWORK, AFFINE = "shmoareg", "shmoareg-no-refine", "shmoareg-model-none", "affine-only"


def targets(means: dict[str, dict[str, dict]]) -> str:
    """Markdown table of the targets, judged on the real-brain group's means (the default against
    ``--model none`` on every group), with the margins."""
    real = means.get(REAL, {})
    rows = ["| target | verdict | by how much (real-brain group means unless said) |", "| --- | --- | --- |"]

    def compare(method: str, other: str, key: str, holds, digits: int, group: dict = real) -> tuple[str, str]:
        if method not in group or other not in group:
            return _verdict(None), f"needs `{method}` and `{other}` on every real-brain pair"
        a, b = group[method][key], group[other][key]
        return _verdict(holds(a, b)), f"{a:.{digits}f} vs {b:.{digits}f}"

    for group in sorted(means, key=lambda name: name != REAL):
        verdict, detail = compare(DEFAULT, NO_NETWORK, "mean_dice", lambda a, b: a >= b, 3, means[group])
        rows.append(f"| {group}: default's Dice >= `--model none`'s | {verdict} | {detail} |")
    verdict, detail = compare(DEFAULT, NO_NETWORK, "seconds", lambda a, b: a <= TIME_RATIO * b, 1)
    if NO_NETWORK in real and DEFAULT in real:
        detail += f" s (x{real[DEFAULT]['seconds'] / real[NO_NETWORK]['seconds']:.2f})"
    rows.append(f"| default <= {TIME_RATIO} x `--model none` wall time | {verdict} | {detail} |")
    if all(name in real for name in (AFFINE, NETWORK_ALONE, NO_NETWORK)):
        affine = real[AFFINE]["mean_dice"]
        share = (real[NETWORK_ALONE]["mean_dice"] - affine) / max(real[NO_NETWORK]["mean_dice"] - affine, 1e-9)
        verdict = _verdict(share >= NETWORK_GAIN_SHARE)
        detail = (f"affine {affine:.3f}, network alone {real[NETWORK_ALONE]['mean_dice']:.3f}, `--model none` "
                  f"{real[NO_NETWORK]['mean_dice']:.3f}: share {share:.2f}")
    else:
        verdict, detail = _verdict(None), f"needs {AFFINE}, {NETWORK_ALONE} and {NO_NETWORK}"
    rows.append(f"| network alone >= {NETWORK_GAIN_SHARE:.2f} of `--model none`'s Dice gain over affine "
                f"| {verdict} | {detail} |")
    if DEFAULT in real:
        folding = 100 * real[DEFAULT]["fraction_nonpositive_max"]
        rows.append(f"| default: J <= 0 under {MAX_FOLDING_PERCENT} % on every pair "
                    f"| {_verdict(folding < MAX_FOLDING_PERCENT)} | largest {folding:.4f} % |")
    verdict, detail = compare(DEFAULT, "ants-syn", "mean_dice", lambda a, b: a >= b, 3)
    rows.append(f"| mean Dice >= ANTs SyN | {verdict} | {detail} |")
    verdict, detail = compare(DEFAULT, "elastix", "seconds", lambda a, b: a < b, 1)
    rows.append(f"| mean wall seconds < elastix affine + B-spline | {verdict} | {detail} |")
    gpu = real.get("shmoareg-gpu")
    detail = f"{gpu['seconds']:.2f} s" if gpu else methods.unavailable("shmoareg-gpu") or "no GPU run"
    rows.append(f"| GPU: under {GPU_SECONDS:.0f} s per pair end to end "
                f"| {_verdict(None if gpu is None else gpu['seconds'] < GPU_SECONDS)} | {detail} |")
    return "\n".join(rows)


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


def main() -> None:
    """Build the pairs, run every method on every pair, write the JSON and the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                        help="pair groups to run: real (OASIS-TRT-20 11-20, manual labels), proxy (default: both)")
    parser.add_argument("--pairs", nargs="+", help="pair names to run (default: all of the groups)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per method and pair; `seconds` is their median (default 1)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other results of results/compare.json and replace only those run now")
    args = parser.parse_args()
    start = time.perf_counter()
    pairs, missing = make_pairs([GROUPS[name] for name in args.groups])
    for reason in missing:
        print(reason, flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = json.loads(RESULTS_JSON.read_text()) if args.update and RESULTS_JSON.exists() else {"results": {}}
    described = {pair.name: {"kind": pair.kind, "resolution": pair.resolution, "group": pair.group,
                             "fixed": str(pair.fixed), "moving": str(pair.moving), "labels": pair.labels}
                 for pair in pairs}
    report.update(machine=machine(), started=report.get("started", started), missing=missing,
                  pairs={**report.get("pairs", {}), **described})
    for pair in (pair for pair in pairs if not args.pairs or pair.name in args.pairs):
        by_method = report["results"].setdefault(pair.name, {})
        for method in args.methods:
            result = {**evaluate(method, pair, args.repeats), "load_average": os.getloadavg()[0], "measured": started}
            by_method[method] = result
            print(f"{pair.name:20s} {method:24s} {result['status']:14s} "
                  f"dice={result.get('mean_dice', float('nan')):.3f} s={result.get('seconds', float('nan'))}",
                  flush=True)
    report["total_seconds" if not args.update else "update_seconds"] = round(time.perf_counter() - start, 1)
    groups = {name: info.get("group") or f"{PROXY} {info['kind']} {info['resolution']}"
              for name, info in report["pairs"].items()}
    report["group_means"] = group_means(report["results"], groups)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=2, default=str))
    kinds = {name: info["kind"] for name, info in report["pairs"].items()}
    write_between(TABLE_MARKERS, summary_table(report["group_means"]) + "\n\n" + table(report["results"], kinds))
    write_between(TARGET_MARKERS, targets(report["group_means"]))


if __name__ == "__main__":
    main()
