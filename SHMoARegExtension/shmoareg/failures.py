"""A failure as an exit code and one line: the command line's protocol, also used per pair by ``batch``."""

from __future__ import annotations

import tempfile
import traceback

from shmoareg.errors import InputError, NoSpace, is_out_of_memory
from shmoareg.protocol import ExitCode

OUT_OF_MEMORY_MESSAGE = ("error: out of memory; try --device cpu, a coarser --grid-spacing or a smaller "
                         "--max-grid-voxels")


def crash_log(error: BaseException) -> str:
    """Write ``error``'s traceback to a temporary file; returns its path."""
    with tempfile.NamedTemporaryFile("w", prefix="shmoareg-crash-", suffix=".log", delete=False) as log:
        log.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        return log.name


def describe_failure(error: Exception) -> tuple[ExitCode, str]:
    """The exit code and one-line message of a failure (a cancel is the caller's to report).

    Bad input is 2, a full disk 4, out of memory 3; anything else is an internal failure (1) whose
    traceback goes to a temporary log file named in the message.
    """
    if isinstance(error, InputError):
        code, message = ExitCode.BAD_INPUT, f"error: {error}"
    elif isinstance(error, NoSpace):
        code, message = ExitCode.NO_SPACE, f"error: {error}"
    elif is_out_of_memory(error):
        code, message = ExitCode.OUT_OF_MEMORY, OUT_OF_MEMORY_MESSAGE
    else:
        code = ExitCode.ERROR
        message = (f"error: internal failure ({type(error).__name__}: {str(error).strip()[:200]}); "
                   f"traceback in {crash_log(error)}")
    return code, " ".join(message.split())
