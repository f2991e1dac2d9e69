"""Shared helpers of the engine tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m shmoareg`` in a separate process and capture its output."""
    return subprocess.run([sys.executable, "-m", "shmoareg", *args], capture_output=True, text=True,
                          timeout=timeout)
