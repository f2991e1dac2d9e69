"""Every bad input gives exit code 2, one line on stderr naming the problem, and no outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SMALL_GEOMETRY, run_cli
from phantoms import phantom_image, phantom_labels
from shmoareg.cli import main



def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def image_from(array: np.ndarray, spacing=(2.0, 2.0, 2.5), is_vector: bool = False) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    return image


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
    array = sitk.GetArrayFromImage(phantom_image(**SMALL_GEOMETRY))
    array[3, 4, 5] = value
    sitk.WriteImage(image_from(array), str(pair / "bad.nrrd"))
    assert_bad_input(*run(pair, capsys, fixed="bad.nrrd"), "NaN or infinite", "fixed image")


def test_segmentation_on_another_grid(pair, capsys):
    seg = sitk.Image([10, 10, 10], sitk.sitkUInt8) + 1
    sitk.WriteImage(seg, str(pair / "small_seg.nii.gz"))
    code, err = run(pair, capsys, "--moving-seg", str(pair / "small_seg.nii.gz"))
    assert_bad_input(code, err, "moving segmentation grid", "does not match", out_dir=pair / "out")


def test_empty_segmentation(pair, capsys):
    seg = sitk.Cast(phantom_labels(phantom_image(**SMALL_GEOMETRY)) * 0, sitk.sitkUInt8)
    sitk.WriteImage(seg, str(pair / "empty_seg.nii.gz"))
    assert_bad_input(*run(pair, capsys, "--fixed-seg", str(pair / "empty_seg.nii.gz")), "empty")


def test_no_overlap(pair, capsys):
    far = phantom_image(size=SMALL_GEOMETRY["size"], spacing=SMALL_GEOMETRY["spacing"], origin=(400.0, 0.0, 0.0))
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


# --- damaged NIfTI files (issue 13) ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_a_nifti_file_cut_short_is_refused(pair, capsys, name):
    sitk.WriteImage(sitk.ReadImage(str(pair / "moving.nii.gz")), str(pair / name))
    data = (pair / name).read_bytes()
    (pair / name).write_bytes(data[: len(data) * 2 // 3])
    assert_bad_input(*run(pair, capsys, moving=name), name, "copy the file again", out_dir=pair / "out")


def test_a_nifti_file_with_damaged_magic_bytes_is_refused(pair, capsys):
    sitk.WriteImage(sitk.ReadImage(str(pair / "moving.nii.gz")), str(pair / "magic.nii"))
    data = bytearray((pair / "magic.nii").read_bytes())
    data[344:348] = b"xx1\x00"  # ITK would read this as Analyze: origin and direction lost
    (pair / "magic.nii").write_bytes(bytes(data))
    assert_bad_input(*run(pair, capsys, moving="magic.nii"), "no valid NIfTI header", out_dir=pair / "out")


def test_summary_json_is_strict_json_when_a_distance_is_undefined(pair, capsys):
    """A label the moving segmentation lacks has no HD95: null in summary.json, never a bare NaN."""
    labels = phantom_labels(sitk.ReadImage(str(pair / "moving.nii.gz")))
    only_one = sitk.GetArrayFromImage(labels)
    only_one[only_one == 2] = 1
    sitk.WriteImage(image_like(only_one, labels), str(pair / "moving_seg.nii.gz"))
    code, _ = run(pair, capsys, "--fixed-seg", str(pair / "seg.nii.gz"), "--moving-seg", str(pair / "moving_seg.nii.gz"))
    assert code == 0
    text = (pair / "out" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in summary.json"))
    assert summary["metrics"]["hd95_mm"]["2"] is None


# --- small images (issue 13) ---------------------------------------------------------------------

def _random_pair(folder, size: tuple[int, int, int], spacing: float = 1.0) -> None:
    values = np.random.default_rng(0).random(size[::-1]).astype(np.float32)
    for name in ("small_fixed.nii.gz", "small_moving.nii.gz"):
        sitk.WriteImage(image_from(values, (spacing,) * 3), str(folder / name))


@pytest.mark.parametrize("size", [(3, 3, 3), (64, 64, 3)])
def test_images_below_the_minimum_size_are_refused(pair, capsys, size):
    _random_pair(pair, size)
    assert_bad_input(*run(pair, capsys, fixed="small_fixed.nii.gz", moving="small_moving.nii.gz"),
                     "at least 4 voxels", out_dir=pair / "out")


@pytest.mark.parametrize("size, spacing", [((4, 4, 4), 1.0), ((64, 64, 4), 1.0), ((16, 16, 16), 0.5)])
def test_small_images_at_the_minimum_size_register(pair, capsys, size, spacing):
    """The affine stage works on a finer grid than 4 mm when an image is only a few millimetres across."""
    _random_pair(pair, size, spacing)
    code, err = run(pair, capsys, fixed="small_fixed.nii.gz", moving="small_moving.nii.gz")
    assert code == 0, err
    assert (pair / "out" / "summary.json").is_file()


# --- option bounds (issue 13) ---------------------------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("--refine-steps", "1000000000", ("--refine-steps", "between 0 and")),
    ("--grid-spacing", "inf", ("--grid-spacing", "positive")),
    ("--grid-spacing", "nan", ("--grid-spacing", "positive")),
    ("--grid-spacing", "1000", ("fewer than 4 voxels", "--grid-spacing of at most")),
    ("--max-grid-voxels", "1", ("--max-grid-voxels", "at least 4096")),
])
def test_options_outside_a_meaningful_range_are_refused(pair, capsys, option, value, words):
    code, err = run(pair, capsys, option, value)
    assert_bad_input(code, err, *words, out_dir=pair / "out")


def test_itk_failing_to_allocate_an_image_is_out_of_memory():
    from shmoareg.errors import is_out_of_memory

    error = RuntimeError("Exception thrown in SimpleITK Resample: itkImportImageContainer.hxx:171: "
                         "Failed to allocate memory for image.")
    assert is_out_of_memory(error) and not is_out_of_memory(RuntimeError("division by zero"))


def test_landmarks_whose_labels_match_only_in_part_are_refused(pair, capsys):
    (pair / "f.csv").write_text("label,x,y,z\na,0,0,0\nb,1,1,1\n")
    (pair / "m.csv").write_text("label,x,y,z\na,0,0,0\nc,1,1,1\n")
    assert_bad_input(*run(pair, capsys, "--fixed-landmarks", str(pair / "f.csv"), "--moving-landmarks",
                          str(pair / "m.csv")), "b, c", "same labels", out_dir=pair / "out")


def test_a_mistyped_path_is_reported_before_torch_loads(tmp_path):
    """Fast failure: the inputs are checked before torch and the model load (a second or more)."""
    script = ("import sys; from shmoareg.cli import main; "
              f"code = main(['register', '--fixed', {str(tmp_path / 'typo.nii.gz')!r}, '--moving', 'x.nii.gz', "
              f"'--output-dir', {str(tmp_path / 'out')!r}, '--progress', 'none']); "
              "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["2", "False"]
    assert result.stderr.strip() == f"error: fixed image file not found: {tmp_path / 'typo.nii.gz'} (check the path)"


def test_an_unreadable_file_is_named_unreadable(pair, capsys, monkeypatch):
    """Root reads every file, so the permission is denied by a stand-in for ``os.access``."""
    unreadable = str(pair / "moving.nii.gz")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != unreadable and real_access(path, mode))
    assert_bad_input(*run(pair, capsys), "moving image file", "permission denied", "check its permissions",
                     out_dir=pair / "out")


def test_a_file_behind_a_locked_folder_is_not_called_missing(pair, capsys, monkeypatch):
    """A folder on the path that cannot be entered (``stat`` gives EACCES) was reported as "not found"."""
    locked = pair / "locked" / "moving.nii.gz"
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    code, err = run(pair, capsys, moving="locked/moving.nii.gz")
    assert_bad_input(code, err, "permission denied on a folder of its path", out_dir=pair / "out")
    assert "not found" not in err


def test_a_folder_given_as_an_image_is_named_a_folder(pair, capsys):
    (pair / "scans.nii.gz").mkdir()
    assert_bad_input(*run(pair, capsys, moving="scans.nii.gz"), "is a folder, not a file", out_dir=pair / "out")


def test_labels_beyond_int32_are_refused(pair, capsys):
    labels = sitk.Cast(phantom_labels(sitk.ReadImage(str(pair / "fixed.nii.gz"))), sitk.sitkUInt32)
    huge = sitk.GetArrayFromImage(labels)
    huge[huge == 2] = 3_000_000_000  # would wrap to a negative int32 label
    sitk.WriteImage(image_like(huge, labels), str(pair / "huge_seg.nrrd"))
    assert_bad_input(*run(pair, capsys, "--moving-seg", str(pair / "huge_seg.nrrd")), "3000000000",
                     "renumber", out_dir=pair / "out")


def test_a_sheared_direction_matrix_is_refused(pair, capsys):
    sheared = sitk.ReadImage(str(pair / "moving.nii.gz"))
    sheared.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(sheared, str(pair / "sheared.mha"))
    assert_bad_input(*run(pair, capsys, moving="sheared.mha"), "not perpendicular unit vectors",
                     out_dir=pair / "out")


# --- command-line messages (issue 13) -------------------------------------------------------------

def test_a_usage_error_is_one_line_and_a_json_event(tmp_path):
    result = run_cli("register", "--fixed", "f.nii.gz", "--refine-steps", "many", "--progress", "json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: argument --refine-steps: invalid int value: 'many' (see shmoareg register --help)"]
    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event["event"] == "error" and event["exit_code"] == 2 and "--refine-steps" in event["message"]


def test_a_file_name_that_is_not_utf8_is_refused(pair):
    name = os.fsdecode(b"moving-\xff.nii.gz")  # what Python makes of a Latin-1 file name on a UTF-8 system
    (pair / name).write_bytes((pair / "moving.nii.gz").read_bytes())  # ITK aborted (exit 134) on it
    result = run_cli("register", "--fixed", str(pair / "fixed.nii.gz"), "--moving", str(pair / name),
                     "--output-dir", str(pair / "out"), "--progress", "none")
    assert result.returncode == 2 and "not valid UTF-8" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_negative_window_in_exponent_notation_is_a_number_not_an_option():
    from shmoareg.cli import build_parser

    args = build_parser().parse_args(["register", "--fixed", "f", "--moving", "m", "--output-dir", "o",
                                      "--window", "-1e3", "1e3"])
    assert args.window == [-1000.0, 1000.0]


def test_a_singular_direction_is_named_not_shown_as_a_matrix_row(pair, capsys):
    sitk.WriteImage(sitk.ReadImage(str(pair / "moving.nii.gz")), str(pair / "singular.mha"))
    header = (pair / "singular.mha").read_bytes()
    (pair / "singular.mha").write_bytes(header.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                                       b"TransformMatrix = 0 0 0 0 0 0 0 0 0"))
    code, err = run(pair, capsys, moving="singular.mha")
    assert_bad_input(code, err, "cannot read", "determinant is 0", out_dir=pair / "out")
    assert not err.strip().endswith("(0 0 0)")
