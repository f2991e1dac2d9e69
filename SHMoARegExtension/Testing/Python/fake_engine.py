"""A stand-in for ``python -m shmoareg`` speaking the same protocol, for cases the real engine cannot produce.

Usage: ``fake_engine.py --mode MODE register --fixed F --moving M --output-dir D [...]``

- ``routing``: a translation by ``--translation X Y Z`` (LPS mm, default none) as a displacement-field
  transform, warped images, ``jacobian.nii`` holding :func:`jacobianField` (not the translation's,
  which is 1), ``uncertainty.nii.gz`` holding :func:`uncertaintyField` with ``--uncertainty``, and
  SHMoAReg-style maps on their levels' grids (:func:`levelReference`, as the engine writes them): the arg-max
  expert maps ``maps/level{L}_{a}_expert.nii.gz`` listed
  in ``maps.json`` (their shares are :func:`utilisation`), the gate maps ``routing/level{L}_{a}_gate{E}.nii.gz``
  and ``routing.json``, with the network share in ``routing.json`` and ``summary.json``. Summary
  metrics: Jacobian statistics of :func:`jacobianField`; with both segmentations those of
  :func:`segmentMetrics`; with both landmark files the TRE of the translation, points paired by label.
- ``maps``: like ``routing`` but the maps of another kind of network (:data:`OTHER_MAPS`: one categorical,
  two scalar) and no ``routing.json``, on the fixed grid (as engines before issue 24 wrote every map).
- ``corrupt``: like ``routing`` but one map is not an image (the import must fail part-way).
- ``crash``: a progress line, a partial output file, one stderr line, exit code 1.
- ``hang``: starts a child process, reports its pid as a progress message, then waits forever.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmoareg.protocol import (COMPLETION_MARKER, JACOBIAN_FILE, MAPS_FILE, MAPS_FOLDER, ROUTING_FILE, ROUTING_FOLDER,
                               SIMILARITIES, TRANSFORM_FILE, UNCERTAINTY_FILE, WARPED_FILE, WARPED_SEGMENTATION_FILE)

EXPERTS = [
    {"name": "k3d1", "kernel_size": 3, "dilation": 1, "receptive_field": 3},
    {"name": "k3d2", "kernel_size": 3, "dilation": 2, "receptive_field": 5},
    {"name": "k7d1", "kernel_size": 7, "dilation": 1, "receptive_field": 7},
]
LEVELS = (1, 2)
GATE_LEVELS = (1,)
AXES = ("x", "y", "z")
NETWORK_SHARE = 0.6875
REFINE_STEPS = 50
CRASH_MESSAGE = "error: internal failure (ZeroDivisionError: division by zero); traceback in /tmp/fake.log"
LAUNCHER_KILLED_LINE = "error: [/opt/Slicer/bin/python-real] exit abnormally - Report the problem."
# Resolution of --similarity auto by this stand-in.
AUTO_SIMILARITY = "lncc"
# The label whose HD95 before registration is reported as null (as for an empty structure).
HD95_BEFORE_MISSING_LABEL = 2


# The maps of ``--mode maps``: name, kind, units, colour map, then the categories or the statistics written.
CLUSTERS = ("cluster A", "cluster B", "cluster C")
CLUSTER_SHARES = (0.5, 0.3, 0.2)
CATEGORY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")
RESIDUAL_STATISTICS = {"mean": 1.5, "min": 0.0, "max": 4.0, "p5": 0.1, "p25": 0.5, "p50": 1.2, "p75": 2.0, "p95": 3.5}
GATE_STATISTICS = {"mean": 0.4, "min": 0.0, "max": 0.9, "p5": 0.05, "p25": 0.2, "p50": 0.4, "p75": 0.6, "p95": 0.85}
OTHER_MAPS = (("level1_cluster", "categorical", "", None), ("residual_magnitude", "scalar", "mm", "inferno"),
              ("attention_gate", "scalar", "", "viridis"))


def emit(event: str, fraction: float, message: str, **extra: object) -> None:
    print(json.dumps({"event": event, "stage": "fake", "fraction": fraction, "message": message, **extra}), flush=True)


def utilisation() -> dict:
    """Fractions per level and axis (rows sum to 1); distinct values so the test can check them."""
    table = {}
    for level in LEVELS:
        table[str(level)] = {axis: [round(0.2 + 0.05 * level + 0.02 * a, 4), round(0.3 - 0.01 * a, 4)]
                             for a, axis in enumerate(AXES)}
        for values in table[str(level)].values():
            values.append(round(1.0 - sum(values), 4))
    return table


def expertMap(shape: tuple[int, int, int], axisIndex: int) -> np.ndarray:
    """Arg-max experts 1..3 in bands along array axis ``axisIndex``; 0 in the first and last slices."""
    positions = np.indices(shape)[axisIndex]
    experts = 1 + (positions * len(EXPERTS)) // shape[axisIndex]
    experts[0, :, :] = experts[-1, :, :] = 0
    return experts.astype(np.uint8)


def scalarField(shape: tuple[int, int, int], largest: float) -> np.ndarray:
    """A scalar map written, indexed [k, j, i]: 0 to ``largest`` along i."""
    return (largest * np.indices(shape)[2] / max(shape[2] - 1, 1)).astype(np.float32)


def mapEntry(name: str, kind: str, level: int, units: str = "", axis=None, **details: object) -> dict:
    return {"name": name, "file": f"maps/{name}.nii.gz", "kind": kind, "level": level, "spacing_mm": [2.0 * level] * 3,
            "units": units, "description": f"the fake {name}", "axis": axis, **details}


def categories(names, shares) -> list[dict]:
    return [{"value": value, "name": name, "colour": CATEGORY_COLOURS[value - 1], "share": share}
            for value, (name, share) in enumerate(zip(names, shares), start=1)]


def levelReference(fixed: sitk.Image, level: int) -> sitk.Image:
    """The grid of this stand-in's level-``level`` maps: the fixed grid averaged down ``2**level`` times,
    cell-centred (the engine's level 1 is its network input, coarser than the fixed image)."""
    factor = 2 ** level
    reference = sitk.Image([-(-n // factor) for n in fixed.GetSize()], sitk.sitkUInt8)
    reference.SetSpacing([spacing * factor for spacing in fixed.GetSpacing()])
    reference.SetDirection(fixed.GetDirection())
    reference.SetOrigin(fixed.TransformContinuousIndexToPhysicalPoint([(factor - 1) / 2] * 3))
    return reference


def writeMaps(out: Path, fixed: sitk.Image, mode: str) -> None:
    """The maps of ``mode`` (``routing``/``corrupt``: SHMoAReg's, ``maps``: :data:`OTHER_MAPS`) and maps.json."""
    (out / MAPS_FOLDER).mkdir(parents=True, exist_ok=True)
    shape = sitk.GetArrayViewFromImage(fixed).shape
    entries = []
    if mode == "maps":
        writeLike(expertMap(shape, 2), fixed, out / MAPS_FOLDER / "level1_cluster.nii.gz")
        entries.append(mapEntry("level1_cluster", "categorical", 1, categories=categories(CLUSTERS, CLUSTER_SHARES)))
        writeLike(scalarField(shape, 4.0), fixed, out / MAPS_FOLDER / "residual_magnitude.nii.gz")
        entries.append(mapEntry("residual_magnitude", "scalar", 1, "mm", colour_map="inferno",
                                statistics=RESIDUAL_STATISTICS))
        writeLike(scalarField(shape, 0.9), fixed, out / MAPS_FOLDER / "attention_gate.nii.gz")
        entries.append(mapEntry("attention_gate", "scalar", 2, colour_map="viridis", statistics=GATE_STATISTICS))
    else:
        names = [expert["name"] for expert in EXPERTS]
        for level in LEVELS:
            reference = levelReference(fixed, level)
            for axisIndex, axis in enumerate(AXES):
                experts = expertMap(sitk.GetArrayViewFromImage(reference).shape, 2 - axisIndex)  # x: last array axis
                writeLike(experts, reference, out / MAPS_FOLDER / f"level{level}_{axis}_expert.nii.gz")
                entries.append(mapEntry(f"level{level}_{axis}_expert", "categorical", level, axis=axis,
                                        categories=categories(names, utilisation()[str(level)][axis])))
    if mode == "corrupt":
        (out / MAPS_FOLDER / f"level{LEVELS[-1]}_z_expert.nii.gz").write_bytes(b"not an image")
    (out / MAPS_FILE).write_text(json.dumps({"model": "fake", "maps": entries, "network_share": NETWORK_SHARE}))


def jacobianField(shape: tuple[int, int, int]) -> np.ndarray:
    """The Jacobian determinant written, indexed [k, j, i]: -0.5 to 2.5 in steps of 0.3 (1.0 included)."""
    k, j, i = np.indices(shape)
    return (-0.5 + 0.3 * ((i + 2 * j + 3 * k) % 11)).astype(np.float32)


def uncertaintyField(shape: tuple[int, int, int]) -> np.ndarray:
    """The uncertainty map written (mm), indexed [k, j, i]: 0.1 mm per slice along k, from 0."""
    return (0.1 * np.indices(shape)[0]).astype(np.float32)


def segmentMetrics(labels: list[int]) -> dict:
    """Known overlap metrics per label (HD95 before of ``HD95_BEFORE_MISSING_LABEL`` null) and their means."""
    diceBefore = {str(label): 0.4 + 0.01 * label for label in labels}
    dice = {str(label): 0.8 + 0.01 * label for label in labels}
    hd95Before = {str(label): None if label == HD95_BEFORE_MISSING_LABEL else 6.0 + label for label in labels}
    hd95 = {str(label): 1.5 + 0.1 * label for label in labels}

    def mean(values: dict) -> float:
        return float(np.mean([value for value in values.values() if value is not None]))

    return {"dice_before": diceBefore, "dice": dice, "hd95_before_mm": hd95Before, "hd95_mm": hd95,
            "mean_dice_before": mean(diceBefore), "mean_dice": mean(dice),
            "mean_hd95_before_mm": mean(hd95Before), "mean_hd95_mm": mean(hd95)}


def readLandmarks(path: Path) -> dict[str, np.ndarray]:
    """LPS points by label from the module's CSV (``# coordinate system: LPS``, header ``label,x,y,z``)."""
    lines = path.read_text().splitlines()
    if lines[0] != "# coordinate system: LPS":
        raise ValueError(f"{path}: the first line must state the LPS coordinate system")
    rows = list(csv.reader(lines[1:]))
    if rows[0] != ["label", "x", "y", "z"]:
        raise ValueError(f"{path}: unexpected header {rows[0]}")
    return {row[0]: np.array([float(value) for value in row[1:]]) for row in rows[1:]}


def landmarkMetrics(fixedPath: Path, movingPath: Path, translation: np.ndarray) -> dict:
    """TRE before and after of points paired by label, after mapping fixed points by ``translation``."""
    fixed, moving = readLandmarks(fixedPath), readLandmarks(movingPath)
    if set(fixed) != set(moving):
        raise ValueError(f"landmark labels differ: {sorted(set(fixed) ^ set(moving))}")
    labels = list(fixed)
    before = np.array([np.linalg.norm(moving[label] - fixed[label]) for label in labels])
    after = np.array([np.linalg.norm(fixed[label] + translation - moving[label]) for label in labels])
    return {"tre_before_mm": float(before.mean()), "tre_mm": float(after.mean()),
            "tre_before_max_mm": float(before.max()), "tre_max_mm": float(after.max()),
            "tre_before_per_point_mm": before.tolist(), "tre_per_point_mm": after.tolist(),
            "landmark_labels": labels}


def writeLike(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


def writeOutputs(args: argparse.Namespace, mode: str) -> None:
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    fixed = sitk.ReadImage(str(args.fixed))
    moving = sitk.ReadImage(str(args.moving))
    translation = np.array(args.translation, dtype=float)
    field = sitk.GetImageFromArray(np.broadcast_to(translation, (*sitk.GetArrayViewFromImage(fixed).shape, 3)).copy(),
                                   isVector=True)
    field.CopyInformation(fixed)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    sitk.WriteTransform(transform, str(out / TRANSFORM_FILE))
    sitk.WriteImage(sitk.Resample(moving, fixed, transform), str(out / WARPED_FILE))
    if args.moving_seg is not None:
        labels = sitk.Resample(sitk.ReadImage(str(args.moving_seg)), fixed, transform, sitk.sitkNearestNeighbor)
        sitk.WriteImage(labels, str(out / WARPED_SEGMENTATION_FILE))
    shape = sitk.GetArrayViewFromImage(fixed).shape
    jacobian = jacobianField(shape)
    writeLike(jacobian, fixed, out / JACOBIAN_FILE)
    if args.uncertainty:
        writeLike(uncertaintyField(shape), fixed, out / UNCERTAINTY_FILE)
    metrics = {"sdlogj": float(np.std(np.log(np.maximum(jacobian, 1e-9)))),
               "fraction_nonpositive": float(np.mean(jacobian <= 0)),
               "jacobian_min": float(jacobian.min()), "jacobian_max": float(jacobian.max())}
    if args.moving_seg is not None and args.fixed_seg is not None:
        present = np.union1d(sitk.GetArrayFromImage(sitk.ReadImage(str(args.moving_seg))),
                             sitk.GetArrayFromImage(sitk.ReadImage(str(args.fixed_seg))))
        metrics.update(segmentMetrics([int(label) for label in present if label != 0]))
    if args.fixed_landmarks is not None:
        metrics.update(landmarkMetrics(args.fixed_landmarks, args.moving_landmarks, translation))
    emit("progress", 0.5, "writing the network's maps")
    writeMaps(out, fixed, mode)
    if mode != "maps":
        (out / ROUTING_FOLDER).mkdir(exist_ok=True)
        for level in GATE_LEVELS:
            reference = levelReference(fixed, level)
            for axisIndex, axis in enumerate(AXES):
                experts = expertMap(sitk.GetArrayViewFromImage(reference).shape, 2 - axisIndex)
                for expert in range(1, len(EXPERTS) + 1):
                    gate = np.where(experts == expert, 0.8, 0.1).astype(np.float32)
                    writeLike(gate, reference, out / ROUTING_FOLDER / f"level{level}_{axis}_gate{expert}.nii.gz")
        routing = {"experts": EXPERTS, "utilisation": utilisation(), "moa_utilisation": {"3": [0.5, 0.5]},
                   "network_share": NETWORK_SHARE}
        (out / ROUTING_FILE).write_text(json.dumps(routing))
    method = {"refine_steps": REFINE_STEPS, "smoothness": args.smoothness,
              "similarity": AUTO_SIMILARITY if args.similarity == "auto" else args.similarity}
    summary = {"fake": True, "device": "cpu", "method": method, "network_share": NETWORK_SHARE, "metrics": metrics}
    (out / COMPLETION_MARKER).write_text(json.dumps(summary))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=("routing", "maps", "corrupt", "crash", "hang",
                                                             "launcher-killed"))
    parser.add_argument("command", choices=("register",))
    parser.add_argument("--fixed", type=Path, required=True)
    parser.add_argument("--moving", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--fixed-seg", type=Path)
    parser.add_argument("--moving-seg", type=Path)
    parser.add_argument("--fixed-landmarks", type=Path)
    parser.add_argument("--moving-landmarks", type=Path)
    parser.add_argument("--similarity", required=True, choices=SIMILARITIES)
    parser.add_argument("--smoothness", type=float, required=True)
    parser.add_argument("--uncertainty", action=argparse.BooleanOptionalAction, required=True)
    parser.add_argument("--translation", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"))
    args, _ = parser.parse_known_args()
    emit("progress", 0.1, "started")
    if args.mode == "crash":
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / TRANSFORM_FILE).write_bytes(b"partial")
        print(CRASH_MESSAGE, file=sys.stderr, flush=True)
        return 1
    if args.mode == "launcher-killed":  # Slicer's CTK app launcher, after its child was killed (e.g. out of memory)
        print(LAUNCHER_KILLED_LINE, file=sys.stderr, flush=True)
        return 1
    if args.mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        emit("progress", 0.2, f"child {child.pid}")
        time.sleep(120)
        return 0
    writeOutputs(args, args.mode)
    emit("done", 1.0, "registration finished", outputs={})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
