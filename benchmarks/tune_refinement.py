"""Choose the refinement after the network by measurement: on the real-brain group (``--real``), or on a
synthetic pair the benchmark does not score.

``--real`` (issue 23: defaults are chosen on real brains with manual labels): every pair of ``compare.py``'s
real-brain group (OASIS-TRT-20 subjects 11-20, the validation subjects, never trained on; ``--pairs`` a subset),
each ``--settings`` START:STEPS (the refinement's coarsest level as a factor of the working grid, ``register``'s
``refine_start``, and its steps) one ``register`` call, scored by ``compare.score``; writes
``results/refinement_real_cpu.json`` (or ``--results``) with the per-pair and mean Dice (all, cortical,
subcortical), the refinement's seconds and the total.

Run: ``.venv/bin/python benchmarks/tune_refinement.py [--model shmoareg] [--steps 0 10 20 30 50]
[--network-max-voxels N ...] [--network-flips N ...] [--network-swap on|off ...] [--results FILE]``.
The pair is ``bench_register.py``'s seeded SynthMorph-style 160x192x224 pair at 1 mm, with its label
maps (never one of the brains that ``compare.py`` scores). Each setting is one ``register`` call in this
process (two threads, as the benchmark's children): the network followed by N refinement steps that
start at the network's resolution (the issue-9 schedule), against ``--model none`` with its own
default schedule. Writes ``benchmarks/results/refinement_cpu.json``; the choice and its numbers are in
benchmarks/README.md ("Refinement after the network").
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import SimpleITK as sitk
import torch

import compare
from bench_register import SHAPE_XYZ, make_pair
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.synthetic import synthetic_pair, to_sitk

HERE = Path(__file__).resolve().parent
WORK = HERE / "out" / "tune_refinement"
RESULTS = HERE / "results" / "refinement_cpu.json"
REAL_RESULTS = HERE / "results" / "refinement_real_cpu.json"


def labelled_pair(folder: Path) -> tuple[Path, Path, Path, Path]:
    """``bench_register``'s pair and its label maps (the same seed, so the same pair)."""
    fixed, moving = make_pair(folder)
    fixed_labels, moving_labels = folder / "fixed_labels.nii.gz", folder / "moving_labels.nii.gz"
    if not (fixed_labels.exists() and moving_labels.exists()):
        pair = synthetic_pair(SHAPE_XYZ[::-1], seed=11, max_displacement=6.0, num_labels=16, feature_size=16.0,
                              control_spacing=24.0)
        sitk.WriteImage(to_sitk(pair.fixed_labels), str(fixed_labels))
        sitk.WriteImage(to_sitk(pair.moving_labels), str(moving_labels))
    return fixed, moving, fixed_labels, moving_labels


def run(paths: tuple[Path, Path, Path, Path], model: str, steps: int | None,
        network_max_voxels: int | None = None, network_flips: int | None = None,
        network_swap: bool | None = None) -> dict:
    """One registration: mean Dice, seconds per stage and in all, network share."""
    fixed, moving, fixed_labels, moving_labels = paths
    output = WORK / f"{Path(model).stem}-{steps}-{network_max_voxels}-{network_flips}-{network_swap}"
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    summary = register(RegistrationRequest(fixed, moving, output, fixed_labels, moving_labels, model=model,
                                           device="cpu", refine_steps=steps, routing_maps="none",
                                           network_max_voxels=network_max_voxels, network_flips=network_flips,
                                           network_swap=network_swap))
    return {"model": model, "network_max_voxels": network_max_voxels,
            "network_flips": summary["method"]["network_flips"], "network_swap": summary["method"]["network_swap"],
            "network_prediction": summary.get("network_prediction"),
            "refine_steps": summary["method"]["refine_steps"],
            "levels": summary["method"]["settings"]["levels"], "mean_dice": summary["metrics"]["mean_dice"],
            "mean_dice_before": summary["metrics"]["mean_dice_before"], "sdlogj": summary["metrics"]["sdlogj"],
            "network_share": summary.get("network_share"), "seconds": summary["seconds"],
            "wall_seconds": round(time.perf_counter() - started, 2)}


