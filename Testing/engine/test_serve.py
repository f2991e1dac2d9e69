"""``shmoareg serve``, the warm engine (issue 24, 5): many requests in one process, each as the one-shot command."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from shmoareg import serve
from shmoareg.failures import OUT_OF_MEMORY_MESSAGE
from shmoareg.protocol import (COMPLETION_MARKER, DONE_EVENT, ERROR_EVENT, FINAL_EVENTS, READY_EVENT,
                               REQUEST_ARGUMENTS_KEY, REQUEST_COMMAND_KEY, SERVE_COMMAND, TRANSFORM_FILE, WARPED_FILE,
                               ExitCode)
from shmoareg.resources import SAMPLE_PAIR

FIXED, MOVING = SAMPLE_PAIR["fixed"], SAMPLE_PAIR["moving"]
# Small, fast runs: the shipped network's prediction alone, or a few steps of the pair optimisation without it.
NETWORK = ("--model", "shmoareg", "--refine-steps", "0", "--no-affine", "--device", "cpu")
NO_NETWORK = ("--model", "none", "--refine-steps", "2", "--no-affine", "--device", "cpu")
ENDLESS = ("--model", "none", "--refine-steps", "5000", "--no-affine", "--device", "cpu")
TIMEOUT = 300


def register_words(output: Path, options: tuple[str, ...]) -> list[str]:
    return ["--fixed", str(FIXED), "--moving", str(MOVING), "--output-dir", str(output), *options]


class Server:
    """A ``python -m shmoareg serve`` process with its JSON lines."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "shmoareg", SERVE_COMMAND], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.ready = self.next_event()
        assert self.ready["event"] == READY_EVENT and self.ready["pid"] == self.process.pid, self.ready

    def next_event(self) -> dict:
        line = self.process.stdout.readline()
        assert line, f"the engine ended: {self.process.wait(TIMEOUT)} {self.process.stderr.read()}"
        return json.loads(line)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def request(self, words: list[str], until_stage: Optional[str] = None) -> list[dict]:
        """Send a register request; its events up to its final one (or to the first of stage ``until_stage``)."""
        self.send(json.dumps({REQUEST_COMMAND_KEY: "register", REQUEST_ARGUMENTS_KEY: words}))
        return self.events(until_stage)

    def events(self, until_stage: Optional[str] = None) -> list[dict]:
        events = [self.next_event()]
        while events[-1]["event"] not in FINAL_EVENTS and events[-1].get("stage") != until_stage:
            events.append(self.next_event())
        return events

    def end(self) -> tuple[int, str]:
        """Close stdin; the exit code and what was left on stdout."""
        self.process.stdin.close()
        rest = self.process.stdout.read()
        return self.process.wait(TIMEOUT), rest


@pytest.fixture
def server():
    started = Server()
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def final(events: list[dict]) -> dict:
    assert [event["event"] for event in events].count(READY_EVENT) == 0
    assert sum(event["event"] in FINAL_EVENTS for event in events) == 1 and events[-1]["event"] in FINAL_EVENTS
    return events[-1]


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def field(folder: Path) -> np.ndarray:
    """The displacement field of a run's transform.h5, on its own grid."""
    transform = sitk.DisplacementFieldTransform(sitk.ReadTransform(str(folder / TRANSFORM_FILE)))
    return sitk.GetArrayFromImage(transform.GetDisplacementField())


def test_requests_in_one_process_match_the_one_shot_command_and_bad_ones_leave_it_running(server, tmp_path):
    first = final(server.request(register_words(tmp_path / "first", NETWORK)))
    assert (first["event"], first["exit_code"]) == (DONE_EVENT, ExitCode.OK)

    server.send("not a request")
    malformed = final(server.events())
    assert (malformed["event"], malformed["exit_code"]) == (ERROR_EVENT, ExitCode.BAD_INPUT)
    missing = final(server.request(["--fixed", str(tmp_path / "absent.nii.gz"), "--moving", str(MOVING),
                                    "--output-dir", str(tmp_path / "missing")]))
    assert missing["exit_code"] == ExitCode.BAD_INPUT and "absent.nii.gz" in missing["message"]
    helped = final(server.request(["--help"]))
    assert helped["exit_code"] == ExitCode.BAD_INPUT

    second = final(server.request(register_words(tmp_path / "second", NETWORK)))
    assert second["exit_code"] == ExitCode.OK and server.process.poll() is None
    code, rest = server.end()
    assert code == ExitCode.OK and rest == ""  # no second ready, nothing after the last answer

    one_shot = run_cli("register", *register_words(tmp_path / "one_shot", NETWORK), "--progress", "none")
    assert one_shot.returncode == ExitCode.OK, one_shot.stderr
    for read in (field, lambda folder: array(folder / WARPED_FILE)):
        expected = read(tmp_path / "one_shot")
        assert np.abs(expected).max() > 0
        for served in ("first", "second"):
            np.testing.assert_array_equal(read(tmp_path / served), expected)
    summaries = [json.loads((tmp_path / run / COMPLETION_MARKER).read_text()) for run in ("one_shot", "second")]
    assert summaries[0]["model"] == summaries[1]["model"] and summaries[0]["model"]["weights_sha256"]


def test_sigint_cancels_the_running_request_and_the_engine_goes_on(server, tmp_path):
    output = tmp_path / "cancelled"
    started = server.request(register_words(output, ENDLESS), until_stage="register")
    assert started[-1]["event"] != ERROR_EVENT
    server.process.send_signal(signal.SIGINT)
    cancelled = final(server.events())
    assert (cancelled["event"], cancelled["exit_code"]) == (ERROR_EVENT, ExitCode.CANCELLED)
    assert not output.exists() or list(output.iterdir()) == []

    server.process.send_signal(signal.SIGINT)  # between requests: ignored
    after = final(server.request(register_words(tmp_path / "after", NO_NETWORK)))
    assert after["exit_code"] == ExitCode.OK and (tmp_path / "after" / COMPLETION_MARKER).is_file()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(TIMEOUT) == ExitCode.OK


def test_a_failing_request_is_reported_and_the_next_one_runs(tmp_path, monkeypatch, capsys):
    """An internal failure (exit 1, traceback file) and an out-of-memory error (exit 3, today's advice) in one
    request each; the engine answers them and the requests after them."""
    failures = [ZeroDivisionError("boom"), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback file goes to the test's folder

    def failing(*args, **kwargs):
        raise failures.pop(0)

    monkeypatch.setattr("shmoareg.pipeline.register", failing)
    request = json.dumps({REQUEST_COMMAND_KEY: "register", REQUEST_ARGUMENTS_KEY: register_words(tmp_path, NETWORK)})
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([request, request, '{"command": "train"}', ""])))
    handler = signal.getsignal(signal.SIGINT)
    assert serve.serve() == ExitCode.OK
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handlers are back
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["event"] for event in events] == [READY_EVENT, ERROR_EVENT, ERROR_EVENT, ERROR_EVENT]
    crashed, exhausted, refused = events[1:]
    assert crashed["exit_code"] == ExitCode.ERROR and "ZeroDivisionError: boom" in crashed["message"]
    assert "Traceback" in Path(crashed["message"].split("traceback in ")[-1]).read_text()
    assert (exhausted["exit_code"], exhausted["message"]) == (ExitCode.OUT_OF_MEMORY, OUT_OF_MEMORY_MESSAGE)
    assert refused["exit_code"] == ExitCode.BAD_INPUT and "'train'" in refused["message"]
