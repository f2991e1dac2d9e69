"""Progress reporting: JSON lines on stdout (the Slicer module's protocol), a text bar, or nothing.

Each JSON line is one object: ``{"event": "progress", "stage": str, "fraction": float, "message": str}``
where ``fraction`` is the overall fraction done (0..1, non-decreasing; a run without a network
has no ``predict`` stage, so its fraction jumps at the end). The run ends with one
``{"event": "done", "exit_code": 0, ...}`` or ``{"event": "error", "exit_code": int, "message": str}`` line
(event names and exit codes: :mod:`shmoareg.protocol`).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator, Optional

from shmoareg.jsonio import dumps
from shmoareg.protocol import DONE_EVENT, ERROR_EVENT, PROGRESS_EVENT, ExitCode

MODES = ("json", "bar", "none")

# Share of the whole run that each stage takes, for the overall fraction.
STAGE_WEIGHTS = {
    "load": 0.05,
    "affine": 0.15,
    "preprocess": 0.05,
    "predict": 0.1,
    "register": 0.5,
    "write": 0.15,
}


class Progress:
    """Reports stages and overall fraction done; records seconds per stage."""

    def __init__(self, mode: str = "none", stream: Optional[IO[str]] = None,
                 bar_stream: Optional[IO[str]] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown progress mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        self.bar_stream = bar_stream if bar_stream is not None else sys.stderr
        self.seconds: dict[str, float] = {}
        self._done_before = 0.0
        self._stage = ""
        self._weight = 0.0
        self._fraction = 0.0
        self._last_bar = ""

    @contextmanager
    def stage(self, name: str, message: str = "", weight: Optional[float] = None) -> Iterator["Progress"]:
        """Run a stage: reports its start and end and records its duration. ``weight`` is its share of the
        whole run (default: the ``register`` stage's in :data:`STAGE_WEIGHTS`, 0 for any other)."""
        self._stage, self._weight = name, STAGE_WEIGHTS.get(name, 0.0) if weight is None else weight
        start = time.perf_counter()
        self.update(0.0, message or name)
        yield self
        self.update(1.0, message or name)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
        self._done_before += self._weight

    def update(self, stage_fraction: float, message: str = "") -> None:
        """Report progress within the current stage (0..1)."""
        overall = min(1.0, self._done_before + self._weight * max(0.0, min(1.0, stage_fraction)))
        self._fraction = max(self._fraction, overall)
        if self.mode == "json":
            self._emit({"event": PROGRESS_EVENT, "stage": self._stage, "fraction": round(self._fraction, 4),
                        "message": message})
        elif self.mode == "bar":
            filled = int(round(30 * self._fraction))
            bar = f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._fraction:4.0%} {message[:40]:<40}"
            if bar != self._last_bar:  # redraw only when something visible changed
                self.bar_stream.write(bar)
                self.bar_stream.flush()
                self._last_bar = bar

    def done(self, outputs: dict[str, str], message: str = "registration finished") -> None:
        """Report success with the written outputs."""
        if self.mode == "json":
            self._emit({"event": DONE_EVENT, "stage": "done", "fraction": 1.0, "message": message,
                        "exit_code": int(ExitCode.OK), "outputs": outputs})
        elif self.mode == "bar":
            self.bar_stream.write("\n")

    def error(self, exit_code: int, message: str) -> None:
        """Report failure (the human-readable line also goes to stderr, written by the caller)."""
        if self.mode == "json":
            self._emit({"event": ERROR_EVENT, "stage": self._stage, "exit_code": exit_code, "message": message})
        elif self.mode == "bar":
            self.bar_stream.write("\n")

    def _emit(self, record: dict) -> None:
        self.stream.write(dumps(record) + "\n")
        self.stream.flush()
