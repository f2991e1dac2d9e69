"""``batch``: a CSV table of tiny pairs registered into one folder per pair. A failing pair is recorded with
its exit code while the others run; a rerun skips finished pairs (untouched), retries failed ones and
cleans a killed run's staging folder; a bad table is refused whole before anything runs; two torchrun
ranks register each pair exactly once; the report passes a headless Chromium check."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SMALL_GEOMETRY
from phantoms import phantom_image, phantom_labels
from shmoareg import cli
from shmoareg.cohort import runner
from shmoareg.cohort.results import COLUMNS
from shmoareg.outputs import STAGING_PREFIX
from shmoareg.protocol import (COMPLETION_MARKER, OVERVIEW_FILE, PAIR_PAGE_FILE, REPORT_FILE, RESULTS_CSV_FILE,
                               RESULTS_JSON_FILE, THUMBNAIL_FILE, TRANSFORM_FILE, ExitCode)
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

OPTIONS = ["--model", "none", "--refine-steps", "5", "--no-affine", "--device", "cpu"]
HEADER = "id,fixed,moving,fixed_seg,moving_seg,fixed_landmarks,moving_landmarks\n"
PAIRS = ("shifted,images/fixed.nii.gz,images/moving.nii.gz,images/fixed_seg.nii.gz,images/moving_seg.nii.gz,"
         "images/fixed.csv,images/moving.csv\n"
         "same,images/fixed.nii.gz,images/fixed.nii.gz,,,,\n"
         "flat,images/fixed.nii.gz,images/flat.nii.gz,,,,\n"
         "crash,images/moving.nii.gz,images/fixed.nii.gz,,,,\n")
IDS = ["shifted", "same", "flat", "crash"]


def write_images(folder: Path) -> None:
    """A phantom, the phantom moved 3 mm along x, their label maps and landmarks, and a constant image."""
    folder.mkdir(parents=True)
    moved = sitk.TranslationTransform(3, (3.0, 0.0, 0.0))
    fixed, moving = phantom_image(**SMALL_GEOMETRY), phantom_image(**SMALL_GEOMETRY, moved_by=moved)
    for name, image in (("fixed", fixed), ("moving", moving)):
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
        sitk.WriteImage(phantom_labels(image), str(folder / f"{name}_seg.nii.gz"))
    (folder / "fixed.csv").write_text("label,x,y,z\nA,0,0,0\nB,-10,5,0\n")
    (folder / "moving.csv").write_text("label,x,y,z\nA,3,0,0\nB,-7,5,0\n")
    sitk.WriteImage(fixed * 0 + 5.0, str(folder / "flat.nii.gz"))


def run_batch(*args: str) -> tuple[int, str, str]:
    """``shmoareg batch`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["batch", *args])
    return code, out.getvalue(), err.getvalue()


def read_results(folder: Path) -> tuple[list[dict], dict]:
    with open(folder / RESULTS_CSV_FILE) as stream:
        table = list(csv.DictReader(stream))
    return table, json.loads((folder / RESULTS_JSON_FILE).read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A first run (pair ``crash`` made to crash), a killed re-registration of ``same``, then a rerun."""
    root = tmp_path_factory.mktemp("batch")
    write_images(root / "images")
    (root / "pairs.csv").write_text(HEADER + PAIRS)
    output = root / "out"
    register = runner.register

    def crashing(request, *args, **kwargs):
        if request.output_dir.name == "crash":
            raise ZeroDivisionError("boom")
        return register(request, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "register", crashing)
        first = run_batch("--pairs", str(root / "pairs.csv"), "--output-dir", str(output), *OPTIONS,
                          "--progress", "none")
    first_results = read_results(output)
    summaries = {name: json.loads((output / name / COMPLETION_MARKER).read_text()) for name in ("shifted", "same")}
    mtimes = {name: (output / name / COMPLETION_MARKER).stat().st_mtime_ns for name in ("shifted", "same")}
    # As if a run re-registering "same" was killed before it published: no summary, a staging folder left.
    (output / "same" / COMPLETION_MARKER).unlink()
    (output / "same" / f"{STAGING_PREFIX}killed").mkdir()
    (output / "same" / f"{STAGING_PREFIX}killed" / TRANSFORM_FILE).write_text("partial")
    second = run_batch("--pairs", str(root / "pairs.csv"), "--output-dir", str(output), *OPTIONS, "--progress", "json")
    return {"root": root, "output": output, "first": first, "first_results": first_results, "mtimes": mtimes,
            "summaries": summaries,
            "second": second, "second_results": read_results(output)}


def test_a_failing_pair_is_recorded_with_its_exit_code_and_the_others_run(runs):
    code, _, err = runs["first"]
    table, results = runs["first_results"]
    assert code == ExitCode.ERROR  # the failed pairs' codes differ (2 and 1)
    assert len(err.strip().splitlines()) == 1 and "2 of 4 pairs failed" in err
    assert list(table[0]) == list(COLUMNS) and [row["id"] for row in table] == IDS
    assert [row["status"] for row in table] == ["done", "done", "failed", "failed"]
    assert [int(row["exit_code"]) for row in table] == [0, 0, ExitCode.BAD_INPUT, ExitCode.ERROR]
    assert "constant" in table[2]["message"]
    assert "ZeroDivisionError: boom" in table[3]["message"] and "traceback in" in table[3]["message"]
    assert (results["count"], results["done"], results["skipped"], results["failed"]) == (4, 2, 0, 2)
    for row in table[:2]:
        folder = runs["output"] / row["id"]
        for name in (TRANSFORM_FILE, COMPLETION_MARKER, OVERVIEW_FILE, THUMBNAIL_FILE, PAIR_PAGE_FILE):
            assert (folder / name).is_file(), (row["id"], name)
        summary = runs["summaries"][row["id"]]
        assert float(row["seconds"]) == summary["seconds"]["total"]
        assert float(row["sdlogj"]) == pytest.approx(summary["metrics"]["sdlogj"], abs=1e-12)
    shifted = runs["summaries"]["shifted"]["metrics"]
    assert float(table[0]["mean_dice"]) == pytest.approx(shifted["mean_dice"], abs=1e-12)
    assert float(table[0]["tre_before_mm"]) == pytest.approx(3.0)  # the landmarks are 3 mm apart
    assert table[1]["mean_dice"] == "" and table[1]["tre_mm"] == ""  # no segmentation, no landmarks
    statistics = results["statistics"]
    assert statistics["seconds"]["count"] == 2
    assert statistics["seconds"]["mean"] == pytest.approx(np.mean([float(row["seconds"]) for row in table[:2]]))
    assert "mean_dice" in statistics and statistics["mean_dice"]["count"] == 1
    assert "network_share" not in statistics  # --model none


def test_a_rerun_skips_finished_pairs_retries_failed_ones_and_cleans_a_killed_run(runs):
    code, out, err = runs["second"]
    table, results = runs["second_results"]
    assert [row["status"] for row in table] == ["skipped", "done", "failed", "done"]
    assert code == ExitCode.BAD_INPUT and "1 of 4 pairs failed" in err
    assert (runs["output"] / "shifted" / COMPLETION_MARKER).stat().st_mtime_ns == runs["mtimes"]["shifted"]
    assert (runs["output"] / "same" / COMPLETION_MARKER).stat().st_mtime_ns != runs["mtimes"]["same"]
    assert not list((runs["output"] / "same").glob(STAGING_PREFIX + "*"))
    assert (runs["output"] / "crash" / THUMBNAIL_FILE).is_file()
    assert table[0]["seconds"] == runs["first_results"][0][0]["seconds"]  # the earlier run's numbers
    events = [json.loads(line) for line in out.splitlines()]
    pair_events = [e["message"] for e in events if e["stage"] == "pairs" and " of 4)" in e["message"]]
    assert pair_events == ["shifted skipped (1 of 4)", "same done (2 of 4)", "flat failed (3 of 4)",
                           "crash done (4 of 4)"]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == ExitCode.BAD_INPUT
    assert not list(runs["output"].glob(STAGING_PREFIX + "*"))


def test_a_bad_table_is_refused_whole_before_anything_runs(tmp_path):
    write_images(tmp_path / "images")
    (tmp_path / "pairs.csv").write_text(
        HEADER
        + "ok,images/fixed.nii.gz,images/moving.nii.gz,,,,\n"
        + "OK,images/fixed.nii.gz,images/moving.nii.gz,,,,\n"  # the same folder on a case-insensitive disk
        + "../up,images/fixed.nii.gz,images/moving.nii.gz,,,,\n"
        + "report.html,images/fixed.nii.gz,images/moving.nii.gz,,,,\n"
        + "gone,images/fixed.nii.gz,images/missing.nii.gz,,,,\n"
        + "half,images/fixed.nii.gz,images/moving.nii.gz,,,images/fixed.csv,\n"
        + ",images/fixed.nii.gz,images/moving.nii.gz,,,,\n"
        + "short,images/fixed.nii.gz\n"
        + "nofixed,,images/moving.nii.gz,,,,\n")
    code, _, err = run_batch("--pairs", str(tmp_path / "pairs.csv"), "--output-dir", str(tmp_path / "out"), *OPTIONS,
                             "--progress", "none")
    assert code == ExitCode.BAD_INPUT and len(err.strip().splitlines()) == 1
    for problem in ("has 8 problems", "line 3: id 'OK' repeats the id of line 2",
                    "line 4: id '../up' is not a safe folder name", "line 5: id 'report.html' is the name of one",
                    f"line 6: moving image file not found: {tmp_path / 'images' / 'missing.nii.gz'}",
                    "line 7: give both fixed_landmarks and moving_landmarks", "line 8 has no id",
                    "line 9 has 2 fields where the header has 7", "line 10: no fixed image (fixed is empty)"):
        assert problem in err, problem
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, problems", [
    ("id,fixed,moving_image\na,images/fixed.nii.gz,images/moving.nii.gz\n",
     ["has 2 problems", "lacks the column moving (its header: id, fixed, moving_image)", "unknown column moving_image"]),
    (HEADER, ["it lists no pairs"]),
    ("\n\n", ["is empty"]),
])
def test_table_shapes_are_checked(tmp_path, content, problems):
    write_images(tmp_path / "images")
    (tmp_path / "pairs.csv").write_text(content)
    code, _, err = run_batch("--pairs", str(tmp_path / "pairs.csv"), "--output-dir", str(tmp_path / "out"), *OPTIONS)
    assert code == ExitCode.BAD_INPUT
    for problem in problems:
        assert problem in err, problem


def test_batch_takes_every_option_of_register_but_its_files():
    subparsers = next(action for action in cli.build_parser()._actions if action.dest == "command")
    declared = {command: {action.dest: (action.option_strings, action.default, action.choices)
                          for action in subparsers.choices[command]._actions} for command in ("register", "batch")}
    files = {"fixed", "moving", "fixed_seg", "moving_seg", "fixed_landmarks", "moving_landmarks"}
    assert set(declared["batch"]) - {"pairs"} == set(declared["register"]) - files
    assert all(declared["batch"][name] == declared["register"][name] for name in set(declared["register"]) - files)


def test_two_torchrun_ranks_register_each_pair_exactly_once(tmp_path):
    write_images(tmp_path / "images")
    (tmp_path / "pairs.csv").write_text(HEADER + "".join(f"p{index},images/fixed.nii.gz,images/moving.nii.gz,,,,\n"
                                                         for index in range(3)))
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "shmoareg",
         "batch", "--pairs", str(tmp_path / "pairs.csv"), "--output-dir", str(tmp_path / "out"), *OPTIONS,
         "--progress", "json"], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    table, results = read_results(tmp_path / "out")
    assert [(row["id"], row["status"], row["rank"]) for row in table] == [("p0", "done", "0"), ("p1", "done", "1"),
                                                                          ("p2", "done", "0")]
    for row in table:
        summary = json.loads((tmp_path / "out" / row["id"] / COMPLETION_MARKER).read_text())
        assert summary["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    events = [json.loads(line) for line in launched.stdout.splitlines() if line.startswith("{")]
    assert [e["message"] for e in events if "rank 0 of 2" in e["message"]] == [
        "p0 done (1 of 2 on rank 0 of 2)", "p2 done (2 of 2 on rank 0 of 2)"]  # only rank 0 reports
    assert events[-1]["event"] == "done" and set(events[-1]["outputs"]) == {REPORT_FILE, RESULTS_CSV_FILE,
                                                                            RESULTS_JSON_FILE}
    assert results["done"] == 3


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(page: Path, profile: Path) -> tuple[dict, list[str]]:
    """Load ``page?selftest=1`` in headless Chromium: (the page's self-test record, console lines on stderr)."""
    shown = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
         f"{page.as_uri()}?selftest=1"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    record = shown.stdout.split('<pre id="selftest">', 1)[1].split("</pre>", 1)[0]
    return json.loads(html.unescape(record)), [
        line for line in shown.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make browser` installs Debian's)")
