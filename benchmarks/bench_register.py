"""Wall time and peak memory of ``shmoareg register`` on a 160x192x224 pair (1 mm, SynthMorph-style).

Run: ``make benchmark`` (or ``.venv/bin/python benchmarks/bench_register.py [--device cpu] [--repeats 1]``).
Writes ``benchmarks/results/register_<device>.json``; the recorded numbers are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from shmoareg.synthetic import synthetic_pair, to_sitk

SHAPE_XYZ = (160, 192, 224)
HERE = Path(__file__).resolve().parent


def make_pair(folder: Path) -> tuple[Path, Path]:
    """Write a seeded 160x192x224 (x, y, z) pair at 1 mm, unless it is there already."""
    fixed, moving = folder / "fixed.nii.gz", folder / "moving.nii.gz"
    if not (fixed.exists() and moving.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        pair = synthetic_pair(SHAPE_XYZ[::-1], seed=11, max_displacement=6.0, num_labels=16, feature_size=16.0,
                              control_spacing=24.0)
        sitk.WriteImage(to_sitk(pair.fixed_image), str(fixed))
        sitk.WriteImage(to_sitk(pair.moving_image), str(moving))
    return fixed, moving


def run_once(fixed: Path, moving: Path, output: Path, device: str, *options: str) -> dict:
    """One ``register`` run (with ``options`` added) in a fresh process: wall time, stage seconds, memory,
    network grid and ensemble, mean Dice (with label maps) and network share."""
    command = [sys.executable, "-m", "shmoareg", "register", "--fixed", str(fixed), "--moving", str(moving),
               "--output-dir", str(output), "--device", device, "--progress", "none", *options]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"register failed ({completed.returncode}): {completed.stderr.strip()}")
    summary = json.loads((output / "summary.json").read_text())
    return {"wall_seconds": round(wall, 2), "stage_seconds": summary["seconds"], "memory": summary["memory"],
            "network_grid": summary["network_grid"], "command": " ".join(command[1:]),
            "network_ensemble": {key: summary["method"][key] for key in ("network_flips", "network_swap")},
            "mean_dice": summary["metrics"].get("mean_dice"), "network_share": summary.get("network_share"),
            "method": {key: summary["method"][key] for key in ("refine_steps", "adapt_steps")}}


def main() -> None:
    """Run the benchmark and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = HERE / "out"
    fixed, moving = make_pair(work / "pair160x192x224")
    runs = [run_once(fixed, moving, work / f"register-{i}", args.device) for i in range(args.repeats)]
    result = {
        "pair": "SynthMorph-style synthetic, 160x192x224 voxels (x, y, z), 1 mm isotropic, seed 11",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "device": args.device, "runs": runs,
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    out = HERE / "results" / f"register_{args.device}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
