"""A full disk is reported as such (exit 4, one line), before writing when it can be foreseen (issue 13)."""

from __future__ import annotations

import shutil
import subprocess
from collections import namedtuple

import pytest
import SimpleITK as sitk

from phantoms import phantom_image
from shmoareg import outputs
from shmoareg.cli import main
from shmoareg.errors import NoSpace
from shmoareg.outputs import StagedOutputs
from shmoareg.protocol import ExitCode

Usage = namedtuple("Usage", "total used free")


def register(pair, output, capsys) -> tuple[int, str]:
    code = main(["register", "--fixed", str(pair / "fixed.nii.gz"), "--moving", str(pair / "moving.nii.gz"),
                 "--output-dir", str(output), "--model", "none", "--refine-steps", "2", "--progress", "none"])
    return code, capsys.readouterr().err


def test_a_disk_too_full_for_the_outputs_is_reported_before_writing(pair, capsys, monkeypatch):
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: Usage(10 ** 9, 10 ** 9 - 1000, 1000))
    code, err = register(pair, pair / "out", capsys)
    assert code == ExitCode.NO_SPACE == 4
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: no space left on the disk of")
    assert list((pair / "out").iterdir()) == []


def test_a_nifti_output_cut_short_is_a_full_disk(tmp_path):
    """ITK's NIfTI writer reports nothing when the disk fills up mid-file; the staged file is checked."""
    staged = StagedOutputs(tmp_path)
    image = sitk.Image(16, 16, 16, sitk.sitkFloat32)
    sitk.WriteImage(image, str(staged.path("jacobian.nii")), False)
    data = staged.path("jacobian.nii").read_bytes()
    staged.path("jacobian.nii").write_bytes(data[:1000])
    with pytest.raises(NoSpace, match="jacobian.nii was cut short"):
        staged.check_written()
    assert not staged.staging.exists()


def test_a_file_checked_where_it_was_written_is_not_read_again(tmp_path):
    """The warped image is checked by the thread that wrote it; a cut-short file fails that check with the full-disk
    error, and check_written does not read a checked file a second time."""
    staged = StagedOutputs(tmp_path)
    sitk.WriteImage(sitk.Image(16, 16, 16, sitk.sitkFloat32), str(staged.path("warped.nii.gz")))
    staged.check_file("warped.nii.gz")
    staged.path("warped.nii.gz").write_bytes(staged.path("warped.nii.gz").read_bytes()[:100])
    staged.check_written()  # checked once already: not read again
    with pytest.raises(NoSpace, match="warped.nii.gz was cut short"):
        staged.check_file("warped.nii.gz")
    assert staged.staging.exists()  # the caller's error path removes it


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root; skipped where it cannot be mounted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_disk_that_fills_up_while_writing_is_reported_and_cleaned(pair, small_disk, capfd, monkeypatch):
    """The space check is bypassed, so the writers themselves meet the full disk (ITK, HDF5, numpy)."""
    monkeypatch.setattr(StagedOutputs, "ensure_space", lambda self, *voxels: None)
    big = phantom_image(size=(120, 110, 100), spacing=(1.0, 1.0, 1.0), origin=(-60.0, -55.0, -50.0))
    sitk.WriteImage(big, str(pair / "fixed.nii.gz"))
    sitk.WriteImage(big, str(pair / "moving.nii.gz"))
    code, err = register(pair, small_disk / "out", capfd)  # capfd: HDF5 prints its error stack to fd 2 itself
    assert code == ExitCode.NO_SPACE
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: no space left on the disk of")
    assert list((small_disk / "out").iterdir()) == []
