"""The output folder of a run: held by one run at a time, written through a staging folder, never mixed.

Files are written to a hidden staging folder and moved into place only when the whole run
succeeded, so a failed or cancelled run leaves nothing that looks like a result. ``summary.json``
lists the run's files; the next run into the folder removes the files of the earlier run that it
does not write itself, so two runs' outputs never stand side by side (other files are left alone).
A lock on the folder keeps a second run out while one is running, and the run holding it removes
staging folders left by a killed run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from shmoareg.errors import InputError, NoSpace, require_utf8
from shmoareg.jsonio import dumps
from shmoareg.nifti_check import check_nifti, is_nifti_name
from shmoareg.protocol import COMPLETION_MARKER, FILES_KEY, OUTPUT_FOLDERS, OUTPUT_NAMES

STAGING_PREFIX = ".shmoareg-staging-"
# Bytes a run writes at most, about: per voxel of the transform's lattice the field in transform.h5 (3 float64),
# and when asked displacement.nii (3 float32) and jacobian.nii (float32); per fixed-image voxel the compressed
# images (about 2 bytes each).
BYTES_PER_LATTICE_VOXEL = 24 + 12 + 4
BYTES_PER_FIXED_VOXEL = 3 * 2
MEGABYTE = 1 << 20


class OutputFolder:
    """A writable output folder, locked for one run until :meth:`release` (also a context manager)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = require_utf8(path, "output folder")
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output folder {self.path} is a file; give a folder path with --output-dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".shmoareg-write-test-"):
                pass
        except OSError as error:
            raise InputError(f"output folder {self.path} is not writable ({error.strerror}); choose another "
                             "--output-dir") from None
        self._lock = os.open(self.path, os.O_RDONLY)  # the folder itself is the lock: nothing is left behind
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise InputError(f"another shmoareg run is writing to {self.path}; wait for it to finish or choose "
                             "another --output-dir") from None
        for stale in self.path.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)

    def check_inputs(self, inputs: Iterable[Optional[Path]]) -> None:
        """Refuse an input that is an output of this folder (by path, or the same file by a hard link)."""
        outputs = [self.path / name for name in (*OUTPUT_NAMES, *earlier_files(self.path))]
        for given in (Path(p) for p in inputs if p is not None):
            folders = [self.path.resolve(), *((self.path / folder).resolve() for folder in OUTPUT_FOLDERS)]
            inside = given.resolve().parent in folders
            named = given.name in OUTPUT_NAMES or given.resolve().parent.name in OUTPUT_FOLDERS
            same = any(output.is_file() and given.is_file() and os.path.samefile(given, output) for output in outputs)
            if (inside and named) or same:
                raise InputError(f"input {given} is a file this run would write in {self.path}; move it out of the "
                                 "output folder (or copy it) or choose another --output-dir")

    def release(self) -> None:
        """Let other runs write to the folder."""
        os.close(self._lock)

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def earlier_files(folder: Path) -> list[str]:
    """The files an earlier complete run listed in the folder's summary.json (none when there is none)."""
    try:
        listed = json.loads((folder / COMPLETION_MARKER).read_text()).get(FILES_KEY, [])
    except (OSError, ValueError, AttributeError):
        return []
    return [name for name in listed if isinstance(name, str) and ".." not in Path(name).parts]


class StagedOutputs:
    """Collects output files in ``<output>/.shmoareg-staging-*`` and publishes them atomically per file."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
        self._checked: set[str] = set()

    def ensure_space(self, fixed_voxels: int, lattice_voxels: int) -> None:
        """Raise :class:`NoSpace` before anything is written when the disk cannot hold the outputs."""
        needed = BYTES_PER_FIXED_VOXEL * fixed_voxels + BYTES_PER_LATTICE_VOXEL * lattice_voxels
        free = shutil.disk_usage(self.staging).free
        if free < needed:
            raise self.no_space(f"{free // MEGABYTE} MB free, the outputs need about {needed // MEGABYTE + 1} MB")

    def no_space(self, detail: str) -> NoSpace:
        """The error for a full disk under the output folder (the staging folder is removed)."""
        self.discard()
        return NoSpace(self._no_space_message(detail))

    def _no_space_message(self, detail: str) -> str:
        return (f"no space left on the disk of {self.output_dir} ({detail}); free some space or choose another "
                "--output-dir (nothing was written)")

    def full_disk(self, error: BaseException) -> bool:
        """Whether a failed write was the disk filling up (ITK's writers do not say; their errors carry no errno)."""
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        return isinstance(error, RuntimeError) and shutil.disk_usage(self.output_dir).free < MEGABYTE

    def check_written(self) -> None:
        """Every staged NIfTI file is complete (ITK's writer does not report a short write on a full disk); those
        already checked by :meth:`check_file` are not read again. On a file cut short the staging folder is removed."""
        for relative in self.files():
            if is_nifti_name(Path(relative)) and relative not in self._checked:
                try:
                    self.check_file(relative)
                except NoSpace:
                    self.discard()
                    raise

    def check_file(self, relative: str) -> None:
        """Check one staged NIfTI file as :meth:`check_written` does (e.g. in the thread that wrote it, beside other
        work); raises :class:`NoSpace` when it was cut short, leaving the staging folder to the caller."""
        try:
            check_nifti(self.staging / relative, "output")
        except InputError:
            raise NoSpace(self._no_space_message(f"{relative} was cut short")) from None
        self._checked.add(relative)

    def path(self, name: str) -> Path:
        """Where to write output ``name`` (a relative path) while staging."""
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def files(self) -> list[str]:
        """The relative paths staged so far."""
        return sorted(str(p.relative_to(self.staging)) for p in self.staging.rglob("*") if p.is_file())

    def write_json(self, name: str, content: dict) -> Path:
        """Write a JSON output file (strict JSON)."""
        target = self.path(name)
        target.write_text(dumps(content, indent=2) + "\n")
        return target

    def publish(self) -> dict[str, str]:
        """Move every staged file into the output folder (the completion marker last) and remove the files of
        the earlier run there that this run did not write."""
        staged = self.files()
        earlier = set(earlier_files(self.output_dir)) - set(staged)
        # Remove an older completion marker first so a mixed set never looks complete.
        (self.output_dir / COMPLETION_MARKER).unlink(missing_ok=True)
        published = self.move_in()
        for relative in earlier:
            (self.output_dir / relative).unlink(missing_ok=True)
        return published

    def move_in(self) -> dict[str, str]:
        """Move every staged file into the output folder (the completion marker last), replacing files of the
        same name and leaving all others alone; the staging folder is removed. Returns name -> path."""
        staged = sorted(self.files(), key=lambda name: name == COMPLETION_MARKER)
        published = {}
        for relative in staged:
            target = self.output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / relative, target)
            published[relative] = str(target)
        self.discard()
        return published

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        shutil.rmtree(self.staging, ignore_errors=True)
