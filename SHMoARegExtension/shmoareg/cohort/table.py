"""The pairs table of ``batch``: a CSV file, checked whole before anything runs.

Columns: ``id``, ``fixed``, ``moving`` and optionally ``fixed_seg``, ``moving_seg``, ``fixed_landmarks``,
``moving_landmarks`` (an empty optional cell means none for that pair). Relative paths start at the
table's folder. Ids name the pairs' output folders. Every problem (missing or unknown columns, no
rows, malformed rows, empty, unsafe, reserved or repeated ids, missing files, one landmark file
without the other) is reported in one :class:`InputError`.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from shmoareg.cli import INPUT_IMAGES
from shmoareg.errors import InputError, require_file
from shmoareg.protocol import REPORT_FILE, RESULTS_CSV_FILE, RESULTS_JSON_FILE

REQUIRED_COLUMNS = ("id", "fixed", "moving")
# The input files of a pair by column, with the role that names them in messages (those of ``register``).
FILE_COLUMNS = {**INPUT_IMAGES, "fixed_landmarks": "fixed landmarks", "moving_landmarks": "moving landmarks"}
COLUMNS = ("id", *FILE_COLUMNS)
# A pair's folder name: letters, digits, '.', '_' and '-', not starting with '.', '_' or '-'.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RESERVED_IDS = {name.lower() for name in (REPORT_FILE, RESULTS_CSV_FILE, RESULTS_JSON_FILE)}


@dataclass(frozen=True)
class PairRow:
    """One pair of the table, with absolute paths."""

    identifier: str
    fixed: Path
    moving: Path
    fixed_seg: Optional[Path] = None
    moving_seg: Optional[Path] = None
    fixed_landmarks: Optional[Path] = None
    moving_landmarks: Optional[Path] = None


def read_pairs(path: str | os.PathLike) -> list[PairRow]:
    """The pairs of the CSV table at ``path``; :class:`InputError` listing every problem when it has any."""
    path = require_file(path, "pairs table")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            lines = list(csv.reader(stream))
    except UnicodeDecodeError:
        raise InputError(f"pairs table {path} is not UTF-8 text; save it as a UTF-8 CSV file") from None
    except csv.Error as error:
        raise InputError(f"pairs table {path} is not a readable CSV file ({error})") from None
    numbered = [(number, [cell.strip() for cell in line]) for number, line in enumerate(lines, 1) if any(line)]
    if not numbered:
        raise InputError(f"pairs table {path} is empty; give a header line ({', '.join(COLUMNS)}) and one line "
                         "per pair")
    (_, header), rows = numbered[0], numbered[1:]
    problems = _header_problems(header)
    if not rows:
        problems.append("it lists no pairs (one line per pair under the header)")
    pairs, first_line = [], {}
    for number, cells in rows:
        if len(cells) != len(header):
            problems.append(f"line {number} has {len(cells)} fields where the header has {len(header)} "
                            "(quote a path that holds a comma)")
            continue
        row = dict(zip(header, cells))
        identifier = row.get("id", "")
        if "id" in header:
            problems += _id_problems(identifier, number, first_line)
        files = {column: _resolve(row.get(column, ""), path.parent) for column in FILE_COLUMNS}
        problems += [f"line {number}: {problem}" for problem in _file_problems(files, header)]
        pairs.append(PairRow(identifier, **files))
    if problems:
        raise InputError(f"pairs table {path} has {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
                         + "; ".join(problems) + " (nothing was run; fix them all and run again)")
    return pairs


def _header_problems(header: list[str]) -> list[str]:
    problems = []
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        problems.append(f"it lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(its header: {', '.join(header)})")
    unknown = [column for column in header if column not in COLUMNS]
    if unknown:
        problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(the columns are {', '.join(COLUMNS)})")
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        problems.append(f"the header repeats {', '.join(repeated)}")
    return problems


def _id_problems(identifier: str, number: int, first_line: dict[str, int]) -> list[str]:
    """What is wrong with a pair's id (``first_line`` records the line of each id seen, in lower case)."""
    if not identifier:
        return [f"line {number} has no id"]
    problems = []
    if not SAFE_ID.fullmatch(identifier):
        problems.append(f"line {number}: id {identifier!r} is not a safe folder name (use at most 100 letters, "
                        "digits, '.', '_' and '-', starting with a letter or digit)")
    elif identifier.lower() in RESERVED_IDS:
        problems.append(f"line {number}: id {identifier!r} is the name of one of batch's own files; choose another")
    key = identifier.lower()
    if key in first_line:
        problems.append(f"line {number}: id {identifier!r} repeats the id of line {first_line[key]} (ids name the "
                        "pairs' folders, so they must differ, also in letter case)")
    else:
        first_line[key] = number
    return problems


def _resolve(cell: str, folder: Path) -> Optional[Path]:
    """A cell's path, relative ones from the table's folder; None for an empty cell."""
    if not cell:
        return None
    return Path(os.path.abspath(folder / cell))


def _file_problems(files: dict[str, Optional[Path]], header: list[str]) -> list[str]:
    problems = [f"no {FILE_COLUMNS[column]} ({column} is empty)" for column in ("fixed", "moving")
                if column in header and files[column] is None]
    for column, path in files.items():
        if path is not None:
            try:
                require_file(path, FILE_COLUMNS[column])
            except InputError as error:
                problems.append(str(error))
    if (files["fixed_landmarks"] is None) != (files["moving_landmarks"] is None):
        problems.append("give both fixed_landmarks and moving_landmarks, or neither")
    return problems
