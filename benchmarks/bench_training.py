"""Where a CPU training step goes: making the pair, forward, loss, backward, optimiser (one thread).

Run: ``.venv/bin/python benchmarks/bench_training.py --config C.yaml [--shape Z Y X] [--steps 20]
--label LABEL [--prefetch]``. It builds the config's model, data and loss exactly as ``shmoareg train`` does and
times ``--steps`` steps after one warm-up step (the data's label-map pool, if any, is filled first, as it
is after the first steps of a long run), then appends a record to
``benchmarks/results/training_cpu.json``. Recorded numbers and the command lines are in
benchmarks/README.md ("Training throughput"). It only uses interfaces that existed before issue 9, so
the same script measures an older checkout: ``PYTHONPATH=<old>/SHMoARegExtension python ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from shmoareg.models.registry import build_model
from shmoareg.training.config import load_config
from shmoareg.training.data import TrainingData
from shmoareg.training.objective import Objective

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "training_cpu.json"
PHASES = ("data", "forward", "loss", "backward", "optimiser")


def time_steps(config_path: Path, shape: tuple[int, int, int] | None, steps: int, prefetch: bool) -> dict:
    """Mean seconds per phase over ``steps`` training steps (after a warm-up step).

    With ``prefetch`` the pairs come from the trainer's :class:`Prefetcher` (made on a background thread
    while the step computes; ``data`` is then the wait for a pair that is not ready yet).
    """
    torch.set_num_threads(1)
    config = load_config(config_path)
    if shape is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, shape=shape))
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, config.model.config).train()
    data = TrainingData(config.data, config.seed)
    objective = Objective(config.loss)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.optimiser.lr)
    pool = getattr(config.data.synthetic, "pool", None) or 0
    for index in range(min(pool, steps + 1)):  # fill the label-map pool as a long run has
        data.batch(index, 1)
    if prefetch:
        from shmoareg.training.data import Prefetcher  # issue 9: not in older checkouts

        prefetcher = Prefetcher(data, config.optimiser.batch_size)
        next_batch = prefetcher.batch
    else:
        next_batch = lambda step: data.batch(step, config.optimiser.batch_size)  # noqa: E731
    totals = dict.fromkeys(PHASES, 0.0)
    for step in range(steps + 1):
        marks = [time.perf_counter()]
        sample = next_batch(step)
        marks.append(time.perf_counter())
        output = model(sample.fixed, sample.moving)
        marks.append(time.perf_counter())
        loss, _ = objective(output, sample)
        marks.append(time.perf_counter())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        optimiser.step()
        marks.append(time.perf_counter())
        if step > 0:
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                totals[phase] += end - start
    if prefetch:
        prefetcher.close()
    per_step = {phase: round(total / steps, 3) for phase, total in totals.items()}
    seconds = sum(per_step.values())
    return {"config": str(config_path), "model": config.model.name, "shape": list(config.data.shape),
            "steps_timed": steps, "prefetch": prefetch, "seconds_per_phase": per_step,
            "seconds_per_step": round(seconds, 3),
            "steps_per_hour": round(3600 / seconds), "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML)")
    parser.add_argument("--shape", type=int, nargs=3, help="override data.shape (Z Y X)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--label", required=True, help="name of this record, e.g. 'before (a36d4f4)'")
    parser.add_argument("--prefetch", action="store_true", help="make pairs on a background thread, as `train` does")
    args = parser.parse_args()
    record = {"label": args.label, **time_steps(args.config, tuple(args.shape) if args.shape else None, args.steps,
                                                      args.prefetch),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(record, indent=2))
    records = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(records + [record], indent=2) + "\n")


if __name__ == "__main__":
    main()
