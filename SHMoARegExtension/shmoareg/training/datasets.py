"""Image pairs on disk: a Learn2Reg-style ``dataset.json`` or a plain folder of images.

``dataset.json`` (paths relative to its folder): ``training`` lists ``{"image", "label"?}``;
``training_paired_images``, ``registration_val`` and ``registration_test`` list
``{"fixed", "moving"}`` pairs whose label maps are looked up from the image entries. A plain
folder holds images (directly or in ``images/``) and optionally ``labels/`` with label maps of
the same file names; its training pairs are any two different images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from shmoareg.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PAIR_SPLITS = ("training_paired_images", "registration_val", "registration_test")


@dataclass(frozen=True)
class Pair:
    """A fixed/moving pair of image files with optional label maps."""

    fixed: Path
    moving: Path
    fixed_label: Optional[Path] = None
    moving_label: Optional[Path] = None

    @property
    def identifier(self) -> str:
        """``<fixed stem>_<moving stem>``, the Learn2Reg naming."""
        return f"{_stem(self.fixed)}_{_stem(self.moving)}"


@dataclass
class DatasetIndex:
    """The images (with labels where known) and the listed pairs of a dataset."""

    source: Path
    images: list[Path]
    labels: dict[Path, Path]
    pairs: dict[str, list[Pair]]
    sha256: Optional[str] = None

    def pair(self, fixed: Path, moving: Path) -> Pair:
        """A pair of two of the dataset's images, with their labels."""
        return Pair(fixed, moving, self.labels.get(fixed), self.labels.get(moving))

    def describe(self) -> dict[str, Any]:
        """Provenance: where the dataset is, its hash and its sizes."""
        return {"path": str(self.source), "sha256": self.sha256, "images": len(self.images),
                "labelled_images": len(self.labels), "pairs": {k: len(v) for k, v in self.pairs.items()}}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.endswith(IMAGE_SUFFIXES)


def read_dataset(path: str | os.PathLike) -> DatasetIndex:
    """Index a ``dataset.json``, a folder holding one, or a plain folder of images."""
    path = Path(path)
    if path.is_dir() and (path / "dataset.json").is_file():
        path = path / "dataset.json"
    if path.is_file():
        return _read_json(path)
    if path.is_dir():
        return _read_folder(path)
    raise InputError(f"dataset not found: {path} (give a dataset.json, or a folder of images)")


def _read_json(path: Path) -> DatasetIndex:
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"dataset file {path} is not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise InputError(f"dataset file {path} must hold a JSON object with a 'training' list")
    root = path.parent

    def resolve(entry: dict, key: str) -> Path:
        if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
            raise InputError(f"dataset file {path}: an entry lacks the {key!r} path: {str(entry)[:80]}")
        return (root / entry[key]).resolve()

    images, labels = [], {}
    for entry in content.get("training", []) + content.get("test", []):
        image = resolve(entry, "image")
        images.append(image)
        if entry.get("label"):
            labels[image] = resolve(entry, "label")
    index = DatasetIndex(path, images, labels, {}, hashlib.sha256(path.read_bytes()).hexdigest())
    for split in PAIR_SPLITS:
        index.pairs[split] = [index.pair(resolve(p, "fixed"), resolve(p, "moving")) for p in content.get(split) or []]
    _check_exists(index)
    return index


def _read_folder(path: Path) -> DatasetIndex:
    folder = path / "images" if (path / "images").is_dir() else path
    images = sorted(p.resolve() for p in folder.iterdir() if _is_image(p))
    if len(images) < 2:
        raise InputError(f"dataset folder {folder} holds {len(images)} images (.nii.gz, .nii, .nrrd, .mha); "
                         "training needs at least 2")
    label_folder = path / "labels"
    labels = {image: (label_folder / image.name).resolve() for image in images
              if (label_folder / image.name).is_file()}
    return DatasetIndex(path, images, labels, {split: [] for split in PAIR_SPLITS})


def _check_exists(index: DatasetIndex) -> None:
    files = list(index.images) + list(index.labels.values())
    for pairs in index.pairs.values():
        for pair in pairs:
            files += [f for f in (pair.fixed, pair.moving, pair.fixed_label, pair.moving_label) if f is not None]
    missing = sorted({str(f) for f in files if not f.is_file()})
    if missing:
        raise InputError(f"dataset {index.source} lists {len(missing)} files that do not exist, e.g. {missing[0]}")
