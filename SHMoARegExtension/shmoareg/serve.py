"""``shmoareg serve``: a warm engine that runs ``register`` requests read from stdin, one at a time.

It imports torch and the pipeline and reads the shipped weights once, prints one ``ready`` JSON line, then reads
one JSON request per line (:data:`~shmoareg.protocol.REQUEST_COMMAND_KEY` ``"register"`` and
:data:`~shmoareg.protocol.REQUEST_ARGUMENTS_KEY`, the words that follow ``shmoareg register``). Each request runs
through the command line's own parser and ``register`` code with JSON progress on stdout and ends with exactly one
``done`` or ``error`` event carrying the exit code the one-shot command would have returned. SIGINT cancels the
running request (exit code 130, its outputs discarded) and is ignored between requests; the end of stdin or
SIGTERM ends the engine (a running request is cancelled first).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import signal
import sys
import time
from typing import Any, Iterator

from shmoareg import __version__
from shmoareg.cli import CANCELLED_MESSAGES, _report, _run_reporting_errors, build_parser
from shmoareg.errors import Cancelled, InputError
from shmoareg.failures import describe_failure
from shmoareg.jsonio import dumps
from shmoareg.progress import Progress
from shmoareg.protocol import (DEFAULT_MODEL, READY_EVENT, REQUEST_ARGUMENTS_KEY, REQUEST_COMMAND_KEY,
                               SERVED_COMMANDS, ExitCode)


class _Stop(BaseException):
    """SIGTERM while the engine waits: it ends (a BaseException, so that no error handling takes it)."""


class _RequestProgress(Progress):
    """JSON progress of one request that sends at most one final event and remembers whether it has."""

    def __init__(self) -> None:
        super().__init__("json")
        self.ended = False

    def done(self, *args: Any, **kwargs: Any) -> None:
        self._end(super().done, *args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._end(super().error, *args, **kwargs)

    def _end(self, report: Any, *args: Any, **kwargs: Any) -> None:
        if not self.ended:
            self.ended = True  # first: a cancel arriving from here on is too late and is ignored
            report(*args, **kwargs)


class _Server:
    """The request loop and its signal handling."""

    def __init__(self) -> None:
        self.parser = build_parser()
        self.request = _RequestProgress()
        self.running = False  # a request runs and has not ended: a signal cancels it
        self.waiting = True  # loading or reading stdin: SIGTERM ends the engine at once
        self.stopping = False

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGINT and SIGTERM cancel a running request; SIGTERM also ends the engine (when it next waits)."""
        if signum == signal.SIGTERM:
            self.stopping = True
        if self.running and not self.request.ended:
            raise Cancelled(f"signal {signum}")
        if self.stopping and self.waiting:
            raise _Stop()

    def run(self) -> int:
        """Warm up, say so, then answer requests until stdin ends or SIGTERM; returns 0."""
        started = time.perf_counter()
        try:
            _warm_up()
            _emit({"event": READY_EVENT, "pid": os.getpid(), "version": __version__,
                   "seconds": round(time.perf_counter() - started, 3)})
            while not self.stopping:
                line = sys.stdin.readline()
                if not line:
                    break
                if line.strip():
                    self.waiting = False
                    self.answer(line)
                    self.waiting = True
        except _Stop:
            pass
        return ExitCode.OK

    def answer(self, line: str) -> None:
        """Run one request line; any failure becomes its error event, and the engine goes on."""
        progress = self.request = _RequestProgress()
        try:
            try:
                self.running = True
                _run_reporting_errors(self.parse(line), progress)
            finally:
                self.running = False  # a signal from here on cannot interrupt the reporting below
        except InputError as error:
            _report(ExitCode.BAD_INPUT, f"error: {error}", progress)
        except Cancelled:
            _report(ExitCode.CANCELLED, CANCELLED_MESSAGES["register"], progress)
        except Exception as error:  # noqa: BLE001 - one request's failure must not end the engine
            _report(*describe_failure(error), progress)
        _release_memory()

    def parse(self, line: str) -> argparse.Namespace:
        """The ``register`` arguments of a request line, with JSON progress; :class:`InputError` when malformed."""
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise InputError(f"a request must be one JSON object per line, e.g. {{\"{REQUEST_COMMAND_KEY}\": "
                             f"\"register\", \"{REQUEST_ARGUMENTS_KEY}\": [\"--fixed\", \"F\", ...]}}")
        command, arguments = request.get(REQUEST_COMMAND_KEY), request.get(REQUEST_ARGUMENTS_KEY)
        if command not in SERVED_COMMANDS:
            raise InputError(f"the engine serves {', '.join(SERVED_COMMANDS)} requests, not {command!r}")
        if not isinstance(arguments, list) or not all(isinstance(word, str) for word in arguments):
            raise InputError(f"the request's \"{REQUEST_ARGUMENTS_KEY}\" must be a list of strings")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # no --help text among the JSON lines
                args = self.parser.parse_args([command, *arguments])
        except SystemExit:
            raise InputError("--help and --version are not requests; send the arguments of a registration") from None
        args.progress = "json"
        return args


def serve() -> int:
    """Run the warm engine on stdin and stdout until stdin ends or SIGTERM; returns the exit code (0)."""
    server = _Server()
    with _handlers(server.on_signal):
        return server.run()


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _warm_up() -> None:
    """Import what ``register`` needs, read the shipped weights and start the device ``auto`` picks."""
    import torch

    import shmoareg.pipeline  # noqa: F401 - imported now so that no request waits for it
    from shmoareg.checkpoints import resolve_model
    from shmoareg.devices import resolve_device

    with contextlib.suppress(InputError):  # no shipped weights: a request naming them reports it
        resolve_model(DEFAULT_MODEL)
    device = resolve_device("auto")
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, a second or two, before the first request


def _release_memory() -> None:
    """Return what the finished request held: Python garbage and torch's cached GPU blocks (after an
    out-of-memory error too, so that the next request starts from an empty device)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _emit(record: dict) -> None:
    sys.stdout.write(dumps(record) + "\n")
    sys.stdout.flush()
