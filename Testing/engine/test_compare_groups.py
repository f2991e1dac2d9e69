"""The real-brain pair group of benchmarks/compare.py without ../shared/data: its pairs built from a stand-in data
folder, scoring on a per-pair label set, HD95 on label boxes, incomplete groups and the pair tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare  # noqa: E402
from shmoareg.metrics import hd95_per_label  # noqa: E402

SHAPE = (6, 8, 10)  # (Z, Y, X)


def write(array: np.ndarray, path: Path) -> Path:
    """A small 1 mm image of ``array`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def stand_in_subject(folder: Path, subject: int) -> None:
    """A subject with labels 17, 1002 and one of its own (1000 + subject); the T1 is nonzero where labelled."""
    labels = np.zeros(SHAPE, np.int16)
    labels[1:3, 1:4, 1:4], labels[3:5, 1:4, 1:4], labels[1:3, 5:7, 5:8] = 17, 1002, 1000 + subject
    write(labels, folder / f"{subject:02d}" / "labels.nii.gz")
    write((labels > 0).astype(np.int16) * 100, folder / f"{subject:02d}" / "t1_brain.nii.gz")


@pytest.fixture
def stand_in_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``REAL_DATA`` and ``WORK`` in a temporary folder, with every validation subject."""
    monkeypatch.setattr(compare, "REAL_DATA", tmp_path / "oasis-trt-20")
    monkeypatch.setattr(compare, "WORK", tmp_path / "work")
    for subject in compare.VALIDATION_SUBJECTS:
        stand_in_subject(compare.REAL_DATA, subject)
    return compare.REAL_DATA


def test_real_pairs_use_the_files_in_place_and_score_the_labels_both_subjects_have(stand_in_data: Path):
    pairs, reason = compare.real_pairs()
    assert reason is None and [pair.name for pair in pairs][:2] == ["oasis-11-12", "oasis-12-13"]
    assert len(pairs) == 10 and pairs[-1].name == "oasis-20-11" and {pair.group for pair in pairs} == {compare.REAL}
    first = pairs[0]
    assert first.fixed == stand_in_data / "11" / "t1_brain.nii.gz" and first.moving_labels.parent.name == "12"
    assert first.labels == [17, 1002]  # 1011 and 1012 are each in one subject only
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(first.fixed_mask)))
    assert mask.sum() == 18 + 18 + 12 and first.fixed_mask.is_relative_to(compare.WORK)


def test_without_the_data_the_group_is_left_out_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(compare, "REAL_DATA", tmp_path / "absent")
    pairs, missing = compare.make_pairs([compare.REAL])
    assert pairs == [] and len(missing) == 1 and "real-brain pairs left out" in missing[0]
    assert str(tmp_path / "absent" / "11") in missing[0]


def test_score_splits_dice_over_the_pairs_own_labels(tmp_path: Path):
    fixed = np.zeros(SHAPE, np.int16)
    fixed[1:5, 1:3, 1:3], fixed[1:5, 4:6, 1:5], fixed[1:5, 4:6, 6:9] = 17, 1002, 2035
    moving = fixed.copy()
    moving[moving == 2035] = 0
    moving[1:5, 4:6, 7:10] = 2035  # 2 of 3 columns overlap: Dice 2/3; 1002 and 17 stay (Dice 1)
    moving[0, 0, 0] = 53  # in the moving subject only: not scored
    paths = [write(array, tmp_path / name) for array, name in
             ((fixed, "fixed.nii.gz"), (moving, "moving.nii.gz"), ((fixed > 0).astype(np.uint8), "mask.nii.gz"))]
    pair = compare.Pair("p", compare.REAL, "1mm", paths[0], paths[1], paths[0], paths[1], paths[2], [17, 1002, 2035])
    scores = compare.score(pair, sitk.Transform(3, sitk.sitkIdentity))
    assert set(scores["dice"]) == {17, 1002, 2035} and math.isclose(scores["dice"][2035], 2 / 3)
    assert math.isclose(scores["mean_dice_cortical"], (1 + 2 / 3) / 2) and scores["mean_dice_subcortical"] == 1.0
    assert math.isclose(scores["mean_dice"], (2 + 2 / 3) / 3) and scores["fraction_nonpositive"] == 0.0
    assert scores["hd95_mm"][17] == 0.0 and scores["hd95_mm"][2035] > 0.0


def test_hd95_on_label_boxes_is_hd95_per_label():
    generator = np.random.default_rng(3)
    reference = np.zeros((20, 24, 28), np.int32)
    reference[2:9, 3:12, 4:20], reference[10:18, 5:20, 2:9], reference[12:16, 14:22, 15:26] = 4, 1030, 2011
    prediction = np.roll(reference, (1, -2, 3), axis=(0, 1, 2))
    prediction[generator.random(prediction.shape) < 0.02] = 0
    prediction[prediction == 2011] = 0  # in the reference only: nan
    labels = [4, 1030, 2011, 99]  # 99 in neither: left out
    spacing = (1.0, 1.2, 2.0)
    boxed = compare.hd95_in_boxes(reference, prediction, spacing, labels)
    assert boxed.keys() == {4, 1030, 2011} and math.isnan(boxed[2011]) and boxed[4] > 0
    expected = hd95_per_label(reference, prediction, spacing, labels)
    assert all(boxed[label] == expected[label] for label in (4, 1030))


def ok(dice: float, seconds: float) -> dict:
    return {"status": "ok", "mean_dice": dice, "seconds": seconds, "fraction_nonpositive": 0.0}


def run(affine: float, alone: float, default: float, none: float) -> dict:
    return {"affine-only": ok(affine, 5.0), "shmoareg-no-refine": ok(alone, 6.0), "shmoareg": ok(default, 9.0),
            "shmoareg-model-none": ok(none, 20.0)}


def verdicts(results: dict, groups: dict[str, str]) -> dict[str, str]:
    """Target name -> verdict of the targets table."""
    lines = compare.targets(compare.group_means(results, groups)).splitlines()[2:]
    return {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in lines}


GAIN = "network alone >= 0.67 of `--model none`'s Dice gain over affine"


def test_the_network_alone_is_measured_against_model_nones_gain_not_the_defaults():
    # (0.71 - 0.50) / (0.80 - 0.50) = 0.70 of --model none's gain; of the default's it would be 0.21 / 0.40 = 0.53
    seen = verdicts({"r1": run(0.50, 0.71, 0.90, 0.80)}, {"r1": compare.REAL})
    assert seen[GAIN] == "**holds**"
    seen = verdicts({"r1": run(0.50, 0.69, 0.90, 0.80)}, {"r1": compare.REAL})  # 0.63
    assert seen[GAIN] == "**does not hold**"


def test_an_incomplete_real_group_is_summarised_first_but_not_judged():
    groups = {"p1": "proxy synthetic 2mm", "r1": compare.REAL, "r2": compare.REAL}
    results = {"p1": run(0.6, 0.7, 0.8, 0.8), "r1": run(0.50, 0.71, 0.90, 0.80)}
    means = compare.group_means(results, groups)
    assert means[compare.REAL]["shmoareg"]["pairs"] == 1 and means[compare.REAL]["shmoareg"]["group_pairs"] == 2
    summary = compare.summary_table(means).splitlines()
    assert summary[2] == "| real-brain | affine-only | 1/2 | 0.500 | - | - | - | - | 0.0000 | 5.0 |"
    assert "| real-brain | shmoareg | 1/2 | 0.900 |" in summary[3] and summary[6].startswith("| proxy synthetic 2mm |")
    seen = verdicts(results, groups)
    assert seen[GAIN] == seen["default <= 0.65 x `--model none` wall time"] == "not measured"
    results["r2"] = run(0.50, 0.71, 0.90, 0.80)
    assert verdicts(results, groups)[GAIN] == "**holds**"


def test_pair_tables_lead_with_the_real_brains_and_split_their_dice():
    real = {**ok(0.6, 9.0), "dice": {17: 0.8, 1002: 0.4}, "mean_dice_cortical": 0.4, "mean_dice_subcortical": 0.8,
            "mean_hd95_mm": 3.0, "sdlogj": 0.1, "peak_memory_mb": 900.0}
    proxy = {**real, "dice": {1: 0.5, 2: 0.6, 3: 0.7}, "mean_dice_cortical": math.nan}
    results = {"mni-colin-1mm": {"shmoareg": proxy}, "oasis-11-12": {"shmoareg": real, "elastix": {
        "status": "not available", "reason": "not on PATH"}}}
    tables = compare.table(results, {"mni-colin-1mm": "proxy inter-subject 1mm", "oasis-11-12": compare.REAL})
    real_table, proxy_table = tables.split("\n\n")
    assert "| cortical Dice | subcortical Dice |" in real_table.splitlines()[0]
    assert "| oasis-11-12 | shmoareg | 0.600 | 0.400 | 0.800 | 3.00 |" in real_table
    assert "| mni-colin-1mm | shmoareg | 0.600 | 0.500 / 0.600 / 0.700 | 3.00 |" in proxy_table
    for table in (real_table, proxy_table):
        assert len({line.count(" | ") for line in table.splitlines()}) == 1  # as many cells on every line


def test_only_pairs_of_the_groups_run_can_be_chosen(stand_in_data: Path):
    pairs, missing = compare.real_pairs()
    assert [pair.name for pair in compare.chosen_pairs([pairs[0], pairs[1]], ["oasis-12-13"], [])] == ["oasis-12-13"]
    assert len(compare.chosen_pairs(pairs, None, [])) == 10
    with pytest.raises(SystemExit, match="no pair mni-colin-1mm"):
        compare.chosen_pairs(pairs, ["mni-colin-1mm"], [])
