"""The network alone on a real scan under a known warp: end-point error and Dice, on a brain the benchmark never scores.

Dice at the training resolution hides how far off the network's field is; a known warp of a real scan does not.
The scan is the INIA19 macaque T1 (Debian's ``mricron-data``, as ``macaque_shapes.py`` uses it) scaled to human
size and resampled to 1 mm; ``shmoareg.known_warps.brain_case`` warps it by seeded smooth fields (16 mm control
spacing, at most 8 mm) and gives its tissue labels. For each ``--model`` the network predicts as ``register
--refine-steps 0 --no-affine`` would (``pipeline.prepare`` and ``predict``); the pair optimisation alone
(``--model none``, its default steps) is the reference. Reports the mean end-point error over the brain (mm) and
the mean Dice of the three tissue classes.

Run: ``.venv/bin/python benchmarks/network_precision.py [--model M ...] [--seeds 3 4] [--flips N]
[--swap | --no-swap] [--adapt-steps N] [--reference]`` (prints one line per model and case; the cases go to
``benchmarks/out/network_precision``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.fields import displacement_transform, total_displacement
from shmoareg.grid import Grid
from shmoareg.known_warps import KnownWarpCase, brain_case, end_point_error
from shmoareg.metrics import dice_per_label, mean_dice
from shmoareg.pipeline import RegistrationRequest, adapt, predict, prepare, register
from shmoareg.protocol import DEFAULT_MODEL, DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_SWAP, TRANSFORM_FILE

import macaque_shapes
import sources

WORK = Path(__file__).resolve().parent / "out" / "network_precision"
SPACING_MM = 1.0


def human_sized_scan() -> sitk.Image:
    """The INIA19 T1 with its spacing scaled to fsaverage5's brain volume, resampled to :data:`SPACING_MM`."""
    t1 = macaque_shapes.human_sized(sitk.ReadImage(str(sources.mricron_template(
        macaque_shapes.CACHE, macaque_shapes.TEMPLATE)), sitk.sitkFloat32))
    size = [int(round(n * s / SPACING_MM)) for n, s in zip(t1.GetSize(), t1.GetSpacing())]
    return sitk.Resample(t1, size, sitk.Transform(), sitk.sitkLinear, t1.GetOrigin(), (SPACING_MM,) * 3,
                         t1.GetDirection(), 0.0, sitk.sitkFloat32)


def score(case: KnownWarpCase, transform: sitk.Transform) -> str:
    """End-point error and tissue Dice of ``transform`` on ``case``."""
    warped = sitk.Resample(case.moving_labels, case.fixed_labels, transform, sitk.sitkNearestNeighbor, 0)
    dice = mean_dice(dice_per_label(sitk.GetArrayFromImage(case.fixed_labels), sitk.GetArrayFromImage(warped)))
    return f"end-point error {end_point_error(case, transform)['mean_mm']:.2f} mm, Dice {dice:.3f}"


def network_alone(paths: dict[str, str], model: str, flips: int, swap: bool, adapt_steps: int = 0) -> sitk.Transform:
    """The network's field as ``register --refine-steps 0 --no-affine [--adapt-steps N]`` would write it, as a
    transform."""
    request = RegistrationRequest(Path(paths["fixed"]), Path(paths["moving"]), WORK / "unused", model=model,
                                  device="cpu", affine=False, refine_steps=0, network_flips=flips,
                                  network_swap=swap, adapt_steps=adapt_steps)
    prepared = prepare(request)
    if adapt_steps:
        prepared = adapt(prepared)
    fixed = Grid.of(prepared.inputs.fixed)
    field = total_displacement(predict(prepared).displacement, prepared.pair.grid, fixed, None)
    return displacement_transform(field, fixed)


def refinement_alone(paths: dict[str, str], folder: Path) -> sitk.Transform:
    """``register --model none --no-affine`` (its default steps); the transform it writes."""
    register(RegistrationRequest(Path(paths["fixed"]), Path(paths["moving"]), folder, model="none", device="cpu",
                                 affine=False, routing_maps="none"))
    return sitk.ReadTransform(str(folder / TRANSFORM_FILE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[DEFAULT_MODEL], help="model names or checkpoint paths")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4], help="seeds of the known warps")
    parser.add_argument("--flips", type=int, default=DEFAULT_NETWORK_FLIPS["cpu"],
                        help=f"register's --network-flips (default {DEFAULT_NETWORK_FLIPS['cpu']}, its CPU default)")
    parser.add_argument("--swap", action=argparse.BooleanOptionalAction, default=DEFAULT_NETWORK_SWAP["cpu"],
                        help="register's --network-swap (default: its CPU default)")
    parser.add_argument("--adapt-steps", type=int, default=0, help="register's --adapt-steps (default 0)")
    parser.add_argument("--reference", action="store_true", help="also the pair optimisation alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scan = human_sized_scan()
    for seed in args.seeds:
        case = brain_case(scan, "t1", seed)
        paths = case.write(WORK / f"case{seed}")
        truth = np.linalg.norm(case.displacement_mm, axis=-1)[case.foreground].mean()
        identity = sitk.Transform(3, sitk.sitkIdentity)
        print(f"case {seed} (true displacement {truth:.2f} mm): none {score(case, identity)}", flush=True)
        if args.reference:
            print(f"case {seed}: refinement alone {score(case, refinement_alone(paths, WORK / f'none{seed}'))}",
                  flush=True)
        for model in args.model:
            alone = network_alone(paths, model, args.flips, args.swap, args.adapt_steps)
            print(f"case {seed}: {model} alone {score(case, alone)}", flush=True)


if __name__ == "__main__":
    main()
