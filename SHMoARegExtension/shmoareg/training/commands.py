"""The ``train`` and ``evaluate`` subcommands of the ``shmoareg`` command line.

Each parser sets ``run`` (the function to call with the parsed arguments) and ``progress="none"``
(these commands print log lines, not the register progress protocol). Heavy imports happen
inside the run functions so that building the parser stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from shmoareg.protocol import DEFAULT_MODEL, DEVICES
from shmoareg.training.datasets import PAIR_SPLITS


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train --config C.yaml [--resume] [--device D] [--output-dir O]``."""
    parser = subparsers.add_parser(
        "train", help="train a registration network from a YAML config",
        description="Train a registration network (synthetic pairs or a dataset) from a YAML config. "
                    "Launch with `torchrun --nproc_per_node N -m shmoareg train ...` for several processes.")
    parser.add_argument("--config", required=True, type=Path, help="training config (YAML)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output_dir>/checkpoints/latest.safetensors")
    parser.add_argument("--device", choices=DEVICES, help="overrides the config's device")
    parser.add_argument("--output-dir", type=Path, help="overrides the config's output_dir")
    parser.set_defaults(run=run_train, progress="none")


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate --dataset D --model M --output-dir O [--split S] [--refine-steps N] [--device D]``."""
    parser = subparsers.add_parser(
        "evaluate", help="register every pair of a dataset and tabulate Dice, HD95, SDlogJ and time",
        description="Register the pairs of a Learn2Reg-style dataset.json with a model and write "
                    "results.csv and results.json (one row per pair, and means).")
    parser.add_argument("--dataset", required=True, type=Path, help="dataset.json, or a folder holding one")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint path (default: "
                        f"{DEFAULT_MODEL}); 'none' optimises the field on each pair alone")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for results and per-pair outputs")
    parser.add_argument("--split", default="registration_val", choices=PAIR_SPLITS, help="which pairs of the dataset")
    parser.add_argument("--refine-steps", type=int, help="optimisation steps per pair (register's default if unset)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True,
                        help="affine initialisation per pair (default on; turn off for pre-aligned data)")
    parser.set_defaults(run=run_evaluate, progress="none")


def run_train(args: argparse.Namespace) -> None:
    """Load the config, apply the command-line overrides and train."""
    from shmoareg.training.config import load_config
    from shmoareg.training.trainer import train

    config = load_config(args.config)
    if args.device is not None:
        config = dataclasses.replace(config, device=args.device)
    if args.output_dir is not None:
        config = dataclasses.replace(config, output_dir=str(args.output_dir))
    train(config, resume=args.resume)


def run_evaluate(args: argparse.Namespace) -> None:
    """Evaluate and print the means; raise InputError (after writing the tables) if any pair failed."""
    from shmoareg.errors import InputError
    from shmoareg.training.evaluate import evaluate

    results = evaluate(args.dataset, args.model, args.output_dir, split=args.split, refine_steps=args.refine_steps,
                       device=args.device, affine=args.affine)
    if not results:  # a rank other than 0 of a distributed run
        return
    mean = {name: "n/a" if value is None else f"{value:.3f}" for name, value in results["mean"].items()}
    print(f"{results['count']} pairs: mean Dice {mean['mean_dice']} (before {mean['mean_dice_before']}), "
          f"HD95 {mean['mean_hd95_mm']} mm, SDlogJ {mean['sdlogj']}, |J|<=0 {mean['fraction_nonpositive']}, "
          f"{mean['seconds']} s per pair; results in {args.output_dir / 'results.csv'}")
    if results["failed"]:
        raise InputError(f"{results['failed']} of {results['count']} pairs failed; see the error column of "
                         f"{args.output_dir / 'results.csv'}")
