"""``python -m shmoareg`` runs the command line."""

import signal
import sys

from shmoareg.errors import ExitCode

# A SIGTERM or SIGINT while the modules load (before the command line installs its own handlers) cancels too.
for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, lambda signum, frame: sys.exit(ExitCode.CANCELLED))

from shmoareg.cli import main  # noqa: E402 (after the handlers, on purpose)

raise SystemExit(main())
