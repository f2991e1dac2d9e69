"""``python -m shmoareg`` runs the command line."""

import os
import signal
import sys

from shmoareg.protocol import ExitCode

# A SIGTERM or SIGINT while the modules load (before the command line installs its own handlers) cancels too.
for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, lambda signum, frame: sys.exit(ExitCode.CANCELLED))

from shmoareg.cli import main  # noqa: E402 (after the handlers, on purpose)

_code = main()
# Leave at once with the command's code: during the interpreter's shutdown (seconds with torch loaded) Python's
# signal handlers are gone, and a SIGTERM there ended the process with 143 instead of the documented 130.
sys.stdout.flush()
sys.stderr.flush()
os._exit(_code)
