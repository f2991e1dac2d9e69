"""Strict JSON: every file and line the engine writes parses with any JSON parser.

Python's ``json`` writes ``NaN`` and ``Infinity``, which strict parsers (JavaScript, jq, Go) reject;
here a missing or undefined number is written as ``null``. Numpy values and paths are converted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def strict(value: Any) -> Any:
    """``value`` with non-finite floats as None, numpy values as Python ones and paths as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return strict(value.tolist())
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(value)``, refusing anything that would still not be strict JSON."""
    return json.dumps(strict(value), allow_nan=False, **options)
