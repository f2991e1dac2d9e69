"""The engine as a separate process: launch, JSON-lines progress on reader threads, tree kill.

The engine (``python -m shmoareg register ... --progress json``) prints one JSON object per
line on stdout and one human-readable line on stderr when it fails. Reader threads only put
what they read into a queue (:class:`EngineStreams`); :meth:`EngineRun.events` hands it to the calling
(main) thread. :class:`EngineProcess` runs one registration per process; :mod:`SHMoARegLib.warm` keeps one
``serve`` process for many.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from shmoareg.protocol import ERROR_EVENT

# The folder that holds the engine package ``shmoareg`` (next to SHMoARegLib).
ENGINE_PARENT_DIRECTORY = Path(__file__).resolve().parent.parent
KILL_WAIT_SECONDS = 5.0
STDERR_LINES_KEPT = 50
# What Slicer's CTK app launcher prints (and then exits with 1) when the process below it dies by a signal.
LAUNCHER_ABNORMAL_EXIT = "exit abnormally"
# A process under the engine's PID that started this much later than the engine is another process.
PID_REUSE_TOLERANCE_SECONDS = 1.0


def pythonExecutable() -> str:
    """Python that runs the engine: Slicer's ``PythonSlicer`` inside Slicer, else this interpreter."""
    try:
        import slicer

        slicer.app  # noqa: B018 - only the Slicer application has it
    except (ImportError, AttributeError):
        return sys.executable
    # Slicer puts PythonSlicer on PATH; fall back to its bin folder (the folder of sys.executable).
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    if candidate.is_file():
        return str(candidate)
    raise RuntimeError("cannot find Slicer's PythonSlicer executable to run the registration engine")


def defaultEngineCommand() -> list[str]:
    """Command prefix that runs the engine's command line; ``register ...`` arguments follow it."""
    return [pythonExecutable(), "-m", "shmoareg"]


def engineEnvironment() -> dict[str, str]:
    """This process's environment with the engine package first on PYTHONPATH."""
    environment = dict(os.environ)
    paths = [str(ENGINE_PARENT_DIRECTORY)]
    if environment.get("PYTHONPATH"):
        paths.append(environment["PYTHONPATH"])
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONIOENCODING"] = "utf-8"  # what the reader threads decode
    return environment


@dataclass
class ProgressEvent:
    """One JSON line of the engine: ``progress``, ``done`` or ``error`` (or the warm engine's ``ready``)."""

    event: str
    fraction: float = 0.0
    message: str = ""
    stage: str = ""
    exitCode: Optional[int] = None
    record: dict = field(default_factory=dict)

    @classmethod
    def fromLine(cls, line: str) -> Optional["ProgressEvent"]:
        """Parse one stdout line; None when it is not an engine JSON event."""
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or "event" not in record:
            return None
        return cls(event=str(record["event"]), fraction=float(record.get("fraction", 0.0)),
                   message=str(record.get("message", "")), stage=str(record.get("stage", "")),
                   exitCode=record.get("exit_code"), record=record)


class Ended:
    """Queue item after an engine's last event: the process ended and both its output pipes are closed."""

    def __init__(self, returnCode: int) -> None:
        self.returnCode = returnCode