def test_the_report_works_in_a_browser(runs, tmp_path):
    _, results = runs["second_results"]
    record, console = open_in_chromium(runs["output"] / REPORT_FILE, tmp_path / "profile")
    assert console == [] and record["errors"] == []
    assert record["rows"] == record["pairs"] == 4 and record["original"] == IDS
    assert record["sorts"]["id"] == {"ascending": sorted(IDS), "descending": sorted(IDS, reverse=True)}
    # Sorted by seconds both ways, the pair without a time last; pairs with equal times may come in either order.
    seconds = {row["id"]: row["seconds"] for row in results["pairs"]}
    for direction, reverse in (("ascending", False), ("descending", True)):
        order = record["sorts"]["seconds"][direction]
        assert sorted(order) == sorted(IDS) and order[-1] == "flat" and seconds["flat"] is None
        timed = [seconds[name] for name in order[:-1]]
        assert timed == sorted(timed, reverse=reverse), (direction, order, seconds)
    finished = [row["id"] for row in results["pairs"] if row["status"] != "failed"]
    assert sorted(image["src"] for image in record["images"]) == sorted(f"{name}/{THUMBNAIL_FILE}" for name in finished)
    assert all(image["loaded"] for image in record["images"])
    # The check can fail: a report whose picture is missing is caught.
    broken = tmp_path / "broken"
    shutil.copytree(runs["output"], broken)
    (broken / "same" / THUMBNAIL_FILE).unlink()
    record, _ = open_in_chromium(broken / REPORT_FILE, tmp_path / "profile")
    assert [image["src"] for image in record["images"] if not image["loaded"]] == [f"same/{THUMBNAIL_FILE}"]
    assert len(record["errors"]) == 1 and THUMBNAIL_FILE in record["errors"][0]
