"""Training label maps cut from label-map files (an anatomy's shapes) instead of random blobs.

SynthMorph's brain variant trains on label maps of real anatomy; a network trained on random blobs
alone learns little of how cortex folds. A :class:`LabelShapes` holds label-map files in memory and cuts
training label maps from them: a window of the training shape at a random spacing (mm per training voxel)
around a random point near the labels' centre, sampled nearest. The pair synthesis then deforms and
renders it as it does a random label map.

A brain mirrored left to right (its first voxel axis, about the labels' centre) with its left and right
labels swapped is a second brain with the same tissues and other folds, as two subjects differ. Asked for a
mirrored cut, :meth:`LabelShapes.draw` returns both brains in the same window as two channels: the pair
synthesis deforms the second (the fixed image's) and keeps the first (the moving image's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg.errors import InputError
from shmoareg.imageio import read_label_map

# How far (as a share of the labels' extent on each axis) a window's centre may stray from the labels' centre.
CENTRE_JITTER = 0.1


@dataclass
class _LabelVolume:
    sha256: str  # of the file as it was read
    labels: torch.Tensor  # (1, 1, Z, Y, X) float, for grid_sample
    spacing: np.ndarray  # mm, x y z
    centre: np.ndarray  # voxel index of the labels' bounding-box centre, x y z
    extent: np.ndarray  # voxels, x y z


class LabelShapes:
    """Label-map files (isotropic or not, any direction: only voxel indices and spacing are used) to cut from."""

    def __init__(self, paths: list[str]) -> None:
        if not paths:
            raise InputError("label_maps is empty: list the label-map files to cut training label maps from")
        self.paths = [Path(path) for path in paths]
        self._volumes = [self._read(path) for path in self.paths]

    @staticmethod
    def _read(path: Path) -> _LabelVolume:
        if not path.is_file():
            raise InputError(f"label map {path} not found (make it with `make brain-shapes`, see the training "
                             "section of the README)")
        image = read_label_map(path, "training label map")
        values = sitk.GetArrayFromImage(image)
        if values.max() > 255:
            raise InputError(f"training label map {path} has label {values.max()}; use at most 255 labels")
        occupied = np.argwhere(values > 0)  # z, y, x
        low, high = occupied.min(0)[::-1], occupied.max(0)[::-1]
        return _LabelVolume(hashlib.sha256(path.read_bytes()).hexdigest(),
                            torch.from_numpy(values.astype(np.float32))[None, None],
                            np.asarray(image.GetSpacing(), dtype=np.float64), (low + high) / 2.0,
                            (high - low + 1).astype(np.float64))

    def describe(self) -> list[dict]:
        """Each file's path and the sha256 of what was read from it (training provenance)."""
        return [{"path": str(path), "sha256": volume.sha256} for path, volume in zip(self.paths, self._volumes)]

    def draw(self, shape: tuple[int, int, int], spacing_range: tuple[float, float], generator: torch.Generator,
             mirror_swaps: Optional[dict[int, int]] = None) -> torch.Tensor:
        """A label map ``(1, 1, Z, Y, X)`` (uint8) of ``shape``: one file, a spacing drawn in ``spacing_range``.

        With ``mirror_swaps`` (each left label and its right one, both ways), a second channel holds the same
        window of the file mirrored left to right about the labels' centre, its labels swapped.
        """
        volume = self._volumes[int(torch.randint(len(self._volumes), (1,), generator=generator))]
        low, high = spacing_range
        spacing = low + (high - low) * float(torch.rand(1, generator=generator))
        jitter = (torch.rand(3, generator=generator, dtype=torch.float64).numpy() * 2 - 1) * CENTRE_JITTER
        centre = volume.centre + jitter * volume.extent
        size = np.asarray(shape[::-1], dtype=np.float64)  # x y z
        axes = [torch.as_tensor(centre[a] + (np.arange(size[a]) - (size[a] - 1) / 2) * spacing / volume.spacing[a])
                for a in range(3)]
        dims = np.asarray(volume.labels.shape[2:][::-1], dtype=np.float64)  # x y z
        normalised = [(2 * axes[a] / (dims[a] - 1) - 1).float() for a in range(3)]
        cuts = [_cut(volume.labels, normalised)]
        if mirror_swaps is not None:
            mirrored_x = (2 * (2 * volume.centre[0] - axes[0]) / (dims[0] - 1) - 1).float()
            swapped = torch.arange(256, dtype=torch.uint8)
            for label, other in mirror_swaps.items():
                swapped[label] = other
            cuts.append(swapped[_cut(volume.labels, [mirrored_x, *normalised[1:]]).long()])
        return torch.cat(cuts, dim=1)


def _cut(labels: torch.Tensor, normalised: list[torch.Tensor]) -> torch.Tensor:
    """``labels`` sampled nearest (0 outside) at the normalised coordinates of each axis (x, y, z), uint8."""
    z, y, x = torch.meshgrid(normalised[2], normalised[1], normalised[0], indexing="ij")
    grid = torch.stack((x, y, z), dim=-1)[None]
    return F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=True).to(torch.uint8)
