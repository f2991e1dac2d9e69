"""A warm engine: one ``shmoareg serve`` process kept between registrations, so that the next one starts at once.

The engine loads torch and the network weights once, says ``ready`` and then runs the registrations sent to it
one at a time (:mod:`shmoareg.serve`). A run on it (:class:`WarmRun`) reads like a run in its own process
(:class:`~SHMoARegLib.process.EngineProcess`): the same events, exit code and error message. Its cancel is a SIGINT
to the serving process, which ends the run and goes on; an engine that does not answer within
:data:`CANCEL_WAIT_SECONDS`, or that ended, is killed and replaced by the next run's new one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Optional, Sequence

from shmoareg.protocol import (ERROR_EVENT, FINAL_EVENTS, READY_EVENT, REQUEST_ARGUMENTS_KEY, REQUEST_COMMAND_KEY,
                               ExitCode)
from SHMoARegLib.process import EngineRun, EngineStreams, Ended, ProgressEvent, StreamItem

# How long a cancelled run may take to answer before its engine is killed (the engine checks for the signal between
# Python steps; one long torch operation can delay it).
CANCEL_WAIT_SECONDS = 5.0
# How long a stopped engine may take to end by itself (it ends on the end of its stdin) before it is killed.
STOP_WAIT_SECONDS = 2.0


class WarmEngine:
    """One long-lived engine process (``<engine command> serve``) that runs registrations one at a time."""

    def __init__(self, command: Sequence[str], environment: Optional[dict[str, str]] = None) -> None:
        self.streams = EngineStreams(command, environment, takesInput=True)
        # The process that serves, from its ready event: the engine process itself, or its child below Slicer's app
        # launcher (PythonSlicer). A cancel signals it, and only it.
        self.servingPid: Optional[int] = None

    @property
    def pid(self) -> Optional[int]:
        """Process id of the engine process (the launcher's under PythonSlicer)."""
        return self.streams.pid

    @property
    def alive(self) -> bool:
        """Whether the engine was started and has not ended (it may still be loading)."""
        return self.streams.running

    def start(self) -> None:
        """Launch the engine; it loads in the background and takes requests already (they wait in its stdin)."""
        self.streams.start()

    def submit(self, words: Sequence[str]) -> "WarmRun":
        """Send a registration, given as the one-shot command's arguments (``register --fixed ...``); returns its
        run, whose events the caller takes. Only one run at a time: the caller waits for the last one to finish."""
        run = WarmRun(self)
        self.streams.stderrLines.clear()  # the run's error message is its own, not an earlier run's
        request = {REQUEST_COMMAND_KEY: words[0], REQUEST_ARGUMENTS_KEY: list(words[1:])}
        try:
            self.streams.send(json.dumps(request))
        except OSError:  # the engine has just ended: the run reports it from its events
            logging.warning("SHMoAReg: the registration engine ended before it received the registration")
        return run

    def take(self, timeout: float) -> StreamItem:
        """The engine's next event or end (None when none came within ``timeout``); a ready event is noted here."""
        while True:
            item = self.streams.take(timeout)
            if not (isinstance(item, ProgressEvent) and item.event == READY_EVENT):
                return item
            self.servingPid = int(item.record.get("pid", self.pid))
            logging.info("SHMoAReg: the registration engine is ready (loaded in %s s)", item.record.get("seconds"))

    def cancel(self, run: "WarmRun") -> None:
        """Stop ``run``: SIGINT to the serving process, which answers with a cancelled error and goes on; when it
        does not within :data:`CANCEL_WAIT_SECONDS`, has not said it is ready, or on Windows (where a signal would end
        it), the engine's process tree is killed instead and the next run starts a new engine."""
        run.events()  # a ready event still queued names the serving process
        if not run.finished and self.servingPid is not None and os.name != "nt":
            try:
                os.kill(self.servingPid, signal.SIGINT)
            except OSError:  # it has just ended; its end is in the queue
                pass
            deadline = time.monotonic() + CANCEL_WAIT_SECONDS
            while not run.finished and time.monotonic() < deadline:
                run.events(timeout=max(0.01, deadline - time.monotonic()))
        if not run.finished:
            logging.warning("SHMoAReg: the registration engine did not stop the registration; ending the engine")
            self.kill()

    def stop(self) -> None:
        """End the engine: it ends by itself at the end of its stdin; killed if it has not within
        :data:`STOP_WAIT_SECONDS` (or a registration was running: the caller cancels it first)."""
        if self.streams.pid is None:
            return
        self.streams.closeInput()
        if not self.streams.wait(STOP_WAIT_SECONDS):
            self.kill()

    def kill(self) -> None:
        """Kill the engine's whole process tree."""
        self.streams.kill()

    def endMessage(self) -> str:
        """Why an ended engine ended: its last stderr line, else its exit code."""
        if self.streams.stderrLines:
            return self.streams.stderrLines[-1]
        return f"exit code {self.streams.returnCode}"


class WarmRun(EngineRun):
    """One registration on a :class:`WarmEngine`: its events up to its final one, then its exit code."""

    def __init__(self, engine: WarmEngine) -> None:
        super().__init__()
        self.engine = engine

    @property
    def pid(self) -> Optional[int]:
        return self.engine.pid

    def events(self, timeout: float = 0.0) -> list[ProgressEvent]:
        collected: list[ProgressEvent] = []
        while not self.finished:
            item = self.engine.take(0.0 if collected else timeout)
            if item is None:
                break
            if isinstance(item, Ended):  # the engine died during the run: its exit code is the run's
                self.returnCode = item.returnCode
                break
            if item.event == ERROR_EVENT:
                self.lastError = item
            collected.append(item)
            if item.event in FINAL_EVENTS:
                self.returnCode = item.exitCode if item.exitCode is not None else ExitCode.ERROR
        return collected

    def cancel(self) -> None:
        self.engine.cancel(self)

    def stderrLines(self) -> Sequence[str]:
        return self.engine.streams.stderrLines
