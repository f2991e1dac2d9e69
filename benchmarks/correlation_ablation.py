"""Does an explicit local correlation make SHMoAReg learn correspondence faster? (issue 23, point 4)

Two networks of the shipped size from the same random start (same seed, same data, same budget) on the
real-anatomy recipe (``Resources/configs/train_anatomy_cpu.yaml``, which needs ``../shared/data``):

* ``concatenation``: the paper's form, the decoder sees fixed and warped moving features side by side;
* ``correlation``: the same plus a radius-1 local correlation at every decoder level (radius 2 at the
  coarsest) and the correlation's similarity-weighted read-out as one more SHMoE expert.

Each run validates every ``--every`` steps on the recipe's real validation pairs (subjects 11-20 of
OASIS-TRT-20, real T1 and manual labels, the network alone): Dice, and ``still_displacement``, the mean
displacement (voxels) the network predicts for an image against itself. Runs resume from their last
checkpoint, so the script can be stopped and run again with more ``--steps``.

Run: ``OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/correlation_ablation.py --steps 1000``.
Writes ``benchmarks/results/correlation_ablation_cpu.json``; runs go to ``benchmarks/out/correlation_ablation``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import torch

from shmoareg.training.config import load_config
from shmoareg.training.trainer import train

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "Resources" / "configs" / "train_anatomy_cpu.yaml"
WORK = HERE / "out" / "correlation_ablation"
RESULTS = HERE / "results" / "correlation_ablation_cpu.json"
CORRELATION = {"correlation_radius": 1, "coarsest_correlation_radius": 2, "matching_expert": True}
VARIANTS = {"concatenation": {}, "correlation": CORRELATION}
REPORTED = ("dice", "dice_before", "still_displacement", "fraction_folding", "loss")


def run(variant: str, steps: int, every: int) -> list[dict]:
    """Train ``variant`` from scratch (or its last checkpoint) to ``steps``; its validation records."""
    recipe = load_config(RECIPE)
    model = dataclasses.replace(recipe.model, config={**recipe.model.config, **VARIANTS[variant]})
    config = dataclasses.replace(
        recipe, model=model, init_from=None, output_dir=str(WORK / variant), checkpoint_every=every,
        optimiser=dataclasses.replace(recipe.optimiser, steps=steps),
        validation=dataclasses.replace(recipe.validation, every=every))
    train(config, resume=True, log=lambda message: print(f"[{variant}] {message}", flush=True))
    records = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record.get("phase") == "validation"]


def main() -> None:
    """Run the variants and write the validation curves."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per variant (default 1000)")
    parser.add_argument("--every", type=int, default=250, help="validate every this many steps (default 250)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report.update(recipe=str(RECIPE.relative_to(HERE.parent)), machine=platform.platform(),
                  threads=torch.get_num_threads(), variants={**report.get("variants", {}), **{
                      name: {"model": VARIANTS[name]} for name in args.variants}})
    for variant in args.variants:
        curve = run(variant, args.steps, args.every)
        report["variants"][variant]["validation"] = [
            {key: record.get(key) for key in ("step", *REPORTED) if key in record} for record in curve]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2))
    for variant, content in report["variants"].items():
        for record in content.get("validation", []):
            print(f"{variant:14s} " + " ".join(f"{key}={record[key]:.4f}" if isinstance(record[key], float)
                                               else f"{key}={record[key]}" for key in record), flush=True)


if __name__ == "__main__":
    main()
