"""The command-line protocol the Slicer module relies on: JSON progress lines, exit codes, cancel."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import SimpleITK as sitk

from conftest import run_cli
from phantoms import phantom_image
from shmoareg import cli
from shmoareg.errors import is_out_of_memory
from shmoareg.protocol import ExitCode

GEOMETRY = dict(size=(32, 30, 28), spacing=(1.8, 1.8, 2.0), origin=(-28.0, -26.0, -27.0))


@pytest.fixture
def pair(tmp_path):
    sitk.WriteImage(phantom_image(**GEOMETRY), str(tmp_path / "fixed.nii.gz"))
    moved = sitk.TranslationTransform(3, (2.0, 1.0, -1.5))
    sitk.WriteImage(phantom_image(**GEOMETRY, moved_by=moved), str(tmp_path / "moving.nii.gz"))
    return tmp_path


def register_args(pair, *extra: str) -> list[str]:
    return ["register", "--fixed", str(pair / "fixed.nii.gz"), "--moving", str(pair / "moving.nii.gz"),
            "--output-dir", str(pair / "out"), "--device", "cpu", *extra]


def test_json_progress_lines_then_done(pair):
    result = run_cli(*register_args(pair, "--progress", "json", "--refine-steps", "20"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [r for r in records if r["event"] == "progress"]
    fractions = [r["fraction"] for r in progress]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    assert {"load", "affine", "preprocess", "register", "write"} <= {r["stage"] for r in progress}
    assert all(isinstance(r["message"], str) for r in progress)
    assert records[-1]["event"] == "done" and records[-1]["fraction"] == 1.0
    assert set(records[-1]["outputs"]) >= {"transform.h5", "summary.json", "warped_moving.nii.gz"}


def test_bad_input_reports_an_error_record_and_exit_code_2(pair):
    result = run_cli(*register_args(pair, "--progress", "json", "--model", "nonexistent"))
    assert result.returncode == ExitCode.BAD_INPUT
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "error" and last["exit_code"] == 2 and "nonexistent" in last["message"]
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cancel_stops_quickly_and_leaves_no_result(pair, signum):
    process = subprocess.Popen([sys.executable, "-m", "shmoareg", *register_args(
        pair, "--progress", "json", "--refine-steps", "10000", "--no-affine")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if json.loads(line).get("stage") == "register":
            break
    time.sleep(0.5)
    process.send_signal(signum)
    started = time.monotonic()
    code = process.wait(timeout=30)
    assert time.monotonic() - started < 10
    assert code == ExitCode.CANCELLED
    assert "cancelled" in process.stderr.read()
    assert list((pair / "out").iterdir()) == []


def test_out_of_memory_maps_to_exit_code_3(pair, monkeypatch, capsys):
    def exhausted(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("shmoareg.pipeline.register", exhausted)
    code = cli.main([*register_args(pair), "--progress", "none"])
    assert code == ExitCode.OUT_OF_MEMORY
    assert "out of memory" in capsys.readouterr().err


def test_a_crash_gives_exit_code_1_one_line_and_a_traceback_file(pair, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback file goes to the test's folder

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("shmoareg.pipeline.register", broken)
    code = cli.main([*register_args(pair), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.ERROR and len(err.splitlines()) == 1 and "ZeroDivisionError: boom" in err
    log = err.split("traceback in ")[-1]
    assert "Traceback" in open(log).read()


def test_out_of_memory_detection():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_every_command_says_what_a_cancel_leaves_behind():
    subcommands = next(action for action in cli.build_parser()._actions
                       if isinstance(action, argparse._SubParsersAction))
    assert set(subcommands.choices) == set(cli.CANCELLED_MESSAGES)
    assert "kept" in cli.CANCELLED_MESSAGES["train"] and "no outputs" in cli.CANCELLED_MESSAGES["register"]


def test_the_process_ends_with_the_command_and_skips_the_interpreter_shutdown(tmp_path):
    """Issue 13: a SIGTERM during the interpreter's shutdown (no Python handlers left) gave 143. The process now
    leaves straight after the command (its exit code kept), so an exit hook never runs and there is no window."""
    marker = tmp_path / "finalised"
    child = ("import atexit, pathlib, runpy, sys; "
             f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('shutdown ran')); "
             "sys.argv = ['shmoareg', 'register', '--fixed', 'missing.nii.gz']; "
             "runpy.run_module('shmoareg', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.BAD_INPUT and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("options, flips, swap", [
    ((), None, None), (("--network-flips", "2", "--no-network-swap"), 2, False), (("--network-swap",), None, True)])
def test_the_ensemble_options_reach_the_request_and_unset_ones_leave_the_device_default(pair, options, flips, swap):
    method = cli.method_options(cli.build_parser().parse_args(register_args(pair, *options)))
    assert (method["network_flips"], method["network_swap"]) == (flips, swap)


@pytest.mark.parametrize("options, steps", [((), 0), (("--adapt-steps", "25"), 25)])
def test_the_adaptation_option_reaches_the_request_and_is_off_by_default(pair, options, steps):
    assert cli.method_options(cli.build_parser().parse_args(register_args(pair, *options)))["adapt_steps"] == steps
