"""Failures and cancellation: the engine's message reaches the caller and the scene is left as it was."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
import slicer

import fake_engine
from mrml_helpers import FAST, addPointList, fakeEngine, logicFor, sceneState
from SHMoARegLib import RegistrationCancelled, RegistrationError, RegistrationOptions
from SHMoARegLib.process import killProcessTree
from shmoareg.protocol import ExitCode


def assertSceneUntouched(scene, pair, stateBefore, temporaryDirectory) -> None:
    assert sceneState(scene) == stateBefore
    assert pair.moving.GetTransformNodeID() is None
    assert list(temporaryDirectory.iterdir()) == []


def test_bad_input_raises_the_engines_message(scene, pair, tmp_path):
    values = slicer.util.arrayFromVolume(pair.fixed)
    values[:] = 7.0
    slicer.util.arrayFromVolumeModified(pair.fixed)
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path)
    with pytest.raises(RegistrationError, match="constant") as raised:
        logic.register(pair.fixed, pair.moving, options=FAST)
    assert raised.value.exitCode == ExitCode.BAD_INPUT
    assertSceneUntouched(scene, pair, before, tmp_path)


def test_crashing_process_raises_its_stderr_line(scene, pair, tmp_path):
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path, fakeEngine("crash"))
    with pytest.raises(RegistrationError) as raised:
        logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation)
    assert str(raised.value) == fake_engine.CRASH_MESSAGE
    assert raised.value.exitCode == ExitCode.ERROR
    assertSceneUntouched(scene, pair, before, tmp_path)


def test_an_engine_killed_below_slicers_app_launcher_is_reported_as_killed(scene, pair, tmp_path):
    """Issue 12, 4a: under PythonSlicer the launcher exits with 1 and prints "exit abnormally" when the
    out-of-memory killer ends the engine; that is not an internal error."""
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path, fakeEngine("launcher-killed"))
    with pytest.raises(RegistrationError, match="killed by the system.*out of memory") as raised:
        logic.register(pair.fixed, pair.moving)
    assert raised.value.exitCode == ExitCode.ERROR
    assertSceneUntouched(scene, pair, before, tmp_path)


def test_cancel_signals_nothing_once_the_engine_has_ended(monkeypatch):
    """Issue 12, 4i: after the engine exited (and was reaped), its PID may belong to another process."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    monkeypatch.setattr(psutil, "Process", lambda pid: pytest.fail(f"looked up PID {pid} of an ended process"))
    killProcessTree(ended, time.time())


def test_a_process_started_after_the_engine_under_its_pid_is_left_alone():
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        killProcessTree(stranger, startedAt=time.time() - 3600.0)  # as if the engine had started an hour ago
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_outputs_failing_to_load_part_way_leave_no_partial_nodes(scene, pair, tmp_path):
    """The routing maps load last: the Jacobian, uncertainty, tables and their colours go too."""
    points = [fixedPoint for fixedPoint, _ in pair.landmarks]
    fixedList, movingList = addPointList(scene, "F", points, ["a", "b"]), addPointList(scene, "M", points, ["a", "b"])
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path, fakeEngine("corrupt"))
    with pytest.raises(RegistrationError, match="cannot load the registration results"):
        logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation, fixedList,
                       movingList, options=RegistrationOptions(uncertainty=True))
    assertSceneUntouched(scene, pair, before, tmp_path)
    assert pair.movingSegmentation.GetTransformNodeID() is None


def test_invalid_nodes_are_refused_before_anything_runs(scene, pair, tmp_path):
    logic = logicFor(scene, tmp_path, fakeEngine("crash"))
    with pytest.raises(ValueError, match="same node"):
        logic.register(pair.fixed, pair.fixed)
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(ValueError, match="no segments"):
        logic.register(pair.fixed, pair.moving, movingSegmentation=empty)
    with pytest.raises(TypeError):
        logic.register(pair.fixed, pair.moving, unknownOption=1)
    with pytest.raises(TypeError, match="RegistrationOptions"):
        logic.register(pair.fixed, pair.moving, options={"device": "cpu"})
    assert not logic.isRunning and list(tmp_path.iterdir()) == []


def test_cancel_kills_the_whole_process_tree(scene, pair, tmp_path):
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path, fakeEngine("hang"))
    messages = []
    logic.register(pair.fixed, pair.moving, waitForCompletion=False,
                   progressCallback=lambda fraction, message: messages.append(message))
    deadline = time.monotonic() + 30.0
    while not any(message.startswith("child") for message in messages):
        assert time.monotonic() < deadline, "the engine never reported its child"
        assert logic.poll(timeout=0.05) is None
    engine = psutil.Process(logic.processId)
    child = psutil.Process(int(messages[-1].split()[1]))
    started = time.monotonic()
    assert logic.cancel()
    assert time.monotonic() - started < 5.0
    for process in (engine, child):
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not logic.isRunning and logic.poll() is None and not logic.cancel()
    assertSceneUntouched(scene, pair, before, tmp_path)


def test_cancel_from_the_progress_callback_stops_a_blocking_real_run(scene, pair, tmp_path):
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path)
    pids = []

    def cancelOnFirstProgress(fraction: float, message: str) -> None:
        pids.append(logic.processId)
        logic.cancel()

    with pytest.raises(RegistrationCancelled):
        logic.register(pair.fixed, pair.moving, options=FAST, progressCallback=cancelOnFirstProgress)
    assert len(pids) == 1 and not psutil.pid_exists(pids[0])
    assertSceneUntouched(scene, pair, before, tmp_path)


def test_an_exception_in_the_progress_callback_stops_the_engine(scene, pair, tmp_path):
    before = sceneState(scene)
    logic = logicFor(scene, tmp_path, fakeEngine("hang"))
    pids = []

    def faultyCallback(fraction: float, message: str) -> None:
        pids.append(logic.processId)
        raise KeyError("a bug in the caller")

    with pytest.raises(KeyError):
        logic.register(pair.fixed, pair.moving, progressCallback=faultyCallback)
    assert not logic.isRunning and not psutil.pid_exists(pids[0])
    assertSceneUntouched(scene, pair, before, tmp_path)
