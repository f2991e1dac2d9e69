"""A brain-shaped training label map from FreeSurfer's fsaverage5 surfaces (not a benchmark subject).

``compare.py`` scores MNI152 2009a and Colin27, so neither may shape the training data. fsaverage (an
average of 40 subjects' cortical surfaces, in MNI305 space) ships with nilearn as fsaverage5 meshes; this
script fills its pial and white surfaces (VTK's polydata stencil) on a 1 mm grid and writes a label map:

* 1: a 3 mm shell outside the pial surface (sulcal and surface CSF);
* 2, 3: cortex (between the white and pial surfaces), left and right;
* 4, 5: white matter (inside the white surface: with the deep grey nuclei and ventricles it encloses);
* 6, 7: the white matter more than 8 mm inside the white surface (the deep core), left and right.

Run: ``.venv/bin/python benchmarks/brain_shapes.py [--output runs/data/fsaverage5_labels.nii.gz]``
(``make brain-shapes``). The nilearn wheel is fetched from PyPI into ``benchmarks/out/sources`` once.
"""

from __future__ import annotations

import argparse
import gzip
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

import sources

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out" / "sources"
DEFAULT_OUTPUT = HERE.parent / "runs" / "data" / "fsaverage5_labels.nii.gz"
SURFACES = "nilearn/datasets/data/fsaverage5/{kind}_{side}.gii.gz"
SPACING_MM = 1.0
MARGIN_MM = 6.0
CSF_SHELL_MM = 3
DEEP_WHITE_MM = 8
CSF, CORTEX, WHITE, DEEP_WHITE = 1, 2, 4, 6  # label of the left side; the right side is one more


def read_surface(archive: zipfile.ZipFile, kind: str, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm) and triangles of one fsaverage5 surface from the nilearn wheel."""
    with archive.open(SURFACES.format(kind=kind, side=side)) as member:
        surface = nibabel.GiftiImage.from_bytes(gzip.decompress(member.read()))
    return surface.darrays[0].data.astype(np.float64), surface.darrays[1].data.astype(np.int64)


def fill(vertices: np.ndarray, triangles: np.ndarray, origin: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Boolean (Z, Y, X) mask of the voxels inside a closed triangle mesh."""
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(vertices, deep=1))
    cells = vtk.vtkCellArray()
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(triangles) + 1, 3), deep=1),
                  numpy_support.numpy_to_vtkIdTypeArray(triangles.ravel(), deep=1))
    mesh = vtk.vtkPolyData()
    mesh.SetPoints(points)
    mesh.SetPolys(cells)
    stencil = vtk.vtkPolyDataToImageStencil()
    stencil.SetInputData(mesh)
    stencil.SetOutputOrigin(*origin)
    stencil.SetOutputSpacing(SPACING_MM, SPACING_MM, SPACING_MM)
    stencil.SetOutputWholeExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    ones = vtk.vtkImageData()
    ones.SetOrigin(*origin)
    ones.SetSpacing(SPACING_MM, SPACING_MM, SPACING_MM)
    ones.SetDimensions(*(int(n) for n in dims))
    ones.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    ones.GetPointData().GetScalars().Fill(1)
    cut = vtk.vtkImageStencil()
    cut.SetInputData(ones)
    cut.SetStencilConnection(stencil.GetOutputPort())
    cut.SetBackgroundValue(0)
    cut.Update()
    values = numpy_support.vtk_to_numpy(cut.GetOutput().GetPointData().GetScalars())
    return values.reshape(tuple(int(n) for n in dims[::-1])).astype(bool)


def _morphology(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    operation = sitk.BinaryDilate if dilate else sitk.BinaryErode
    return sitk.GetArrayFromImage(operation(image, [radius] * 3)).astype(bool)


def brain_labels(archive: zipfile.ZipFile) -> sitk.Image:
    """The label map described in the module docstring, on a 1 mm grid around both hemispheres."""
    surfaces = {(kind, side): read_surface(archive, kind, side) for kind in ("pial", "white")
                for side in ("left", "right")}
    every_vertex = np.vstack([vertices for vertices, _ in surfaces.values()])
    origin = every_vertex.min(0) - MARGIN_MM
    dims = np.ceil((every_vertex.max(0) + MARGIN_MM - origin) / SPACING_MM).astype(int) + 1
    masks = {key: fill(*surface, origin, dims) for key, surface in surfaces.items()}
    pial = masks[("pial", "left")] | masks[("pial", "right")]
    labels = np.zeros(pial.shape, dtype=np.uint8)
    labels[_morphology(pial, CSF_SHELL_MM, dilate=True) & ~pial] = CSF
    for offset, side in enumerate(("left", "right")):
        white = masks[("white", side)]
        labels[masks[("pial", side)] & ~white] = CORTEX + offset
        labels[white] = WHITE + offset
        labels[_morphology(white, DEEP_WHITE_MM, dilate=False)] = DEEP_WHITE + offset
    image = sitk.GetImageFromArray(labels)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing((SPACING_MM,) * 3)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    with zipfile.ZipFile(sources.nilearn_wheel(CACHE.resolve())) as archive:
        write_labels(brain_labels(archive), args.output)


def write_labels(labels: sitk.Image, output: Path) -> None:
    """Write a training label map (compressed) and say its size, spacing and voxels per label."""
    output.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(labels, str(output), useCompression=True)
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel())
    print(f"{output}: {labels.GetSize()} at {labels.GetSpacing()[0]:.2f} mm, voxels per label {counts.tolist()}")


if __name__ == "__main__":
    main()
