"""Does an explicit local correlation make SHMoAReg learn correspondence faster? (issue 23, point 4)

Networks of the shipped size from the same start (same seed, same data, same budget) on the real-anatomy
recipe (``Resources/configs/train_anatomy_cpu.yaml``, which needs ``../shared/data``):

* ``concatenation``: the paper's form, the decoder sees fixed and warped moving features side by side;
* ``correlation``: the same plus a radius-1 local correlation at every decoder level (radius 2 at the
  coarsest) and the correlation's similarity-weighted read-out as one more SHMoE expert;
* ``correlation-input``: the correlation alone, without the matching expert.

``--start scratch`` starts ``concatenation`` and ``correlation`` from one random initialisation; ``--start
shipped`` starts ``concatenation`` and ``correlation-input`` from the shipped weights (the correlation's
channels enter each fusion at zero weight: ``SHMoARegNet.grow_from``), so both predict the shipped field at
step 0 and differ only in what training does with the correlation.

Each run validates every ``--every`` steps on the recipe's real validation pairs (subjects 11-20 of
OASIS-TRT-20, real T1 and manual labels, the network alone): Dice, and ``still_displacement``, the mean
displacement (voxels) the network predicts for an image against itself. Runs resume from their last
checkpoint, so the script can be stopped and run again with more ``--steps`` (steps counted from the start).

Run: ``OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/correlation_ablation.py --steps 1000``
(``--variants`` runs one variant, e.g. one per core). Writes ``benchmarks/results/correlation_ablation_cpu.json``
(``..._shipped_cpu.json`` from the shipped start); runs go to ``benchmarks/out/correlation_ablation``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import torch

from shmoareg.checkpoints import resolve_model
from shmoareg.training.config import load_config
from shmoareg.training.trainer import train

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "Resources" / "configs" / "train_anatomy_cpu.yaml"
WORK = HERE / "out" / "correlation_ablation"
RESULTS = HERE / "results" / "correlation_ablation_cpu.json"
CORRELATION_INPUT = {"correlation_radius": 1, "coarsest_correlation_radius": 2}
VARIANTS = {"concatenation": {}, "correlation": {**CORRELATION_INPUT, "matching_expert": True},
            "correlation-input": CORRELATION_INPUT}
STARTS = {"scratch": (None, ("concatenation", "correlation")),
          "shipped": ("shmoareg", ("concatenation", "correlation-input"))}
REPORTED = ("dice", "dice_before", "still_displacement", "fraction_folding", "loss")


def run(variant: str, start: str, steps: int, every: int) -> list[dict]:
    """Train ``variant`` from ``start`` (or its last checkpoint) for ``steps``; its validation records."""
    recipe = load_config(RECIPE)
    model = dataclasses.replace(recipe.model, config={**recipe.model.config, **VARIANTS[variant]})
    init_from = STARTS[start][0]
    first = 0 if init_from is None else int(resolve_model(init_from)[1]["step"])
    config = dataclasses.replace(
        recipe, model=model, init_from=init_from, output_dir=str(WORK / start / variant),
        checkpoint_every=every, optimiser=dataclasses.replace(recipe.optimiser, steps=first + steps),
        validation=dataclasses.replace(recipe.validation, every=every))
    train(config, resume=True, log=lambda message: print(f"[{start}/{variant}] {message}", flush=True))
    records = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{**record, "step": record["step"] - first} for record in records if record.get("phase") == "validation"]


def results_file(start: str) -> Path:
    """Where the validation curves from ``start`` are kept."""
    return RESULTS if start == "scratch" else RESULTS.with_name(f"correlation_ablation_{start}_cpu.json")


def record_curve(start: str, variant: str, curve: list[dict]) -> dict:
    """Write ``variant``'s curve into its start's results (read again first: one process may run per variant)."""
    path = results_file(start)
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update(recipe=str(RECIPE.relative_to(HERE.parent)), start=STARTS[start][0] or "random",
                  machine=platform.platform(), threads=torch.get_num_threads())
    report.setdefault("variants", {})[variant] = {"model": VARIANTS[variant], "validation": [
        {key: record.get(key) for key in ("step", *REPORTED) if key in record} for record in curve]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    """Run the variants and write the validation curves."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per variant (default 1000)")
    parser.add_argument("--every", type=int, default=250, help="validate every this many steps (default 250)")
    parser.add_argument("--start", default="scratch", choices=list(STARTS),
                        help="a random initialisation (default) or the shipped weights")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        help="the variants to run (default: the start's two)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict = {}
    for variant in args.variants or STARTS[args.start][1]:
        report = record_curve(args.start, variant, run(variant, args.start, args.steps, args.every))
    for variant, content in report.get("variants", {}).items():
        for record in content["validation"]:
            print(f"{variant:18s} " + " ".join(f"{key}={record[key]:.4f}" if isinstance(record[key], float)
                                               else f"{key}={record[key]}" for key in record), flush=True)

if __name__ == "__main__":
    main()
