"""Every bad input gives exit code 2, one line on stderr naming the problem, and no outputs."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import phantom_image, phantom_labels
from shmoareg.cli import main

GEOMETRY = dict(size=(24, 22, 20), spacing=(2.0, 2.0, 2.5), origin=(-24.0, -22.0, -24.0))


def image_from(array: np.ndarray, spacing=(2.0, 2.0, 2.5), is_vector: bool = False) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    return image


@pytest.fixture
def pair(tmp_path):
    fixed = phantom_image(**GEOMETRY)
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(fixed, str(tmp_path / "moving.nii.gz"))
    sitk.WriteImage(phantom_labels(fixed), str(tmp_path / "seg.nii.gz"))
    return tmp_path


def run(pair, capsys, *extra: str, fixed: str = "fixed.nii.gz", moving: str = "moving.nii.gz") -> tuple[int, str]:
    code = main(["register", "--fixed", str(pair / fixed), "--moving", str(pair / moving),
                 "--output-dir", str(pair / "out"), "--refine-steps", "2", "--progress", "none", *extra])
    return code, capsys.readouterr().err


def assert_bad_input(code: int, err: str, *words: str, out_dir=None) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
    if out_dir is not None and out_dir.exists():
        assert not [p for p in out_dir.iterdir() if not p.name.startswith(".shmoareg-write")]


def test_a_good_pair_runs(pair, capsys):
    code, _ = run(pair, capsys, "--no-affine")
    assert code == 0 and (pair / "out" / "summary.json").is_file()


def test_missing_file(pair, capsys):
    assert_bad_input(*run(pair, capsys, moving="nowhere.nii.gz"), "not found", "nowhere.nii.gz",
                     out_dir=pair / "out")


def test_unreadable_file(pair, capsys):
    (pair / "junk.nii.gz").write_bytes(b"this is not an image")
    assert_bad_input(*run(pair, capsys, fixed="junk.nii.gz"), "cannot read", "junk.nii.gz")


@pytest.mark.parametrize("name,image,word", [
    ("flat.nii.gz", image_from(np.random.default_rng(0).random((20, 20)).astype(np.float32)), "2D"),
    ("four.nii.gz", image_from(np.random.default_rng(0).random((3, 8, 8, 8)).astype(np.float32),
                               (1.0, 1.0, 1.0, 1.0)), "4D"),
    ("vector.nii.gz", sitk.Compose([image_from(np.random.default_rng(i).random((8, 8, 8)).astype(np.float32))
                                    for i in range(3)]), "components"),
    ("zeros.nii.gz", image_from(np.zeros((8, 8, 8), np.float32)), "constant"),
    ("constant.nii.gz", image_from(np.full((8, 8, 8), 7.0, np.float32)), "constant"),
])
def test_wrong_kind_of_image(pair, capsys, name, image, word):
    sitk.WriteImage(image, str(pair / name))
    assert_bad_input(*run(pair, capsys, moving=name), word, "moving image", out_dir=pair / "out")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_voxels(pair, capsys, value):
    # NRRD keeps non-finite values; the NIfTI reader of ITK silently sets them to 0.
    array = sitk.GetArrayFromImage(phantom_image(**GEOMETRY))
    array[3, 4, 5] = value
    sitk.WriteImage(image_from(array), str(pair / "bad.nrrd"))
    assert_bad_input(*run(pair, capsys, fixed="bad.nrrd"), "NaN or infinite", "fixed image")


def test_segmentation_on_another_grid(pair, capsys):
    seg = sitk.Image([10, 10, 10], sitk.sitkUInt8) + 1
    sitk.WriteImage(seg, str(pair / "small_seg.nii.gz"))
    code, err = run(pair, capsys, "--moving-seg", str(pair / "small_seg.nii.gz"))
    assert_bad_input(code, err, "moving segmentation grid", "does not match", out_dir=pair / "out")


def test_empty_segmentation(pair, capsys):
    seg = sitk.Cast(phantom_labels(phantom_image(**GEOMETRY)) * 0, sitk.sitkUInt8)
    sitk.WriteImage(seg, str(pair / "empty_seg.nii.gz"))
    assert_bad_input(*run(pair, capsys, "--fixed-seg", str(pair / "empty_seg.nii.gz")), "empty")


def test_no_overlap(pair, capsys):
    far = phantom_image(size=GEOMETRY["size"], spacing=GEOMETRY["spacing"], origin=(400.0, 0.0, 0.0))
    sitk.WriteImage(far, str(pair / "far.nii.gz"))
    assert_bad_input(*run(pair, capsys, "--no-affine", moving="far.nii.gz"), "overlap", out_dir=pair / "out")


def test_output_folder_not_writable(pair, capsys):
    (pair / "a_file").write_text("x")
    code = main(["register", "--fixed", str(pair / "fixed.nii.gz"), "--moving", str(pair / "moving.nii.gz"),
                 "--output-dir", str(pair / "a_file" / "out"), "--progress", "none"])
    assert_bad_input(code, capsys.readouterr().err, "not writable")


def test_unknown_model(pair, capsys):
    assert_bad_input(*run(pair, capsys, "--model", "magic"), "model", "magic")


@pytest.mark.parametrize("option", ["--max-grid-voxels", "--network-max-voxels"])
def test_a_voxel_budget_below_one(pair, capsys, option):
    assert_bad_input(*run(pair, capsys, option, "0"), option, "positive", out_dir=pair / "out")


def test_cuda_without_gpu(pair, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert_bad_input(*run(pair, capsys, "--device", "cuda"), "--device cuda", "--device cpu")


def test_mismatched_landmarks(pair, capsys):
    (pair / "f.csv").write_text("x,y,z\n0,0,0\n1,1,1\n")
    (pair / "m.csv").write_text("x,y,z\n0,0,0\n")
    assert_bad_input(*run(pair, capsys, "--fixed-landmarks", str(pair / "f.csv"), "--moving-landmarks",
                          str(pair / "m.csv")), "landmark")


def test_input_files_are_never_modified(pair, capsys):
    before = {p.name: p.read_bytes() for p in pair.iterdir() if p.is_file()}
    run(pair, capsys, "--no-affine")
    assert {p.name: p.read_bytes() for p in pair.iterdir() if p.is_file()} == before