class EngineStreams:
    """A launched engine process: reader threads queue its stdout events, then :class:`Ended`, and keep its last
    stderr lines; with ``takesInput`` its stdin is a pipe for :meth:`send`, else it reads nothing."""

    def __init__(self, command: Sequence[str], environment: Optional[dict[str, str]] = None,
                 workingDirectory: Optional[str] = None, takesInput: bool = False) -> None:
        self.command = list(command)
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.takesInput = takesInput
        self.stderrLines: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._process: Optional[subprocess.Popen] = None
        self._startedAt = 0.0
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not ended."""
        return self._process is not None and self._process.poll() is None

    @property
    def returnCode(self) -> Optional[int]:
        """The process's exit code once it has ended (None before)."""
        return self._process.poll() if self._process is not None else None

    def start(self) -> None:
        """Launch the process and its reader threads."""
        logging.info("SHMoAReg: running %s", subprocess.list2cmdline(self.command))
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        self._startedAt = time.time()
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE if self.takesInput else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.environment,
            cwd=self.workingDirectory, creationflags=flags)
        stderrThread = threading.Thread(target=self._readStderr, name="SHMoAReg-stderr", daemon=True)
        stdoutThread = threading.Thread(target=self._readStdout, args=(stderrThread,), name="SHMoAReg-stdout",
                                        daemon=True)
        self._threads = [stderrThread, stdoutThread]
        stderrThread.start()
        stdoutThread.start()

    def _readStderr(self) -> None:
        for line in self._process.stderr:
            line = line.rstrip()
            if line:
                self.stderrLines.append(line)
                logging.info("SHMoAReg engine: %s", line)

    def _readStdout(self, stderrThread: threading.Thread) -> None:
        for line in self._process.stdout:
            line = line.rstrip()
            if not line:
                continue
            event = ProgressEvent.fromLine(line)
            if event is None:
                logging.info("SHMoAReg engine: %s", line)
            else:
                self._queue.put(event)
        stderrThread.join()
        self._queue.put(Ended(self._process.wait()))

    def take(self, timeout: float = 0.0) -> StreamItem:
        """The next event or :class:`Ended`, waiting up to ``timeout`` seconds; None when there is none yet."""
        try:
            return self._queue.get(block=timeout > 0, timeout=timeout if timeout > 0 else None)
        except queue.Empty:
            return None

    def send(self, line: str) -> None:
        """Write one line to the process's stdin; OSError when it has closed it (it ended)."""
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def closeInput(self) -> None:
        """Close the process's stdin: an engine that reads it sees its end."""
        try:
            self._process.stdin.close()
        except OSError:  # the process ended and the last write failed: nothing left to close
            pass

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the process to end; whether it has."""
        try:
            self._process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """End the process and every process it started, then wait for the reader threads."""
        if self._process is None:
            return
        killProcessTree(self._process, self._startedAt)
        for thread in self._threads:
            thread.join(KILL_WAIT_SECONDS)


# What an engine's reader threads queue: an event, or its end; None stands for nothing yet.
StreamItem = Union[ProgressEvent, Ended, None]


class EngineRun(abc.ABC):
    """What the logic reads of one registration: its events, then its exit code and one-line error."""

    def __init__(self) -> None:
        self.returnCode: Optional[int] = None
        self.lastError: Optional[ProgressEvent] = None

    @property
    def finished(self) -> bool:
        """True once the run ended and all its events were handed out by :meth:`events`."""
        return self.returnCode is not None

    @property
    @abc.abstractmethod
    def pid(self) -> Optional[int]:
        """Process id of the engine process that runs it."""

    @abc.abstractmethod
    def events(self, timeout: float = 0.0) -> list[ProgressEvent]:
        """Events read since the last call; waits up to ``timeout`` seconds for the first one."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the run; returns once its engine no longer works on it."""

    @abc.abstractmethod
    def stderrLines(self) -> Sequence[str]:
        """The engine's last stderr lines of this run."""

    def errorMessage(self) -> str:
        """The engine's one-line message for a failed run (error event, else last stderr line)."""
        if self.lastError is not None and self.lastError.message:
            return self.lastError.message
        lines = self.stderrLines()
        if lines:
            return lines[-1]
        return f"the registration process ended with exit code {self.returnCode}"

    def killedBySystem(self) -> bool:
        """Whether the process was killed from outside (SIGKILL, e.g. by the out-of-memory killer), also when it
        ran below Slicer's app launcher, which then exits with 1 and says "exit abnormally" instead."""
        if self.returnCode is not None and self.returnCode < 0 and -self.returnCode == getattr(signal, "SIGKILL", 9):
            return True
        return (self.returnCode == 1 and self.lastError is None
                and any(LAUNCHER_ABNORMAL_EXIT in line for line in self.stderrLines()))


class EngineProcess(EngineRun):
    """One registration in its own engine process (``<engine command> register ...``)."""

    def __init__(self, command: Sequence[str], environment: Optional[dict[str, str]] = None,
                 workingDirectory: Optional[str] = None) -> None:
        super().__init__()
        self.streams = EngineStreams(command, environment, workingDirectory)

    @property
    def pid(self) -> Optional[int]:
        return self.streams.pid

    def start(self) -> None:
        """Launch the process and its reader threads."""
        self.streams.start()

    def events(self, timeout: float = 0.0) -> list[ProgressEvent]:
        collected: list[ProgressEvent] = []
        while True:
            item = self.streams.take(0.0 if collected else timeout)
            if item is None:
                return collected
            if isinstance(item, Ended):
                self.returnCode = item.returnCode
                return collected
            if item.event == ERROR_EVENT:
                self.lastError = item
            collected.append(item)

    def cancel(self) -> None:
        """End the process and every process it started."""
        self.streams.kill()
        self.events()  # collect the end so that returnCode is set

    def stderrLines(self) -> Sequence[str]:
        return self.streams.stderrLines


def killProcessTree(process: subprocess.Popen, startedAt: float = 0.0) -> None:
    """Kill ``process`` and all its descendants (psutil when available, else the process alone).

    Each process is suspended before its children are listed, so none can start a child that
    escapes; then all are killed. Nothing is signalled once ``process`` has ended: its PID may belong to
    another process by then (a process under that PID started after ``startedAt`` is not ours).
    """
    if process.poll() is not None:
        return
    try:
        import psutil
    except ImportError:
        logging.warning("SHMoAReg: psutil is missing; only the engine process itself is stopped")
        process.kill()
        process.wait(KILL_WAIT_SECONDS)
        return
    members = []
    try:
        root = psutil.Process(process.pid)
        if startedAt and root.create_time() > startedAt + PID_REUSE_TOLERANCE_SECONDS:
            return
        root.suspend()
        members.append(root)
        while True:
            known = {member.pid for member in members}
            fresh = [child for child in root.children(recursive=True) if child.pid not in known]
            if not fresh:
                break
            for child in fresh:
                try:
                    child.suspend()
                    members.append(child)
                except psutil.NoSuchProcess:
                    pass
    except psutil.NoSuchProcess:
        pass
    for member in reversed(members):  # descendants first
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=KILL_WAIT_SECONDS)
    process.wait(KILL_WAIT_SECONDS)