def run_real(model: str, settings: list[tuple[int, int]], names: list[str] | None) -> list[dict]:
    """Each (start, steps) setting on the real-brain pairs (``names``, default all): per-pair scores, means."""
    pairs, missing = compare.make_pairs([compare.REAL])
    pairs = [pair for pair in pairs if not names or pair.name in names]
    if not pairs:
        raise SystemExit("; ".join(missing) or f"no real-brain pair is named {names}")
    rows = []
    for start, count in settings:
        per_pair = {}
        for pair in pairs:
            output = WORK / "real" / f"{pair.name}-{start}-{count}"
            shutil.rmtree(output, ignore_errors=True)
            summary = register(RegistrationRequest(pair.fixed, pair.moving, output, model=model, device="cpu",
                                                   refine_steps=count, refine_start=start, routing_maps="none"))
            scores = compare.score(pair, sitk.ReadTransform(str(output / "transform.h5")))
            per_pair[pair.name] = {**{key: scores[key] for key in compare.SUMMARY_KEYS if key in scores},
                                   "refine_seconds": summary["seconds"].get("register"),
                                   "total_seconds": summary["seconds"]["total"],
                                   "levels": summary["method"]["settings"]["levels"],
                                   "network_prediction": summary.get("network_prediction")}
            shutil.rmtree(output, ignore_errors=True)
        means = {key: compare.finite_mean([p.get(key) for p in per_pair.values()])
                 for key in ("mean_dice", "mean_dice_cortical", "mean_dice_subcortical", "refine_seconds",
                             "total_seconds")}
        rows.append({"start": start, "steps": count, **means, "pairs": per_pair})
        print(f"start {start} steps {count}: Dice {means['mean_dice']:.4f} (cortical "
              f"{means['mean_dice_cortical']:.4f}), refine {means['refine_seconds']:.1f} s, total "
              f"{means['total_seconds']:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="tune on the real-brain group (see above)")
    parser.add_argument("--settings", nargs="+", default=["2:10", "4:20", "2:25"],
                        help="with --real: START:STEPS settings (start level as a factor of the working grid)")
    parser.add_argument("--pairs", nargs="+", help="with --real: the real-brain pairs to use (default: all)")
    parser.add_argument("--model", default="shmoareg", help="model name or checkpoint path")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 30, 50])
    parser.add_argument("--network-max-voxels", type=int, nargs="+", default=[None],
                        help="register's --network-max-voxels values to try (default: the engine's)")
    parser.add_argument("--network-flips", type=int, nargs="+", default=[None],
                        help="register's --network-flips values to try (default: the engine's)")
    parser.add_argument("--network-swap", nargs="+", choices=["on", "off"], default=[None],
                        help="register's --network-swap / --no-network-swap to try (default: the engine's)")
    parser.add_argument("--results", type=Path,
                        help=f"where to write (default {RESULTS.name}, with --real {REAL_RESULTS.name})")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.real:
        settings = [tuple(int(v) for v in setting.split(":")) for setting in args.settings]
        rows = run_real(args.model, settings, args.pairs)
        (args.results or REAL_RESULTS).write_text(json.dumps({"group": "compare.py real-brain group",
                                                              "model": args.model, "threads": 2, "rows": rows},
                                                             indent=2) + "\n")
        return
    paths = labelled_pair(HERE / "out" / "pair160x192x224")
    swaps = [None if swap is None else swap == "on" for swap in args.network_swap]
    rows = [run(paths, "none", None)] + [run(paths, args.model, steps, voxels, flips, swap)
                                         for swap in swaps for flips in args.network_flips
                                         for voxels in args.network_max_voxels for steps in args.steps]
    for row in rows:
        print(f"{row['model']:>10} steps {row['refine_steps']:>3} levels {row['levels']} network at most "
              f"{row['network_max_voxels']} voxels, {row['network_flips']} flips, swap {row['network_swap']} "
              f"({row['network_prediction']}): "
              f"Dice {row['mean_dice']:.3f} "
              f"(before {row['mean_dice_before']:.3f}), predict {row['seconds'].get('predict', 0):.1f} s, register "
              f"{row['seconds'].get('register', 0):.1f} s, total {row['seconds']['total']:.1f} s, "
              f"network share {row['network_share']}")
    results = args.results or RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"pair": "bench_register.py seed 11, 160x192x224 at 1 mm, with labels",
                                   "threads": 2, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
