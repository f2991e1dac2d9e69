"""What ships inside the ``shmoareg`` package (model weights, the sample pair); standard library only.

Both are package data, so a checkout, a plain ``pip install`` and the installed Slicer extension (CMake copies
the package with them) find them in the same place, beside this file.
"""

from __future__ import annotations

from pathlib import Path

from shmoareg.protocol import WEIGHTS_SUFFIX, default_first

PACKAGE = Path(__file__).resolve().parent
# The shipped weights: <model name><WEIGHTS_SUFFIX> and its JSON sidecar.
WEIGHTS_DIR = PACKAGE / "weights"
# The demo's sample pair (MNI152 and Colin27 T1 at 2 mm; attribution in LICENSE).
SAMPLE_DATA_DIR = PACKAGE / "sample_data"
SAMPLE_PAIR = {"fixed": SAMPLE_DATA_DIR / "mni152_2009a_t1_2mm.nii.gz",
               "moving": SAMPLE_DATA_DIR / "colin27_t1_2mm.nii.gz"}


def shipped_models() -> tuple[str, ...]:
    """The networks whose weights ship (``weights/<name>.safetensors``), the default first: what the Slicer module
    and the benchmark offer without importing torch (a test checks them against the registry)."""
    return default_first(path.name[:-len(WEIGHTS_SUFFIX)] for path in WEIGHTS_DIR.glob("*" + WEIGHTS_SUFFIX))
