"""Staged output folder: files are written to a hidden staging folder and moved into place only
when the whole run succeeded, so a failed or cancelled run leaves nothing that looks like a result."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from shmoareg.errors import InputError
from shmoareg.jsonio import dumps

# summary.json is moved last: its presence marks a complete set of outputs.
COMPLETION_MARKER = "summary.json"


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output folder {path} is a file; give a folder path with --output-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".shmoareg-write-test-"):
            pass
    except OSError as error:
        raise InputError(f"output folder {path} is not writable ({error.strerror}); choose another "
                         "--output-dir") from None
    return path


class StagedOutputs:
    """Collects output files in ``<output>/.shmoareg-staging-*`` and publishes them atomically per file."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.staging = Path(tempfile.mkdtemp(prefix=".shmoareg-staging-", dir=output_dir))

    def path(self, name: str) -> Path:
        """Where to write output ``name`` (a relative path) while staging."""
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, content: dict) -> Path:
        """Write a JSON output file."""
        target = self.path(name)
        target.write_text(dumps(content, indent=2) + "\n")
        return target

    def publish(self) -> dict[str, str]:
        """Move every staged file into the output folder (the completion marker last)."""
        staged = sorted(p for p in self.staging.rglob("*") if p.is_file())
        staged.sort(key=lambda p: p.name == COMPLETION_MARKER)
        # Remove an older completion marker first so a mixed set never looks complete.
        (self.output_dir / COMPLETION_MARKER).unlink(missing_ok=True)
        published = {}
        for source in staged:
            relative = source.relative_to(self.staging)
            target = self.output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            published[str(relative)] = str(target)
        self.discard()
        return published

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        shutil.rmtree(self.staging, ignore_errors=True)

