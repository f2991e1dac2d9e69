"""``python -m shmoareg`` runs the command line."""

from shmoareg.cli import main

raise SystemExit(main())
