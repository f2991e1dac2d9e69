"""``evaluate``: a Learn2Reg-style dataset.json of tiny synthetic NIfTI pairs gives results.csv and
results.json whose numbers are those of each pair's summary.json; a bad pair is recorded, not fatal."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.synthetic import synthetic_pair, to_sitk
from shmoareg.training.commands import add_evaluate_parser
from shmoareg.training.config import TrainingConfig
from shmoareg.training.data import TrainingData
from shmoareg.training.datasets import read_dataset
from shmoareg.training.evaluate import COLUMNS
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

SPACING = (1.5, 1.5, 2.0)


def write_dataset(root) -> None:
    """Two synthetic pairs (labels 0..3) and a third whose moving image is constant."""
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    training, pairs = [], []
    for index in range(2):
        pair = synthetic_pair((24, 32, 28), seed=10 + index, num_labels=4, max_displacement=3.0)
        for role, image, labels in (("F", pair.fixed_image, pair.fixed_labels),
                                    ("M", pair.moving_image, pair.moving_labels)):
            name = f"case{index}{role}_0000.nii.gz"
            sitk.WriteImage(to_sitk(image * 1000, spacing=SPACING), str(root / "imagesTr" / name))
            sitk.WriteImage(to_sitk(labels, spacing=SPACING), str(root / "labelsTr" / name))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        pairs.append({"fixed": f"./imagesTr/case{index}F_0000.nii.gz",
                      "moving": f"./imagesTr/case{index}M_0000.nii.gz"})
    flat = sitk.Image(28, 32, 24, sitk.sitkFloat32) + 5.0
    sitk.WriteImage(flat, str(root / "imagesTr" / "flat_0000.nii.gz"))
    pairs.append({"fixed": "./imagesTr/case0F_0000.nii.gz", "moving": "./imagesTr/flat_0000.nii.gz"})
    content = {"name": "tiny", "training": training, "registration_val": pairs, "pairings": "paired"}
    (root / "dataset.json").write_text(json.dumps(content))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Run ``evaluate`` through its command-line function: (dataset folder, output folder, error)."""
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root)
    subparsers = argparse.ArgumentParser().add_subparsers()
    add_evaluate_parser(subparsers)
    args = subparsers.choices["evaluate"].parse_args(
        ["--dataset", str(root), "--model", "none", "--output-dir", str(root / "out"), "--refine-steps", "20",
         "--device", "cpu", "--no-affine"])
    with pytest.raises(InputError) as error:
        args.run(args)
    return root, root / "out", str(error.value)


def test_results_match_each_pairs_summary(evaluated):
    _, output, error = evaluated
    assert "1 of 3 pairs failed" in error
    with open(output / "results.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == list(COLUMNS) + ["dice_1", "dice_2", "dice_3"]
    assert [row["pair"] for row in rows] == ["case0F_0000_case0M_0000", "case1F_0000_case1M_0000",
                                            "case0F_0000_flat_0000"]
    results = json.loads((output / "results.json").read_text())
    assert (results["count"], results["failed"], results["split"]) == (3, 1, "registration_val")
    assert (results["model"], results["model_details"]) == ("none", None)
    for row, record in zip(rows[:2], results["pairs"][:2]):
        metrics = json.loads((output / "pairs" / row["pair"] / "summary.json").read_text())
        summary_metrics, seconds = metrics["metrics"], metrics["seconds"]["total"]
        for column in ("mean_dice_before", "mean_dice", "mean_hd95_mm", "sdlogj", "fraction_nonpositive"):
            assert float(row[column]) == pytest.approx(summary_metrics[column], abs=1e-9), column
            assert record[column] == pytest.approx(summary_metrics[column], abs=1e-9)
        assert float(row["seconds"]) == seconds and row["error"] == ""
        for label in ("1", "2", "3"):
            assert float(row[f"dice_{label}"]) == pytest.approx(summary_metrics["dice"][label], abs=1e-9)
        assert record["hd95_mm"] == pytest.approx(summary_metrics["hd95_mm"], nan_ok=True)
        assert float(row["mean_dice"]) > float(row["mean_dice_before"])
    assert "constant" in rows[2]["error"] and rows[2]["mean_dice"] == ""
    for column in ("mean_dice", "sdlogj", "seconds"):
        assert results["mean"][column] == pytest.approx(np.mean([float(row[column]) for row in rows[:2]]))
    per_label = results["mean_dice_per_label"]
    assert per_label["2"] == pytest.approx(np.mean([float(row["dice_2"]) for row in rows[:2]]))
    assert not any(isinstance(v, float) and math.isnan(v) for v in results["mean"].values())


def test_dataset_json_problems_are_clear(evaluated, tmp_path):
    root, _, _ = evaluated
    index = read_dataset(root / "dataset.json")
    assert len(index.images) == 4 and len(index.labels) == 4 and len(index.pairs["registration_val"]) == 3
    assert index.pairs["registration_val"][0].moving_label == root / "labelsTr" / "case0M_0000.nii.gz"
    broken = json.loads((root / "dataset.json").read_text())
    broken["registration_val"][0]["moving"] = "./imagesTr/missing.nii.gz"
    (root / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match="broken.json lists 1 files that do not exist, e.g. .*missing.nii.gz"):
        read_dataset(root / "broken.json")
    from shmoareg.training.evaluate import evaluate

    with pytest.raises(InputError, match="lists no registration_test pairs; it lists registration_val"):
        evaluate(root, "none", tmp_path / "out", split="registration_test")
    with pytest.raises(InputError, match="dataset not found"):
        read_dataset(tmp_path / "nowhere")


def test_dataset_json_feeds_training_with_its_validation_pairs(evaluated):
    root, _, _ = evaluated
    spec = TrainingConfig.from_dict({"data": {"source": "dataset", "path": str(root / "dataset.json"),
                                              "shape": [32, 32, 32], "spacing": 1.5}}).data
    data = TrainingData(spec, seed=0)
    first = data.validation(1)[0]
    assert first.fixed.shape == (1, 1, 32, 32, 32) and first.moving_labels is not None
    listed = read_dataset(root).pairs["registration_val"][0]
    fixed = sitk.GetArrayFromImage(sitk.ReadImage(str(listed.fixed_label)))
    assert set(first.fixed_labels.unique().tolist()) == set(np.unique(fixed).tolist())
    batch = data.batch(0, 2)
    assert batch.fixed.shape == (2, 1, 32, 32, 32) and batch.fixed_labels is not None
