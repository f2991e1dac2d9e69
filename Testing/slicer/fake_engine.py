"""A stand-in for ``python -m shmoareg`` speaking the same protocol, for cases the real engine cannot produce.

Usage: ``fake_engine.py --mode MODE register --fixed F --moving M --output-dir D [...]``

- ``routing``: identity transform, warped images, and network-style routing outputs
  (``routing.json`` and ``routing/level{L}_{a}_{expert|gateE}.nii.gz`` on the fixed grid), with
  the network share in ``routing.json`` and ``summary.json``.
- ``corrupt``: like ``routing`` but one routing map is not an image (the import must fail part-way).
- ``crash``: a progress line, a partial output file, one stderr line, exit code 1.
- ``hang``: starts a child process, reports its pid as a progress message, then waits forever.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

EXPERTS = [
    {"name": "k3d1", "kernel_size": 3, "dilation": 1, "receptive_field": 3},
    {"name": "k3d2", "kernel_size": 3, "dilation": 2, "receptive_field": 5},
    {"name": "k7d1", "kernel_size": 7, "dilation": 1, "receptive_field": 7},
]
LEVELS = (0, 1)
GATE_LEVELS = (0,)
AXES = ("x", "y", "z")
NETWORK_SHARE = 0.6875
REFINE_STEPS = 50
CRASH_MESSAGE = "error: internal failure (ZeroDivisionError: division by zero); traceback in /tmp/fake.log"


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


def writeLike(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


def writeOutputs(args: argparse.Namespace, corrupt: bool) -> None:
    out = args.output_dir
    (out / "routing").mkdir(parents=True, exist_ok=True)
    fixed = sitk.ReadImage(str(args.fixed))
    moving = sitk.ReadImage(str(args.moving))
    field = sitk.Image(fixed.GetSize(), sitk.sitkVectorFloat64, 3)
    field.CopyInformation(fixed)
    sitk.WriteTransform(sitk.DisplacementFieldTransform(field), str(out / "transform.h5"))
    sitk.WriteImage(sitk.Resample(moving, fixed), str(out / "warped_moving.nii.gz"))
    if args.moving_seg is not None:
        labels = sitk.Resample(sitk.ReadImage(str(args.moving_seg)), fixed, sitk.Transform(), sitk.sitkNearestNeighbor)
        sitk.WriteImage(labels, str(out / "warped_moving_seg.nii.gz"))
    emit("progress", 0.5, "writing routing maps")
    for level in LEVELS:
        for axisIndex, axis in enumerate(AXES):
            experts = expertMap(sitk.GetArrayViewFromImage(fixed).shape, 2 - axisIndex)  # x is the last array axis
            writeLike(experts, fixed, out / "routing" / f"level{level}_{axis}_expert.nii.gz")
            if level in GATE_LEVELS:
                for expert in range(1, len(EXPERTS) + 1):
                    gate = np.where(experts == expert, 0.8, 0.1).astype(np.float32)
                    writeLike(gate, fixed, out / "routing" / f"level{level}_{axis}_gate{expert}.nii.gz")
    if corrupt:
        (out / "routing" / f"level{LEVELS[-1]}_z_expert.nii.gz").write_bytes(b"not an image")
    routing = {"experts": EXPERTS, "utilisation": utilisation(), "moa_utilisation": {"3": [0.5, 0.5]},
               "network_share": NETWORK_SHARE}
    (out / "routing.json").write_text(json.dumps(routing))
    summary = {"fake": True, "device": "cpu", "method": {"refine_steps": REFINE_STEPS}, "network_share": NETWORK_SHARE}
    (out / "summary.json").write_text(json.dumps(summary))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=("routing", "corrupt", "crash", "hang"))
    parser.add_argument("command", choices=("register",))
    parser.add_argument("--fixed", type=Path, required=True)
    parser.add_argument("--moving", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--moving-seg", type=Path)
    args, _ = parser.parse_known_args()
    emit("progress", 0.1, "started")
    if args.mode == "crash":
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "transform.h5").write_bytes(b"partial")
        print(CRASH_MESSAGE, file=sys.stderr, flush=True)
        return 1
    if args.mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        emit("progress", 0.2, f"child {child.pid}")
        time.sleep(120)
        return 0
    writeOutputs(args, corrupt=args.mode == "corrupt")
    emit("done", 1.0, "registration finished", outputs={})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
