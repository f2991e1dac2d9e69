"""A second brain-shaped training label map: the INIA19 macaque template's tissue classes, scaled to human size.

fsaverage5's filled surfaces (``brain_shapes.py``) are one smooth average cortex with white matter inside it: no
ventricles, no deep grey nuclei, no cerebellum or brainstem, and one fold pattern. The INIA19 template (Debian's
``mricron-data``: ``inia19-t1-brain``, a skull-stripped macaque T1 at 0.5 mm; not a brain that ``compare.py``
scores) is a real brain scan with all of those. This script splits its voxels into three tissue classes by
intensity (``shmoareg.known_warps.tissue_labels``: Otsu thresholds over the brain, dark to bright), splits grey
and white matter at the midline into left and right, and writes them with the labels of ``brain_shapes.py``:

* 1: CSF (the darkest class: ventricles, sulci);
* 2, 3: grey matter (cortex and deep nuclei), left and right;
* 4, 5: white matter, left and right;
* 6, 7: the white matter more than ``DEEP_WHITE_MM`` inside its boundary, left and right.

The voxel spacing is scaled (``human_sized``) so that the brain has the volume of fsaverage5's (``BRAIN_ML``): a
training window cut at 2.2-3.4 mm per voxel then holds as much brain as a human head's does.

Run: ``.venv/bin/python benchmarks/macaque_shapes.py [--output runs/data/inia19_labels.nii.gz]``
(``make brain-shapes``). ``mricron-data`` is fetched from Debian into ``benchmarks/out/sources`` once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import sources
from brain_shapes import CSF, CORTEX, DEEP_WHITE, DEEP_WHITE_MM, WHITE, write_labels
from shmoareg.known_warps import brain_mask, tissue_labels

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out" / "sources"
DEFAULT_OUTPUT = HERE.parent / "runs" / "data" / "inia19_labels.nii.gz"
TEMPLATE = "inia19-t1-brain.nii.gz"
BRAIN_ML = 1000.0  # fsaverage5's filled pial surfaces (runs/data/fsaverage5_labels.nii.gz, labels 2-7): 999 ml


def human_sized(t1: sitk.Image) -> sitk.Image:
    """A copy of the skull-stripped ``t1`` with its spacing and origin scaled so that its brain (nonzero voxels,
    holes filled) has the volume :data:`BRAIN_ML`."""
    brain = sitk.GetArrayFromImage(brain_mask(t1)) > 0
    if not brain.any():
        raise ValueError("the template has no brain voxels (nothing above 0)")
    millilitres = float(brain.sum()) * float(np.prod(t1.GetSpacing())) / 1000.0
    factor = (BRAIN_ML / millilitres) ** (1.0 / 3.0)
    scaled = sitk.Image(t1)
    scaled.SetSpacing(tuple(factor * s for s in t1.GetSpacing()))
    scaled.SetOrigin(tuple(factor * o for o in t1.GetOrigin()))
    return scaled


def brain_labels(t1: sitk.Image) -> sitk.Image:
    """The label map of the module docstring from a skull-stripped T1 (:func:`human_sized` first), on its grid."""
    brain = sitk.GetArrayFromImage(brain_mask(t1)).astype(bool)
    classes = sitk.GetArrayFromImage(tissue_labels(t1))  # 1..3: CSF, grey, white matter (0 outside)
    occupied_x = np.flatnonzero(brain.any(axis=(0, 1)))
    right = np.arange(brain.shape[2]) > (occupied_x[0] + occupied_x[-1]) / 2.0  # voxel x past the midline
    side = np.broadcast_to(right[None, None, :], brain.shape).astype(np.uint8)
    grey, white = classes == 2, classes == 3
    labels = np.zeros(brain.shape, dtype=np.uint8)
    labels[classes == 1] = CSF
    labels[grey] = CORTEX + side[grey]
    labels[white] = WHITE + side[white]
    radius = max(1, round(DEEP_WHITE_MM / min(t1.GetSpacing())))
    deep = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(white.astype(np.uint8)),
                                                   [radius] * 3)).astype(bool)
    labels[deep] = DEEP_WHITE + side[deep]
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(t1)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    t1 = sitk.ReadImage(str(sources.mricron_template(CACHE, TEMPLATE)), sitk.sitkFloat32)
    write_labels(brain_labels(human_sized(t1)), args.output)


if __name__ == "__main__":
    main()
