"""How much Dice a field limited to the network's resolution can reach on the benchmark's real pair.

The network predicts on CPU at about 3 mm. Does that grid cap what the network alone can reach? This
runs ``compare.py``'s ``shmoareg-model-none`` (refinement alone, the best field we have) on its
``mni-colin-1mm`` pair, keeps only what a coarser grid can hold of that field (each component box-averaged
and sampled at S mm, then trilinearly back to 1 mm) and scores it with ``compare.py``'s scoring. It also
runs the network alone (``<model>-no-refine``) and compares its field with the refined one. It measures a
ceiling; nothing is tuned or trained on it.

Run: ``.venv/bin/python benchmarks/resolution_ceiling.py [--spacings 2 3 4 6] [--model M]`` (writes
``results/resolution_ceiling.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmoareg.fields import sampled_field

import compare
import methods

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "resolution_ceiling.json"
PAIR = "mni-colin-1mm"
REFINED = "shmoareg-model-none"


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


def recorded_field(pair: compare.Pair, method: str) -> sitk.Image:
    """The displacement field, on the fixed labels' grid, of ``method``'s run on ``pair`` left by ``compare.py``."""
    transform = methods.load_transform(method, compare.run_folder(pair, method))
    return sampled_field(transform, sitk.ReadImage(str(pair.fixed_labels)))


def run_field(pair: compare.Pair, method: str) -> tuple[dict, sitk.Image]:
    """``compare.py``'s result of ``method`` on ``pair`` and its displacement field on the fixed grid."""
    result = compare.evaluate(method, pair)
    if result["status"] != "ok":
        detail = result.get("reason") or result.get("log_tail")
        raise SystemExit(f"{method} on {pair.name}: {result['status']} ({detail})")
    return result, recorded_field(pair, method)


def agreement(network: np.ndarray, refined: np.ndarray) -> dict:
    """How a network's displacements ``(N, 3)`` compare with refinement alone's at the same points: cosine, mean
    end-point difference (mm) and the share of the refined field it explains (``1 - |r - n|^2 / |r|^2``)."""
    n, r = network, refined
    return {"cosine": float((n * r).sum() / np.sqrt((n * n).sum() * (r * r).sum())),
            "mean_difference_mm": float(np.linalg.norm(r - n, axis=1).mean()),
            "share_explained": float(1 - ((r - n) ** 2).sum() / (r ** 2).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--model", default="shmoareg", help="the shipped network whose field alone is compared")
    args = parser.parse_args()
    pairs, missing = compare.make_pairs([compare.PROXY])
    pair = next((pair for pair in pairs if pair.name == PAIR), None)
    if pair is None:
        raise SystemExit(f"the 1 mm pairs are missing: {missing}")
    refined_result, refined = run_field(pair, REFINED)
    rows = [{"spacing_mm": 1.0, "mean_dice": refined_result["mean_dice"]}]
    for spacing in args.spacings:
        held = sitk.DisplacementFieldTransform(coarsened(refined, spacing))
        rows.append({"spacing_mm": spacing, "mean_dice": compare.score(pair, held)["mean_dice"]})
    for row in rows:
        print(f"field held at {row['spacing_mm']:.0f} mm: mean Dice {row['mean_dice']:.3f}")
    alone_result, network = run_field(pair, args.model + methods.NO_REFINE_SUFFIX)
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_mask))) > 0
    alone = {"model": args.model, "mean_dice": alone_result["mean_dice"],
             **agreement(*(sitk.GetArrayFromImage(field)[inside] for field in (network, refined)))}
    print(f"{args.model} alone: mean Dice {alone['mean_dice']:.3f}; against refinement alone's field: cosine "
          f"{alone['cosine']:.2f}, mean difference {alone['mean_difference_mm']:.1f} mm, share explained "
          f"{alone['share_explained']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"pair": PAIR, "field": REFINED, "rows": rows, "network_alone": alone},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
