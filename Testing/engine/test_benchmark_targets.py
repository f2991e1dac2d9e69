"""The issue-5 target verdicts that benchmarks/compare.py writes into RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare  # noqa: E402

PAIRS = [compare.Pair(name, kind, resolution, *[Path("unused")] * 5) for name, kind, resolution in (
    ("mni-colin-1mm", "inter-subject", "1mm"), ("colin-mni-1mm", "inter-subject", "1mm"),
    ("mni-colin-2mm", "inter-subject", "2mm"), ("colin-synth-1-1mm", "synthetic", "1mm"))]


def ok(dice: float, seconds: float, folding: float = 0.0) -> dict:
    return {"status": "ok", "mean_dice": dice, "seconds": seconds, "fraction_nonpositive": folding}


def rows(results: dict) -> dict[str, str]:
    """Target name -> verdict cell."""
    lines = compare.targets(results, PAIRS).splitlines()[2:]
    return {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in lines}


def test_verdicts_use_only_the_1mm_inter_subject_pairs():
    results = {
        "mni-colin-1mm": {"shmoareg": ok(0.80, 20.0, 0.001), "ants-syn": ok(0.78, 50.0), "elastix": ok(0.7, 25.0)},
        "colin-mni-1mm": {"shmoareg": ok(0.74, 21.0, 0.002), "ants-syn": ok(0.75, 55.0), "elastix": ok(0.7, 22.0)},
        # A 2 mm pair and a synthetic pair that would flip every verdict if they were counted.
        "mni-colin-2mm": {"shmoareg": ok(0.1, 99.0, 0.9), "ants-syn": ok(0.9, 1.0), "elastix": ok(0.9, 1.0)},
        "colin-synth-1-1mm": {"shmoareg": ok(0.1, 99.0, 0.9), "ants-syn": ok(0.9, 1.0), "elastix": ok(0.9, 1.0)},
    }
    verdicts = rows(results)
    assert verdicts["mean Dice >= ANTs SyN"] == "**holds**"  # 0.77 >= 0.765 on average
    assert verdicts["wall seconds < elastix affine + B-spline, every pair"] == "**holds**"
    assert verdicts["J <= 0 under 0.5 %"] == "**holds**"
    assert verdicts["GPU: under 2 s per pair end to end"] == "not measured"


def test_a_slower_pair_or_folding_fails_and_a_missing_method_is_not_measured():
    results = {
        "mni-colin-1mm": {"shmoareg": ok(0.70, 30.0, 0.01), "ants-syn": ok(0.78, 50.0), "elastix": ok(0.7, 25.0)},
        "colin-mni-1mm": {"shmoareg": ok(0.74, 21.0, 0.002), "elastix": ok(0.7, 22.0)},
    }
    verdicts = rows(results)
    assert verdicts["mean Dice >= ANTs SyN"] == "not measured"
    assert verdicts["wall seconds < elastix affine + B-spline, every pair"] == "**does not hold**"
    assert verdicts["J <= 0 under 0.5 %"] == "**does not hold**"
