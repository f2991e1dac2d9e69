"""Side-by-side registration benchmark: every available method on the same pairs, scored the same way.

Run: ``.venv/bin/python benchmarks/compare.py`` (options: ``--methods``, ``--pairs``).
Writes ``benchmarks/results/compare.json``, and the pair table and the issue-5 target table
between their markers in ``benchmarks/RESULTS.md``; work files go to ``benchmarks/out/``.

Pairs, at 2 mm (the package's ``shmoareg/sample_data``) and at 1 mm (the same two brains at full resolution,
fetched once by ``sources.py`` from the nilearn wheel and Debian's mricron-data):

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
METHODS = ["identity", "affine-only", "shmoareg", "shmoareg-no-refine", "shmoareg-model-none", "shmoareg-gpu",
           *(name + suffix for name in methods.OTHER_NETWORKS for suffix in ("", methods.NO_REFINE_SUFFIX)),
           "sitk-demons", "elastix", "ants-syn"]
SYNTHETIC_SEEDS = {"2mm": (1, 2), "1mm": (1,)}
SYNTHETIC_MAX_DISPLACEMENT_MM = 8.0
SYNTHETIC_CONTROL_SPACING_MM = 16.0
# Issue 5, point 4: judged on the inter-subject pairs at 1 mm.
TARGET_RESOLUTION = "1mm"
MAX_FOLDING_PERCENT = 0.5
GPU_SECONDS = 2.0
NETWORK_GAIN_SHARE = 2 / 3  # issue 9: the network alone recovers this share of the default's gain over affine
TIME_RATIO = 0.65  # issue 9: the default takes at most this share of --model none's wall time
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
    """Paths of one benchmark pair: images, label maps on their own grids, fixed brain mask."""

    name: str
    kind: str  # "inter-subject" or "synthetic"
    resolution: str  # "1mm" or "2mm"
    fixed: Path
    moving: Path
    fixed_labels: Path
    moving_labels: Path
    fixed_mask: Path


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


def make_pairs() -> tuple[list[Pair], Optional[str]]:
    """Every benchmark pair, and why the 1 mm pairs are missing if they are."""
    read = lambda path: sitk.ReadImage(str(path))  # noqa: E731
    pairs = pairs_at("2mm", read(SAMPLE_PAIR["fixed"]), read(SAMPLE_PAIR["moving"]))
    missing = None
    try:
        brains = sources.public_brains(SOURCES_CACHE)
        pairs += pairs_at("1mm", read(brains["mni152"]), read(brains["colin27"]))
    except sources.SourceUnavailable as error:
        missing = str(error)
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
    """Dice, HD95 per label and their means, and Jacobian statistics over the fixed brain mask."""
    fixed_labels = sitk.ReadImage(str(pair.fixed_labels))
    field = sampled_field(transform, fixed_labels)
    field_array = sitk.GetArrayFromImage(field)
    warped = sitk.Resample(sitk.ReadImage(str(pair.moving_labels)), fixed_labels,
                           sitk.DisplacementFieldTransform(sitk.Image(field)), sitk.sitkNearestNeighbor, 0)
    reference, prediction = sitk.GetArrayFromImage(fixed_labels), sitk.GetArrayFromImage(warped)
    labels = list(range(1, TISSUE_CLASSES + 1))
    dice = dice_per_label(reference, prediction, labels)
    hd95 = hd95_per_label(reference, prediction, fixed_labels.GetSpacing(), labels)
    jacobian = sitk.GetArrayFromImage(jacobian_image(field_array, Grid.of(fixed_labels)))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_mask))).astype(bool)
    return {"dice": dice, "mean_dice": mean_dice(dice), "hd95_mm": hd95,
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


def table(results: dict) -> str:
    """Markdown table: one row per pair and method."""
    rows = ["| pair | method | mean Dice | Dice CSF/GM/WM | mean HD95 (mm) | SDlogJ | J<=0 (%) | seconds "
            "| peak MB | network share | load after |", "|" + " --- |" * 11]
    for pair, by_method in results.items():
        for method, result in by_method.items():
            if result["status"] != "ok":
                rows.append(f"| {pair} | {method} | {result['status']}: {result.get('reason', 'see JSON')} "
                            + "| " * 8 + "|")
                continue
            per_label = "/".join(_number(result["dice"][label], 3) for label in result["dice"])
            runs = len(result.get("seconds_per_run", []))
            seconds = _number(result["seconds"], 1) + (f" (median of {runs})" if runs > 1 else "")
            rows.append(
                f"| {pair} | {method} | {_number(result['mean_dice'], 3)} | {per_label} "
                f"| {_number(result['mean_hd95_mm'], 2)} | {_number(result['sdlogj'], 3)} "
                f"| {_number(100 * result['fraction_nonpositive'], 3)} | {seconds} "
                f"| {_number(result['peak_memory_mb'], 0)} "
                f"| {_share(result.get('engine', {}))} "
                f"| {_number(result.get('load_average'), 2)} |")
    return "\n".join(rows)


def _ok(results: dict, pair: str, method: str) -> Optional[dict]:
    result = results.get(pair, {}).get(method)
    return result if result and result["status"] == "ok" else None


def _verdict(holds: Optional[bool]) -> str:
    return "not measured" if holds is None else ("**holds**" if holds else "**does not hold**")


def target_pairs(pairs: list[Pair]) -> list[Pair]:
    """The pairs the targets are judged on: inter-subject at ``TARGET_RESOLUTION``."""
    return [pair for pair in pairs if pair.kind == "inter-subject" and pair.resolution == TARGET_RESOLUTION]


def targets(results: dict, pairs: list[Pair]) -> str:
    """Markdown table of the issue-5 and issue-9 targets on the 1 mm inter-subject pairs, with the margins."""
    names = [pair.name for pair in target_pairs(pairs)]
    ours = {name: _ok(results, name, "shmoareg") for name in names}
    rows = ["| target | verdict | by how much (per pair: ours against theirs) |", "| --- | --- | --- |"]

    def against(method: str, key: str, better, digits: int) -> tuple[Optional[bool], str]:
        measured = [(name, ours[name], _ok(results, name, method)) for name in names]
        measured = [(name, a, b) for name, a, b in measured if a and b]
        if not measured or len(measured) < len(names):
            return None, f"needs `shmoareg` and `{method}` on every 1 mm inter-subject pair"
        detail = "; ".join(f"{name}: {a[key]:.{digits}f} vs {b[key]:.{digits}f}" for name, a, b in measured)
        return better([a[key] for _, a, _ in measured], [b[key] for _, _, b in measured]), detail

    holds, detail = against("ants-syn", "mean_dice",
                            lambda a, b: float(np.mean(a)) >= float(np.mean(b)), 3)
    rows.append(f"| mean Dice >= ANTs SyN | {_verdict(holds)} | {detail} |")
    holds, detail = against("elastix", "seconds", lambda a, b: all(x < y for x, y in zip(a, b)), 1)
    rows.append(f"| wall seconds < elastix affine + B-spline, every pair | {_verdict(holds)} | {detail} |")
    folding = {name: 100 * ours[name]["fraction_nonpositive"] for name in names if ours[name]}
    holds = None if len(folding) < len(names) or not names else max(folding.values()) < MAX_FOLDING_PERCENT
    rows.append(f"| J <= 0 under {MAX_FOLDING_PERCENT} % | {_verdict(holds)} | "
                + ("; ".join(f"{name}: {value:.4f} %" for name, value in folding.items()) or "-") + " |")
    rows += network_targets(results, names)
    gpu = [_ok(results, name, "shmoareg-gpu") for name in names]
    holds = None if not all(gpu) or not names else all(r["seconds"] < GPU_SECONDS for r in gpu)
    detail = ("; ".join(f"{name}: {r['seconds']:.2f} s" for name, r in zip(names, gpu)) if all(gpu) and names
              else methods.unavailable("shmoareg-gpu") or "no GPU run")
    rows.append(f"| GPU: under {GPU_SECONDS:.0f} s per pair end to end | {_verdict(holds)} | {detail} |")
    return "\n".join(rows)


def network_targets(results: dict, names: list[str]) -> list[str]:
    """The issue-9 target rows: the network alone against the default's gain, and the default's time."""
    runs = {name: {method: _ok(results, name, method) for method in
                   ("affine-only", "shmoareg-no-refine", "shmoareg", "shmoareg-model-none")} for name in names}
    complete = bool(names) and all(all(by_method.values()) for by_method in runs.values())
    if not complete:
        missing = "needs affine-only, shmoareg-no-refine, shmoareg and shmoareg-model-none on every 1 mm pair"
        return [f"| network alone >= {NETWORK_GAIN_SHARE:.2f} of the default's Dice gain over affine | not measured "
                f"| {missing} |", f"| default <= {TIME_RATIO} x `--model none` wall time, Dice not lower "
                f"| not measured | {missing} |"]
    shares = {name: (r["shmoareg-no-refine"]["mean_dice"] - r["affine-only"]["mean_dice"])
              / max(r["shmoareg"]["mean_dice"] - r["affine-only"]["mean_dice"], 1e-9) for name, r in runs.items()}
    detail = "; ".join(f"{name}: affine {r['affine-only']['mean_dice']:.3f}, network alone "
                       f"{r['shmoareg-no-refine']['mean_dice']:.3f}, default {r['shmoareg']['mean_dice']:.3f} "
                       f"(share {shares[name]:.2f})" for name, r in runs.items())
    gain_row = (f"| network alone >= {NETWORK_GAIN_SHARE:.2f} of the default's Dice gain over affine "
                f"| {_verdict(all(v >= NETWORK_GAIN_SHARE for v in shares.values()))} | {detail} |")
    ratios = {name: r["shmoareg"]["seconds"] / r["shmoareg-model-none"]["seconds"] for name, r in runs.items()}
    holds = all(ratios[name] <= TIME_RATIO and r["shmoareg"]["mean_dice"] >= r["shmoareg-model-none"]["mean_dice"]
                for name, r in runs.items())
    detail = "; ".join(f"{name}: {r['shmoareg']['seconds']:.1f} s vs {r['shmoareg-model-none']['seconds']:.1f} s "
                       f"(x{ratios[name]:.2f}), Dice {r['shmoareg']['mean_dice']:.3f} vs "
                       f"{r['shmoareg-model-none']['mean_dice']:.3f}" for name, r in runs.items())
    time_row = f"| default <= {TIME_RATIO} x `--model none` wall time, Dice not lower | {_verdict(holds)} | {detail} |"
    return [gain_row, time_row]


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
    """Build the pairs, run every method on every pair, write the JSON and the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--pairs", nargs="+", help="pair names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per method and pair; `seconds` is their median (default 1)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other results of results/compare.json and replace only those run now")
    args = parser.parse_args()
    start = time.perf_counter()
    pairs, missing = make_pairs()
    if missing:
        print(f"1 mm pairs left out: {missing}", flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = json.loads(RESULTS_JSON.read_text()) if args.update and RESULTS_JSON.exists() else {"results": {}}
    report.update(machine=machine(), started=report.get("started", started), one_mm_missing=missing,
                  pairs={pair.name: {"kind": pair.kind, "resolution": pair.resolution} for pair in pairs})
    for pair in (pair for pair in pairs if not args.pairs or pair.name in args.pairs):
        by_method = report["results"].setdefault(pair.name, {})
        for method in args.methods:
            result = {**evaluate(method, pair, args.repeats), "load_average": os.getloadavg()[0], "measured": started}
            by_method[method] = result
            print(f"{pair.name:20s} {method:20s} {result['status']:14s} "
                  f"dice={result.get('mean_dice', float('nan')):.3f} s={result.get('seconds', float('nan'))}",
                  flush=True)
    report["total_seconds" if not args.update else "update_seconds"] = round(time.perf_counter() - start, 1)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=2, default=str))
    write_between(TABLE_MARKERS, table(report["results"]))
    write_between(TARGET_MARKERS, targets(report["results"], pairs))


if __name__ == "__main__":
    main()
