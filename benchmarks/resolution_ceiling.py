"""How much Dice a field limited to the network's resolution can reach on the benchmark's real pair.

The network predicts on CPU at about 3 mm. Does that grid cap what the network alone can reach? This
registers MNI152 -> Colin27 at 1 mm with ``--model none`` (refinement alone, the best field we have), then
keeps only what a coarser grid can hold (each component box-averaged and sampled at S mm, then
trilinearly back to 1 mm) and scores the moving proxy labels warped by it, as ``compare.py`` does
(nearest, 3 tissue classes). It measures a ceiling; nothing is tuned or trained on it.

It also compares the network's field alone (``--model``, default shmoareg) with that refined field.

Run: ``.venv/bin/python benchmarks/resolution_ceiling.py [--spacings 2 3 4 6] [--model M]`` (writes
``results/resolution_ceiling.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmoareg.known_warps import TISSUE_CLASSES, tissue_labels
from shmoareg.metrics import dice_per_label, mean_dice
from shmoareg.protocol import DISPLACEMENT_FILE

import sources

HERE = Path(__file__).resolve().parent
WORK = HERE / "out" / "resolution_ceiling"
RESULTS = HERE / "results" / "resolution_ceiling.json"


def coarsened(field: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``field`` keeping only what a grid of ``spacing_mm`` holds (box average, sample, trilinear back)."""
    components = []
    for axis in range(field.GetNumberOfComponentsPerPixel()):
        component = sitk.VectorIndexSelectionCast(field, axis, sitk.sitkFloat64)
        factor = spacing_mm / component.GetSpacing()[0]
        radius = max(int(round(factor / 2)), 0)
        averaged = sitk.BoxMean(component, [radius] * 3) if radius else component
        size = [max(int(n / factor), 1) for n in component.GetSize()]
        coarse = sitk.Resample(averaged, size, sitk.Transform(), sitk.sitkLinear, component.GetOrigin(),
                               [s * factor for s in component.GetSpacing()], component.GetDirection())
        components.append(sitk.Resample(coarse, component, sitk.Transform(), sitk.sitkLinear))
    result = sitk.Compose(*components)
    result.CopyInformation(field)
    return result


def warped_dice(field: sitk.Image, fixed_labels: sitk.Image, moving_labels: sitk.Image) -> float:
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))
    warped = sitk.Resample(moving_labels, fixed_labels, transform, sitk.sitkNearestNeighbor, 0)
    return float(mean_dice(dice_per_label(sitk.GetArrayFromImage(fixed_labels), sitk.GetArrayFromImage(warped),
                                          labels=list(range(1, TISSUE_CLASSES + 1)))))


def register(fixed: Path, moving: Path, output: Path, *options: str) -> sitk.Image:
    """The displacement field of one ``shmoareg register`` run."""
    subprocess.run([sys.executable, "-m", "shmoareg", "register", "--fixed", str(fixed), "--moving", str(moving),
                    "--routing-maps", "none", "--progress", "none", "--output-dir", str(output), *options],
                   check=True)
    return sitk.ReadImage(str(output / DISPLACEMENT_FILE), sitk.sitkVectorFloat64)


def agreement(network: sitk.Image, refined: sitk.Image, mask: sitk.Image) -> dict:
    """How the network's field compares with refinement alone's over ``mask``: cosine, mean end-point
    difference (mm) and the share of the refined field it explains (``1 - |r - n|^2 / |r|^2``)."""
    inside = sitk.GetArrayViewFromImage(mask) > 0
    n, r = (sitk.GetArrayFromImage(field)[inside] for field in (network, refined))
    return {"cosine": float((n * r).sum() / np.sqrt((n * n).sum() * (r * r).sum())),
            "mean_difference_mm": float(np.linalg.norm(r - n, axis=1).mean()),
            "share_explained": float(1 - ((r - n) ** 2).sum() / (r ** 2).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--model", default="shmoareg", help="the network whose field alone is compared")
    args = parser.parse_args()
    brains = sources.public_brains(HERE / "out" / "sources")
    WORK.mkdir(parents=True, exist_ok=True)
    fixed_labels, moving_labels = (tissue_labels(sitk.ReadImage(str(brains[name]))) for name in ("mni152", "colin27"))
    refined = register(brains["mni152"], brains["colin27"], WORK / "model-none", "--model", "none")
    rows = [{"spacing_mm": 1.0, "mean_dice": warped_dice(refined, fixed_labels, moving_labels)}]
    rows += [{"spacing_mm": spacing, "mean_dice": warped_dice(coarsened(refined, spacing), fixed_labels,
                                                              moving_labels)} for spacing in args.spacings]
    for row in rows:
        print(f"field held at {row['spacing_mm']:.0f} mm: mean Dice {row['mean_dice']:.3f}")
    network = register(brains["mni152"], brains["colin27"], WORK / "network-alone", "--model", args.model,
                       "--refine-steps", "0")
    alone = {"model": args.model, "mean_dice": warped_dice(network, fixed_labels, moving_labels),
             **agreement(network, refined, fixed_labels)}
    print(f"{args.model} alone: mean Dice {alone['mean_dice']:.3f}; against refinement alone's field: cosine "
          f"{alone['cosine']:.2f}, mean difference {alone['mean_difference_mm']:.1f} mm, share explained "
          f"{alone['share_explained']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"pair": "mni152 -> colin27, 1 mm, proxy tissue labels", "field": "--model none",
                                   "rows": rows, "network_alone": alone}, indent=2) + "\n")


if __name__ == "__main__":
    main()
