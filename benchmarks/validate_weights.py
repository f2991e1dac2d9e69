"""Validation Dice of trained weights on a training config's validation pairs, for comparing checkpoints.

Run: ``.venv/bin/python benchmarks/validate_weights.py --config C.yaml --model M [M ...]`` (model names
or checkpoint paths). ``--save-pairs F.pt`` also stores the pairs, and ``--pairs F.pt`` evaluates on stored
pairs instead, so weights whose code has changed since can be scored on the same pairs from an older
checkout: ``PYTHONPATH=<old>/SHMoARegExtension python benchmarks/validate_weights.py --pairs F.pt
--model <old>/Resources/models/shmoareg.safetensors`` (this script only uses interfaces older than issue 9).
``--refinement`` also scores the pair optimisation on the same pairs, alone and after each model, with
``register``'s CPU step counts for a pair of two contrasts (MIND-SSC; the pairs' images differ in contrast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from shmoareg.checkpoints import resolve_model
from shmoareg.ensemble import ensemble_averaged
from shmoareg.training.data import Sample


def load_pairs(config: Path | None, stored: Path | None, save: Path | None) -> list[Sample]:
    """The validation pairs of ``config`` (optionally saved), or pairs stored earlier."""
    if stored is not None:
        return [Sample(**pair) for pair in torch.load(stored, weights_only=True)]
    from shmoareg.training.config import load_config
    from shmoareg.training.data import TrainingData

    spec = load_config(config)
    pairs = TrainingData(spec.data, spec.seed).validation(spec.validation.pairs)
    if save is not None:
        torch.save([vars(pair) for pair in pairs], save)
    return pairs


@torch.no_grad()
def ensemble_field(model: torch.nn.Module, pair: Sample, flips: int = 0, swap: bool = False) -> torch.Tensor:
    """The model's field on ``pair`` with ``register``'s mirror (``flips``) and swap ensembles."""
    predict = lambda f, m: model(f, m).displacement  # noqa: E731
    return ensemble_averaged(predict, pair.fixed, pair.moving, flips, swap, predict(pair.fixed, pair.moving))


@torch.no_grad()
def mean_dice(model: torch.nn.Module, pairs: list[Sample], flips: int = 0,
              swap: bool = False) -> tuple[float, float]:
    """Mean Dice over nonzero labels after the model's warp (averaged over ``flips`` mirrored pairs, and with
    ``swap`` over the pair swapped, as ``register``'s ensembles), and before (hard labels, nearest warp)."""
    from shmoareg.metrics import dice_per_label, mean_dice as average
    from shmoareg.spatial import warp_labels

    before, after = [], []
    for pair in pairs:
        field = ensemble_field(model, pair, flips, swap)
        warped = warp_labels(pair.moving_labels, field, method="nearest")
        reference = pair.fixed_labels[0, 0].numpy()
        before.append(average(dice_per_label(reference, pair.moving_labels[0, 0].numpy())))
        after.append(average(dice_per_label(reference, warped[0, 0].numpy())))
    return sum(after) / len(after), sum(before) / len(before)


def refinement_dice(pairs: list[Sample], model: torch.nn.Module | None = None, flips: int = 0,
                    swap: bool = False) -> float:
    """Mean Dice over nonzero labels after ``register``'s CPU refinement across contrasts: alone (from 1/8), or
    seeded by ``model``'s field (with the ensembles of :func:`ensemble_field`) and started at its resolution."""
    from shmoareg.metrics import dice_per_label, mean_dice as average
    from shmoareg.optimise import OptimisationSettings, levels_from, optimise_displacement
    from shmoareg.protocol import CROSS_CONTRAST_REFINE_STEPS, DEFAULT_REFINE_STEPS
    from shmoareg.spatial import warp_labels

    scores = []
    for pair in pairs:
        if model is None:
            settings, initial = OptimisationSettings(steps=DEFAULT_REFINE_STEPS["cpu"], similarity="mind"), None
        else:
            settings = OptimisationSettings(steps=CROSS_CONTRAST_REFINE_STEPS["cpu"], similarity="mind",
                                            levels=levels_from(OptimisationSettings.levels, 1))
            initial = ensemble_field(model, pair, flips, swap)
        field = optimise_displacement(pair.fixed, pair.moving, settings, initial=initial)
        warped = warp_labels(pair.moving_labels, field, method="nearest")
        scores.append(average(dice_per_label(pair.fixed_labels[0, 0].numpy(), warped[0, 0].numpy())))
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="training config whose validation pairs to use")
    parser.add_argument("--pairs", type=Path, help="pairs stored by --save-pairs (instead of --config)")
    parser.add_argument("--save-pairs", type=Path, help="store the config's validation pairs here")
    parser.add_argument("--model", nargs="+", required=True, help="model names or checkpoint paths")
    parser.add_argument("--flips", type=int, default=0, help="mirror ensemble over the first N axes (x, y, z)")
    parser.add_argument("--swap", action="store_true", help="swap ensemble: also predict on the pair swapped")
    parser.add_argument("--refinement", action="store_true",
                        help="also the pair optimisation alone and after each model (register's CPU steps, MIND-SSC)")
    args = parser.parse_args()
    if (args.config is None) == (args.pairs is None):
        parser.error("give either --config or --pairs")
    torch.set_num_threads(1)
    pairs = load_pairs(args.config, args.pairs, args.save_pairs)
    if args.refinement:
        print(f"refinement alone: mean Dice {refinement_dice(pairs):.4f} on {len(pairs)} pairs")
    for name in args.model:
        model, metadata = resolve_model(name)
        after, before = mean_dice(model.eval(), pairs, args.flips, args.swap)
        print(f"{name}: step {metadata.get('step')}, {args.flips} flips, swap {args.swap}, mean Dice {after:.4f} "
              f"(before {before:.4f}) on {len(pairs)} pairs")
        if args.refinement:
            refined = refinement_dice(pairs, model.eval(), args.flips, args.swap)
            print(f"{name} then refinement: mean Dice {refined:.4f}")


if __name__ == "__main__":
    main()
