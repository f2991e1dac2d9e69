"""NIfTI integrity before ITK reads a file (issue 13), with zlib inflating gzip members directly (issue 24)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from shmoareg.errors import InputError
from shmoareg.nifti_check import check_nifti


@pytest.fixture
def plain(tmp_path):
    """An uncompressed NIfTI file's bytes."""
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4000, dtype=np.float32).reshape(10, 20, 20)),
                    str(tmp_path / "image.nii"))
    return (tmp_path / "image.nii").read_bytes()


def test_a_whole_gzip_file_and_one_of_two_members_with_zero_padding_pass(tmp_path, plain):
    (tmp_path / "one.nii.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(plain[:1000]) + gzip.compress(plain[1000:]) + bytes(16))
    for name in ("one.nii.gz", "two.nii.gz"):
        check_nifti(tmp_path / name, "fixed image")
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))).ravel()[-1] == 3999


@pytest.mark.parametrize("damage", ["cut", "flipped", "garbage after"])
def test_damaged_gzip_data_is_refused_in_one_line(tmp_path, plain, damage):
    data = bytearray(gzip.compress(plain))
    if damage == "cut":
        data = data[:-20]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"not a gzip member"
    (tmp_path / "bad.nii.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="moving image file .*bad.nii.gz.*(cut short|corrupt).*copy the file again"):
        check_nifti(tmp_path / "bad.nii.gz", "moving image")


def test_a_gzip_file_shorter_than_its_header_promises_is_refused(tmp_path, plain):
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(plain[:-400]))
    with pytest.raises(InputError, match="cut short, holding 15952 of the 16352 bytes"):
        check_nifti(tmp_path / "short.nii.gz", "moving image")
