"""Parameter count, forward time and peak memory of the networks at 160x192x224 (x, y, z).

Run: ``.venv/bin/python benchmarks/bench_models.py [--device cpu|cuda] [--repeats 3] [--models ...]
[--shipped]``. Each model is measured in a fresh process so peak memory is its own. Writes
``benchmarks/results/models_<device>[_shipped].json``; recorded numbers are in benchmarks/README.md.
By default every registered network in its default config; ``--shipped`` measures the configs of the
shipped weights (what ``register`` runs). ``moe_forward_overhead`` is ``shmoareg`` over ``unet``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SHAPE_ZYX = (224, 192, 160)
HERE = Path(__file__).resolve().parent


def measure(name: str, device: str, repeats: int, shipped: bool) -> dict:
    """Forward passes of one model in this process (called in a child process)."""
    import torch

    from shmoareg.checkpoints import resolve_model
    from shmoareg.models import build_model
    from shmoareg.models.registry import model_config

    model = (resolve_model(name)[0] if shipped else build_model(name)).to(device).eval()
    fixed = torch.rand(1, 1, *SHAPE_ZYX, device=device)
    moving = torch.rand(1, 1, *SHAPE_ZYX, device=device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(fixed, moving)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    result = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
              "forward_seconds": round(min(times[1:]), 3), "threads": torch.get_num_threads(),
              "host_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "config": model_config(model)}
    if device == "cuda":
        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main() -> None:
    """Measure every model in a child process and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", help="registered model names (default: all)")
    parser.add_argument("--shipped", action="store_true", help="the shipped weights' configs, not the defaults")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.device, args.repeats, args.shipped)))
        return
    from shmoareg.models import MODEL_NAMES

    results = []
    for name in args.models or MODEL_NAMES:
        output = subprocess.run([sys.executable, __file__, "--child", name, "--device", args.device,
                                 "--repeats", str(args.repeats), *(["--shipped"] if args.shipped else [])],
                                capture_output=True, text=True, check=True)
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    seconds = {result["model"]: result["forward_seconds"] for result in results}
    summary = {"input_shape_xyz": SHAPE_ZYX[::-1], "device": args.device, "shipped_configs": args.shipped,
               "models": results, "moe_forward_overhead": round(seconds["shmoareg"] / seconds["unet"], 2)
               if {"shmoareg", "unet"} <= set(seconds) else None}
    out = HERE / "results" / f"models_{args.device}{'_shipped' if args.shipped else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
