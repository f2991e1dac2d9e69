"""The network alone on the benchmark's real-brain pairs, scored as ``compare.py`` scores, without a run.

``compare.py``'s ``shmoareg-no-refine`` row, for weights that are not shipped (yet): each ``--model`` (a model
name or a checkpoint path) predicts on ``register``'s working pair (the same stages, affine included), and
its field on the fixed grid is scored with ``compare.score`` (``--flips``, ``--swap``: ``register``'s
``--network-flips``, ``--network-swap``). Probes on the same prediction: ``--passes N`` applies the network again
to its own result N times (each pass predicts what is left and is composed with the field so far), ``--scales``
multiplies the network's field, and ``--by-depth`` compares its field with refinement alone's by depth inside the
brain. This gates a checkpoint that won on the validation pairs; nothing is tuned or trained on these pairs.

Run: ``.venv/bin/python benchmarks/network_alone.py [--model M ...] [--flips N] [--swap | --no-swap] [--passes N]
[--scales S ...] [--by-depth]`` (prints one line per model, pair and probe; writes nothing).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.fields import displacement_transform, total_displacement
from shmoareg.grid import Grid
from shmoareg.pipeline import RegistrationRequest, predict, prepare
from shmoareg.protocol import DEFAULT_MODEL, DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_SWAP
from shmoareg.spatial import compose, warp

import compare
import resolution_ceiling

DEPTHS_MM = ((0, 3), (3, 8), (8, 15), (15, 30), (30, 100))  # bands of distance inside the fixed brain mask


def network_fields(pair: compare.Pair, model: str, passes: int,
                   flips: int, swap: bool) -> tuple[list[torch.Tensor], Optional[sitk.Transform], Grid]:
    """The network's field (mirror ensemble over ``flips`` axes, swap ensemble with ``swap``) on ``register``'s
    working grid after each of ``passes`` passes, the affine and the grid."""
    request = RegistrationRequest(fixed=pair.fixed, moving=pair.moving, output_dir=Path("unused"), model=model,
                                  device="cpu", network_flips=flips, network_swap=swap)
    prepared = prepare(request)
    working = prepared.pair
    fields, total = [], None
    for _ in range(passes):
        step = predict(prepared, working.moving if total is None else warp(working.moving, total))
        total = step.displacement if total is None else compose(total, step.displacement)
        fields.append(total)
    return fields, prepared.start.affine, working.grid


def by_depth(pair: compare.Pair, field: torch.Tensor, affine: Optional[sitk.Transform], grid: Grid) -> list[str]:
    """How the network's displacement beyond the affine agrees with refinement alone's (``compare.py``'s recorded
    ``shmoareg-model-none`` run on ``pair``), by depth inside the fixed brain mask: cosine, mean sizes, error."""
    recorded = {method: sitk.GetArrayFromImage(resolution_ceiling.recorded_field(pair, method))
                for method in (resolution_ceiling.REFINED, "affine-only")}
    refined = recorded[resolution_ceiling.REFINED] - recorded["affine-only"]
    fixed = Grid.of(sitk.ReadImage(str(pair.fixed_labels)))
    network = total_displacement(field, grid, fixed, affine) - recorded["affine-only"]
    mask = sitk.ReadImage(str(pair.fixed_mask))
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=True, squaredDistance=False,
                                                                useImageSpacing=True))
    inside = sitk.GetArrayFromImage(mask) > 0
    lines = []
    for low, high in DEPTHS_MM:
        chosen = inside & (depth >= low) & (depth < high)
        r, n = refined[chosen], network[chosen]
        agreed = resolution_ceiling.agreement(n, r)
        lines.append(f"depth {low}-{high} mm ({chosen.sum() / inside.sum():.0%} of the brain): cosine "
                     f"{agreed['cosine']:.2f}, refined {np.linalg.norm(r, axis=1).mean():.2f} mm, "
                     f"network {np.linalg.norm(n, axis=1).mean():.2f} mm, apart {agreed['mean_difference_mm']:.2f} mm")
    return lines


def mean_dice(pair: compare.Pair, field: torch.Tensor, affine: Optional[sitk.Transform], grid: Grid) -> float:
    """``compare.score``'s mean Dice of the affine followed by ``field`` (voxels on ``grid``)."""
    fixed = Grid.of(sitk.ReadImage(str(pair.fixed)))
    transform = displacement_transform(total_displacement(field, grid, fixed, affine), fixed)
    return compare.score(pair, transform)["mean_dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[DEFAULT_MODEL], help="model names or checkpoint paths")
    parser.add_argument("--passes", type=int, default=1, help="apply the network this many times (composed)")
    parser.add_argument("--flips", type=int, default=DEFAULT_NETWORK_FLIPS["cpu"],
                        help="mirror ensemble over the first N axes, as register's --network-flips (default "
                             f"{DEFAULT_NETWORK_FLIPS['cpu']}, register's on CPU)")
    parser.add_argument("--swap", action=argparse.BooleanOptionalAction, default=DEFAULT_NETWORK_SWAP["cpu"],
                        help="swap ensemble, as register's --network-swap (default: register's on CPU)")
    parser.add_argument("--by-depth", action="store_true", help="compare the field with compare.py's recorded "
                        "shmoareg-model-none run, by depth inside the brain (run compare.py first)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="factors on the first pass's field")
    args = parser.parse_args()
    pairs, missing = compare.make_pairs([compare.REAL])
    if not pairs:
        raise SystemExit(f"the real-brain pairs are missing: {missing}")
    torch.set_num_threads(1)
    for model in args.model:
        for pair in pairs:
            fields, affine, grid = network_fields(pair, model, max(args.passes, 1), args.flips, args.swap)
            for scale in args.scales:
                dice = mean_dice(pair, scale * fields[0], affine, grid)
                print(f"{model} {pair.name} {args.flips} flips, swap {args.swap}, pass 1 scale {scale:g}: "
                      f"Dice {dice:.4f}", flush=True)
            if args.by_depth:
                print("\n".join(f"{model} {pair.name}   {line}" for line in by_depth(pair, fields[0], affine, grid)))
            for number, field in enumerate(fields[1:], start=2):
                print(f"{model} {pair.name} pass {number}: Dice {mean_dice(pair, field, affine, grid):.4f}", flush=True)


if __name__ == "__main__":
    main()
