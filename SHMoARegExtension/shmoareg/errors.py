"""Error types of the engine (the exit codes they map to are in :mod:`shmoareg.protocol`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InputError(ValueError):
    """The user's input cannot be registered; the message says what is wrong and what to do."""


class NoSpace(Exception):
    """The output folder's disk is full (or too full for the outputs); the message names the folder."""


class Cancelled(Exception):
    """The run was cancelled by the user (SIGINT or SIGTERM)."""


def require_utf8(path: str | os.PathLike, role: str) -> Path:
    """``path`` as a Path; :class:`InputError` when its name is not valid UTF-8 (ITK would abort on it)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fspath(path).encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise InputError(f"the {role} path {shown} is not valid UTF-8; rename it with UTF-8 characters") from None
    return Path(path)


def require_file(path: str | os.PathLike, role: str) -> Path:
    """``path`` as a Path; :class:`InputError` naming ``role`` when it is not an existing file."""
    path = require_utf8(path, role)
    try:
        mode = path.stat().st_mode
    except PermissionError:
        raise InputError(f"{role} file {path} cannot be reached: permission denied on a folder of its path; "
                         "check the folders' permissions") from None
    except OSError:
        raise InputError(f"{role} file not found: {path} (check the path)") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{role} {path} is a folder, not a file; give the path of the file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{role} {path} is not a regular file; give the path of an image file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{role} file {path} cannot be read: permission denied; check its permissions")
    return path


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` is a host or accelerator out-of-memory failure."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
        or "failed to allocate memory" in text  # ITK's image buffer allocation
    )
