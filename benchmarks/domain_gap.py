"""How much of the refinement's gain the network carries on brain-shaped synthetic pairs, as they vary.

The benchmark's real brains say the network alone carries a quarter of the default's gain over the affine
(RESULTS.md). This measures the same share on pairs of the shipped recipe's kind, all cut from fsaverage5's label
map (``train_brainshapes_cpu.yaml`` with ``label_map_share`` 1): as trained, with one contrast for both images,
with smaller or finer deformations (closer to what is left between two brains after the affine), and with no
deformation at all (the two images differ in contrast, noise and bias only). Each row: Dice before, after the
network alone, after the pair optimisation alone and after both (``validate_weights.py``'s scoring and
``register``'s CPU steps across contrasts), on the same pairs (validation seeds, never trained on); and the
network's end-point error against the pairs' known field, with the field's mean size (voxels, over the brain).

Run: ``.venv/bin/python benchmarks/domain_gap.py [--model M] [--pairs N] [--flips N] [--swap]`` (one thread; prints
one line per kind of pair; writes nothing). Needs ``make brain-shapes``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from shmoareg.checkpoints import resolve_model
from shmoareg.protocol import DEFAULT_MODEL
from shmoareg.training.config import SyntheticSpec, load_config
from shmoareg.training.data import Sample, TrainingData

from validate_weights import ensemble_field, mean_dice, refinement_dice

RECIPE = Path(__file__).resolve().parents[1] / "Resources" / "configs" / "train_brainshapes_cpu.yaml"
SEED = 77  # not the recipe's seed: pairs the recipe never validated on either
MEANINGFUL_GAIN = 0.01  # Dice: below it the refinement gained nothing to share (pairs without deformation)


def kinds(trained: SyntheticSpec) -> dict[str, SyntheticSpec]:
    """The kinds of brain-shaped pair: as trained, and one thing changed at a time."""
    brain = dataclasses.replace(trained, label_map_share=1.0)
    small = dataclasses.replace(brain, max_displacement=2.0, control_spacing=4.0)
    still = dataclasses.replace(brain, max_displacement=0.0, augmentation=dataclasses.replace(
        brain.augmentation, rotation_degrees=0.0, scaling=0.0, translation=0.0))
    return {"as trained": brain, "one contrast": dataclasses.replace(brain, same_contrast=True),
            "smaller (at most 2 voxels)": dataclasses.replace(brain, max_displacement=2.0),
            "smaller and finer (control points every 4 voxels)": small,
            "smaller, finer, one contrast": dataclasses.replace(small, same_contrast=True),
            "no deformation": still, "no deformation, one contrast": dataclasses.replace(still, same_contrast=True)}


@torch.no_grad()
def field_error(model: torch.nn.Module, pairs: list[Sample], flips: int = 0, swap: bool = False) -> tuple[float, float]:
    """The network's mean end-point error (with ``register``'s mirror and swap ensembles) against the pairs' known
    fields, and the fields' mean size (voxels), over the fixed brain (nonzero labels)."""
    errors, sizes = [], []
    for pair in pairs:
        inside = (pair.fixed_labels > 0)[:, 0]
        error = (ensemble_field(model, pair, flips, swap) - pair.displacement).norm(dim=1)
        errors.append(float(error[inside].mean()))
        sizes.append(float(pair.displacement.norm(dim=1)[inside].mean()))
    return sum(errors) / len(errors), sum(sizes) / len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or checkpoint path")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of each kind")
    parser.add_argument("--flips", type=int, default=0, help="mirror ensemble over the first N axes (x, y, z)")
    parser.add_argument("--swap", action="store_true", help="swap ensemble: also predict on the pair swapped")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = load_config(RECIPE)
    model, _ = resolve_model(args.model)
    model.eval()
    for name, synthetic in kinds(recipe.data.synthetic).items():
        pairs = TrainingData(dataclasses.replace(recipe.data, synthetic=synthetic), SEED).validation(args.pairs)
        network, before = mean_dice(model, pairs, args.flips, args.swap)
        refined, both = refinement_dice(pairs), refinement_dice(pairs, model, args.flips, args.swap)
        share = f"{(network - before) / (refined - before):.0%}" if refined - before > MEANINGFUL_GAIN else "-"
        error, size = field_error(model, pairs, args.flips, args.swap)
        print(f"{name}: before {before:.3f}, network {network:.3f}, refinement {refined:.3f}, both {both:.3f}; "
              f"the network carries {share} of the refinement's gain; its end-point error {error:.2f} voxels for a "
              f"field of {size:.2f}", flush=True)


if __name__ == "__main__":
    main()
