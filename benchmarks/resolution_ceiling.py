"""How much Dice a field limited to the network's resolution can reach on the benchmark's real pair.

The network predicts on CPU at about 3 mm. Does that grid cap what the network alone can reach? This
registers MNI152 -> Colin27 at 1 mm with ``--model none`` (refinement alone, the best field we have), then
keeps only what a coarser grid can hold (each component box-averaged and sampled at S mm, then
trilinearly back to 1 mm) and scores the moving proxy labels warped by it, as ``compare.py`` does
(nearest, 3 tissue classes). It measures a ceiling; nothing is tuned or trained on it.

Run: ``.venv/bin/python benchmarks/resolution_ceiling.py [--spacings 2 3 4 6]`` (writes
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    args = parser.parse_args()
    brains = sources.public_brains(HERE / "out" / "sources")
    WORK.mkdir(parents=True, exist_ok=True)
    fixed_labels, moving_labels = (tissue_labels(sitk.ReadImage(str(brains[name]))) for name in ("mni152", "colin27"))
    output = WORK / "model-none"
    subprocess.run([sys.executable, "-m", "shmoareg", "register", "--fixed", str(brains["mni152"]), "--moving",
                    str(brains["colin27"]), "--model", "none", "--routing-maps", "none", "--progress", "none",
                    "--output-dir", str(output)], check=True)
    field = sitk.ReadImage(str(output / DISPLACEMENT_FILE), sitk.sitkVectorFloat64)
    rows = [{"spacing_mm": 1.0, "mean_dice": warped_dice(field, fixed_labels, moving_labels)}]
    rows += [{"spacing_mm": spacing, "mean_dice": warped_dice(coarsened(field, spacing), fixed_labels, moving_labels)}
             for spacing in args.spacings]
    for row in rows:
        print(f"field held at {row['spacing_mm']:.0f} mm: mean Dice {row['mean_dice']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"pair": "mni152 -> colin27, 1 mm, proxy tissue labels", "field": "--model none",
                                   "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
