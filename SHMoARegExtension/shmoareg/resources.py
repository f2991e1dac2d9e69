"""Where the engine finds what ships with it (model weights, the sample pair); standard library only.

In a checkout they are in the repository's top-level ``Resources/``; in an installed Slicer extension CMake puts
them in ``Resources/`` of the module folder, beside the ``shmoareg`` package. Both places are searched, in
that order; a plain ``pip install`` of the package carries neither (see the README).
"""

from __future__ import annotations

from pathlib import Path

from shmoareg.protocol import WEIGHTS_SUFFIX, default_first

PACKAGE = Path(__file__).resolve().parent
RESOURCE_DIRS = (PACKAGE.parent.parent / "Resources", PACKAGE.parent / "Resources")


def resource_dir(name: str) -> Path:
    """The first ``Resources/<name>`` folder that exists (the checkout's when none does, so errors name it)."""
    return next((folder / name for folder in RESOURCE_DIRS if (folder / name).is_dir()), RESOURCE_DIRS[0] / name)


def shipped_models() -> tuple[str, ...]:
    """The networks whose weights ship (``Resources/models/<name>.safetensors``), the default first: what the
    Slicer module and the benchmark offer without importing torch (a test checks them against the registry)."""
    return default_first(path.name[:-len(WEIGHTS_SUFFIX)] for path in resource_dir("models").glob("*" + WEIGHTS_SUFFIX))
