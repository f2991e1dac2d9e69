"""Output folders never mix two runs, never overwrite an input, and hold one run at a time (issue 13)."""

from __future__ import annotations

import fcntl
import json
import os

import pytest
import SimpleITK as sitk

from shmoareg.cli import main
from shmoareg.outputs import STAGING_PREFIX
from shmoareg.protocol import COMPLETION_MARKER, FILES_KEY



def register(pair, capsys, *extra: str, moving: str = "moving.nii.gz") -> tuple[int, str]:
    code = main(["register", "--fixed", str(pair / "fixed.nii.gz"), "--moving", str(pair / moving),
                 "--output-dir", str(pair / "out"), "--model", "none", "--refine-steps", "2", "--no-affine",
                 "--progress", "none", *extra])
    return code, capsys.readouterr().err


def visible_files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_a_second_run_replaces_the_first_runs_files_as_a_set(pair, capsys):
    assert register(pair, capsys, "--moving-seg", str(pair / "seg.nii.gz"))[0] == 0
    (pair / "out" / "notes.txt").write_text("mine")  # not a run's file: kept
    assert register(pair, capsys)[0] == 0  # no segmentation this time
    out = pair / "out"
    listed = json.loads((out / COMPLETION_MARKER).read_text())[FILES_KEY]
    assert "warped_moving_seg.nii.gz" not in visible_files(out)
    assert visible_files(out) == set(listed) | {"notes.txt"}


@pytest.mark.parametrize("name", ["warped_moving.nii.gz", "jacobian.nii", "maps/level1_x_expert.nii.gz"])
def test_an_input_under_an_output_name_in_the_output_folder_is_refused_untouched(pair, capsys, name):
    target = pair / "out" / name
    target.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(pair / "moving.nii.gz")), str(target))
    before = target.read_bytes()
    code, err = register(pair, capsys, moving=f"out/{name}")
    assert code == 2 and "would write" in err and target.read_bytes() == before


def test_an_input_hard_linked_to_an_earlier_output_is_refused(pair, capsys):
    assert register(pair, capsys)[0] == 0
    os.link(pair / "out" / "warped_moving.nii.gz", pair / "linked.nii.gz")
    before = (pair / "linked.nii.gz").read_bytes()
    code, err = register(pair, capsys, moving="linked.nii.gz")
    assert code == 2 and "would write" in err and (pair / "linked.nii.gz").read_bytes() == before


def test_a_second_run_into_a_folder_in_use_is_refused(pair, capsys):
    (pair / "out").mkdir()
    held = os.open(pair / "out", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running registration holds it
    try:
        code, err = register(pair, capsys)
    finally:
        os.close(held)
    assert code == 2 and "another shmoareg run is writing" in err
    assert visible_files(pair / "out") == set()


def test_a_killed_runs_staging_folder_is_cleaned_by_the_next_run(pair, capsys):
    stale = pair / "out" / f"{STAGING_PREFIX}killed"
    stale.mkdir(parents=True)
    (stale / "transform.h5").write_text("half written")
    assert register(pair, capsys)[0] == 0
    assert not stale.exists()
    assert [p.name for p in (pair / "out").iterdir() if p.name.startswith(".")] == []
