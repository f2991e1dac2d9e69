"""The README documents the command line's protocol as the code defines it."""

from __future__ import annotations

import re
from pathlib import Path

from shmoareg.protocol import ExitCode

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_exit_codes_section_lists_exactly_the_exit_codes():
    section = README.read_text().split("### Exit codes and errors", 1)[1].split("Bad input includes", 1)[0]
    listed = {int(code) for code in re.findall(r"`(\d+)` [a-z]", section)}
    assert listed == {int(code) for code in ExitCode}
