"""The warm engine (issue 24, 5): registrations share one loaded engine process; cancel, killed engine, setting."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest
import slicer

from mrml_helpers import logicFor, sceneState
from SHMoARegLib import RegistrationError, RegistrationOptions

# A quick run on the synthetic pair (a few steps of the pair optimisation), and one that runs until stopped.
QUICK = RegistrationOptions(device="cpu", model="none", refineSteps=2)
ENDLESS = RegistrationOptions(device="cpu", model="none", refineSteps=5000, affine=False)
DEADLINE_SECONDS = 120.0


@pytest.fixture
def logic(scene, tmp_path):
    runner = logicFor(scene, tmp_path, keepEngineWarm=True)
    yield runner
    runner.stopEngine()


def ended(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def startEndless(logic, pair) -> None:
    """Start a run that does not end by itself; returns once it optimises."""
    messages = []
    logic.register(pair.fixed, pair.moving, options=ENDLESS, waitForCompletion=False,
                   progressCallback=lambda fraction, message: messages.append(message))
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not any("optimising" in message for message in messages):
        assert time.monotonic() < deadline, "the run never reached the optimisation"
        assert logic.poll(timeout=0.1) is None


def registerAgain(logic, pair):
    pair.moving.SetAndObserveTransformNodeID(None)  # a moving volume under a nonlinear transform is refused
    return logic.register(pair.fixed, pair.moving, options=QUICK)


def test_registrations_share_one_engine_process_until_it_is_stopped(scene, pair, logic, tmp_path):
    pids, fractions = [], []

    def progress(fraction: float, message: str) -> None:
        pids.append(logic.processId)
        fractions.append(fraction)

    first = logic.register(pair.fixed, pair.moving, options=QUICK, progressCallback=progress)
    engine = logic.engineProcessId
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    pair.moving.SetAndObserveTransformNodeID(None)
    second = logic.register(pair.fixed, pair.moving, options=QUICK, progressCallback=progress)
    assert engine is not None and set(pids) == {engine} and logic.engineProcessId == engine
    assert pair.moving.GetTransformNodeID() == second.transformNode.GetID() != first.transformNode.GetID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(first.warpedVolumeNode),
                                  slicer.util.arrayFromVolume(second.warpedVolumeNode))
    assert list(tmp_path.iterdir()) == []
    logic.stopEngine()
    assert ended(engine) and logic.engineProcessId is None


def test_a_cancel_stops_the_run_and_the_same_engine_takes_the_next(scene, pair, logic, tmp_path):
    before = sceneState(scene)
    startEndless(logic, pair)
    engine = logic.engineProcessId
    with pytest.raises(RuntimeError, match="already running"):
        logic.register(pair.fixed, pair.moving, options=QUICK)
    assert logic.cancel() and not logic.isRunning
    assert sceneState(scene) == before and pair.moving.GetTransformNodeID() is None
    assert list(tmp_path.iterdir()) == []
    assert logic.engineProcessId == engine and not ended(engine)  # cancelled by a signal, not killed
    result = registerAgain(logic, pair)
    assert result.transformNode is not None and logic.engineProcessId == engine


def test_a_killed_engine_is_reported_and_the_next_run_starts_a_new_one(scene, pair, logic, tmp_path):
    before = sceneState(scene)
    startEndless(logic, pair)
    engine = logic.engineProcessId
    os.kill(engine, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_SECONDS
    with pytest.raises(RegistrationError, match="killed by the system.*out of memory") as raised:
        while logic.poll(timeout=0.1) is None:
            assert time.monotonic() < deadline, "the engine's end was never reported"
    assert raised.value.exitCode == -signal.SIGKILL and not logic.isRunning
    assert sceneState(scene) == before and list(tmp_path.iterdir()) == []

    result = registerAgain(logic, pair)
    restarted = logic.engineProcessId
    assert result.transformNode is not None and restarted not in (None, engine)
    os.kill(restarted, signal.SIGKILL)  # killed while idle: the next run starts another engine
    while logic.engineProcessId is not None:
        assert time.monotonic() < deadline, "the killed engine still runs"
        time.sleep(0.05)
    assert registerAgain(logic, pair).transformNode is not None
    assert logic.engineProcessId not in (None, restarted)


def test_turning_the_setting_off_ends_the_engine_and_each_run_gets_its_own_process(pair, logic):
    logic.startEngine()
    engine = logic.engineProcessId
    assert engine is not None
    logic.keepEngineWarm = False
    assert ended(engine) and logic.engineProcessId is None
    pids = []
    logic.register(pair.fixed, pair.moving, options=QUICK,
                   progressCallback=lambda fraction, message: pids.append(logic.processId))
    assert logic.engineProcessId is None and pids and ended(pids[0])
