"""Training pairs from real brain anatomy: two different subjects' label maps (and real scans where there are).

SynthMorph's lesson for brains: a network learns inter-subject registration from pairs of *different* real
subjects, rendered with a random contrast per label, at the scale where it is used. Here:

* **Subjects** are label maps in FreeSurfer numbering (SynthSeg's whole-head training maps, Mindboggle's manual
  DKT31 labels), optionally with their T1 scan. Once per file, each is aligned to a common reference (the shipped
  MNI152 2 mm sample) by the engine's own affine (:func:`shmoareg.affine.initialise_affine`, on the scan or on a
  T1-like image drawn from the labels) and resampled onto the reference grid. What is left between two subjects
  is what ``register``'s network sees after its affine: anatomy and a small residual. The result is cached in
  ``cache_dir`` as ``<subject>-<key>.npz`` (:func:`cache_path`); a recipe may list such cache files instead of
  the source files (a lent GPU receives the cache, not ../shared/data; :func:`make_cache` makes it).
* **A pair** is two subjects cut on the same window: a cube of ``shape`` voxels at a random spacing around the
  brain's centre, in a random signed permutation of the axes (images reach ``register`` in any orientation) and a
  shared random rotation; the moving side gets a small affine residual and a random smooth deformation.
* **Images**: with probability ``real_image_share`` (both subjects have scans) the real scans, else each label
  map rendered with a random intensity per tissue label (DKT31 parcels count as cortex; a contrast per image, or
  one shared for a share ``same_contrast_share``), noise, blur (partial volume), bias and gamma
  (:func:`render_intensities`).
  Extra-cerebral labels (``EXTRA_CEREBRAL``) are rendered as background for a share ``strip_share`` (as for a
  skull-stripped scan). Mindboggle leaves cerebral white matter unlabelled: inside the scan's brain it becomes
  label 2, so it is rendered as tissue.
* **Labels for the Dice loss** are the labels both subjects have (DKT31 parcels between two Mindboggle
  subjects; a SynthSeg map has one cortex label per hemisphere, so with it the parcels count as cortex).
* **Validation** pairs are the validation subjects' real scans and manual labels, fixed pair ``i`` being
  subjects ``(i, i + 1)``, centred, at the middle spacing, in the reference orientation, unaugmented.

Everything after the cached alignment is torch on the source's ``device``: the subjects are held there and pairs
are made there. Only random draws come from CPU generators (scalars, control-point grids, and the per-voxel noise
of :func:`render_intensities`, moved to the device once per image).
"""

from __future__ import annotations

import glob
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg.affine import initialise_affine
from shmoareg.errors import InputError
from shmoareg.grid import Grid, resample
from shmoareg.imageio import read_image, read_label_map
from shmoareg.intensity import normalise
from shmoareg.resources import SAMPLE_PAIR
from shmoareg.synthetic import child_seed, random_smooth_field, render_intensities
from shmoareg.training.augment import rotation_matrix
from shmoareg.training.config import AnatomySpec, DataSpec
from shmoareg.training.data import VALIDATION, Sample, derive_seed

Tensor = torch.Tensor

EXTRA_CEREBRAL = (500, 600)  # SynthSeg's labels of skull, scalp, eyes and other tissues outside the brain
CORTEX = {"left": (1000, 2000, 3), "right": (2000, 3000, 42)}  # DKT31 parcel range and the cortex label
WHITE_MATTER, RIGHT_WHITE_MATTER = 2, 41
# T1-like intensities of tissue classes, to align a label map without a scan (only the order matters to MI).
T1_LIKE = {"white": 1.0, "grey": 0.65, "fluid": 0.25, "other": 0.5}
WHITE_LABELS = (2, 7, 41, 46)
FLUID_LABELS = (4, 5, 14, 15, 24, 43, 44)
GREY_LABELS = (3, 8, 10, 11, 12, 13, 17, 18, 26, 42, 47, 49, 50, 51, 52, 53, 54, 58)
_CACHE_VERSION = "4"
CACHE_SUFFIX = ".npz"


@dataclass
class Subject:
    """One subject on the reference grid: labels (FreeSurfer values, int16 numpy), scan in [0, 1] (float16: a
    compact cache) or None."""

    name: str
    labels: np.ndarray
    image: Optional[np.ndarray]
    sha256: str


def expand(patterns: tuple[str, ...]) -> list[Path]:
    """Files or folders named by glob patterns, sorted, each pattern matching at least one."""
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise InputError(f"no file matches {pattern!r}: the real-anatomy recipes need ../shared/data, or the "
                             "subjects' cache files made from it (see the README's training section)")
        paths += [Path(path) for path in matched]
    return paths


def subject_files(entry: Path) -> tuple[Path, Optional[Path]]:
    """A label-map file, or a subject folder holding ``labels.nii.gz`` and ``t1_brain.nii.gz``."""
    if entry.is_dir():
        return entry / "labels.nii.gz", entry / "t1_brain.nii.gz"
    return entry, None


def t1_like(labels: np.ndarray) -> np.ndarray:
    """A T1-like image of a label map (float32): white matter bright, grey matter darker, fluid darkest."""
    image = np.where(labels > 0, T1_LIKE["other"], 0.0).astype(np.float32)
    for names, value in ((WHITE_LABELS, T1_LIKE["white"]), (GREY_LABELS, T1_LIKE["grey"]),
                         (FLUID_LABELS, T1_LIKE["fluid"])):
        image[np.isin(labels, names)] = value
    image[(labels >= CORTEX["left"][0]) & (labels < CORTEX["right"][1])] = T1_LIKE["grey"]
    image[(labels >= EXTRA_CEREBRAL[0]) & (labels < EXTRA_CEREBRAL[1])] = 0.0
    return image


def _image_like(values: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(reference)
    return image


def align_subject(label_path: Path, image_path: Optional[Path], reference: sitk.Image) -> Subject:
    """A subject's labels (and scan) resampled onto ``reference``'s grid through its affine to the reference."""
    label_image = read_label_map(label_path, "training label map")
    labels = sitk.GetArrayFromImage(label_image)
    scan = None if image_path is None else normalise(read_image(image_path, "training scan"), "mr")
    moving = scan if scan is not None else _image_like(t1_like(labels), label_image)
    affine = initialise_affine(reference, moving)
    grid = Grid.of(reference)
    aligned = resample(_image_like(labels.astype(np.int32), label_image), grid, affine, sitk.sitkNearestNeighbor)
    image = None if scan is None else sitk.GetArrayFromImage(resample(scan, grid, affine)).astype(np.float16)
    digest = hashlib.sha256(label_path.read_bytes() + (image_path.read_bytes() if image_path else b""))
    return Subject(str(label_path.parent if image_path else label_path),
                   sitk.GetArrayFromImage(aligned).astype(np.int16), image, digest.hexdigest())


def subject_name(entry: Path) -> str:
    """A subject's readable name: a label-map file's name without its extension (``training_seg_01``), a subject
    folder's parent and own name (``oasis-trt-20_01``)."""
    if entry.is_dir():
        folder = entry.resolve()
        return f"{folder.parent.name}_{folder.name}"
    return Path(entry.name.removesuffix(".gz")).stem


def cache_path(entry: Path, cache_dir: Path) -> Path:
    """Where :func:`load_subject` caches ``entry``: ``<subject>-<key>.npz`` in ``cache_dir``, the key a hash of the
    subject's files and the cache version."""
    label_path, image_path = subject_files(entry)
    for path in (label_path, image_path):
        if path is not None and not path.is_file():
            raise InputError(f"training subject file {path} not found")
    key = hashlib.sha256(label_path.read_bytes() + (image_path.read_bytes() if image_path else b"")
                         + _CACHE_VERSION.encode()).hexdigest()[:24]
    return cache_dir / f"{subject_name(entry)}-{key}{CACHE_SUFFIX}"


def save_subject(subject: Subject, path: Path) -> None:
    """Write ``subject`` to the cache file ``path`` (whole or not at all: a recipe may glob the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    image = {} if subject.image is None else {"image": subject.image}
    with open(partial, "wb") as stream:
        np.savez_compressed(stream, version=_CACHE_VERSION, name=subject.name, labels=subject.labels,
                            sha256=subject.sha256, **image)
    partial.replace(path)


def read_subject(path: Path) -> Subject:
    """A subject from a cache file of :func:`save_subject`; one of another cache version is refused."""
    with np.load(path, allow_pickle=False) as stored:
        version = str(stored["version"]) if "version" in stored else "unversioned"
        if version != _CACHE_VERSION:
            raise InputError(f"{path} is an anatomy cache file of version {version}, not {_CACHE_VERSION}: make the "
                             "cache again from the source files (benchmarks/gpu_session.sh --anatomy-cache)")
        return Subject(str(stored["name"]), stored["labels"], stored["image"] if "image" in stored else None,
                       str(stored["sha256"]))


def load_subject(entry: Path, reference: sitk.Image, cache_dir: Path) -> Subject:
    """A subject from its cache file: ``entry`` itself when it is one, else :func:`align_subject` of its source
    files, cached in ``cache_dir`` (:func:`cache_path`)."""
    if entry.suffix == CACHE_SUFFIX:
        return read_subject(entry)
    cached = cache_path(entry, cache_dir)
    if cached.is_file():
        return read_subject(cached)
    subject = align_subject(*subject_files(entry), reference)
    save_subject(subject, cached)
    return subject


def make_cache(spec: AnatomySpec) -> list[Path]:
    """Cache every subject that ``spec`` names by its source files and remove every other file from its
    ``cache_dir`` (earlier versions' files): the folder then holds just what a recipe listing these subjects' cache
    files reads (what a lent GPU is sent). Returns the cache files."""
    reference, cache = reference_image(), Path(spec.cache_dir)
    entries = expand(spec.subjects) + expand(spec.validation_subjects)
    for entry in entries:
        load_subject(entry, reference, cache)
    kept = {cache_path(entry, cache) for entry in entries}
    for path in cache.iterdir():
        if path.is_file() and path not in kept:
            path.unlink()
    return sorted(kept)


def reference_image() -> sitk.Image:
    """The common space: the shipped MNI152 2009a 2 mm sample, normalised."""
    return normalise(read_image(SAMPLE_PAIR["fixed"], "reference"), "mr")


def without_extra_cerebral(labels: Tensor) -> Tensor:
    """Labels outside the brain (``EXTRA_CEREBRAL``) set to background."""
    return torch.where((labels >= EXTRA_CEREBRAL[0]) & (labels < EXTRA_CEREBRAL[1]), 0, labels)


def coarse_labels(labels: Tensor) -> Tensor:
    """DKT31 parcels merged into one cortex label per hemisphere and the cerebral white matter into one label
    (SynthSeg labels it per hemisphere, Mindboggle not at all: :data:`WHITE_MATTER` stands for both)."""
    result = labels.clone()
    for low, high, cortex in CORTEX.values():
        result[(labels >= low) & (labels < high)] = cortex
    result[labels == RIGHT_WHITE_MATTER] = WHITE_MATTER
    return result


def signed_permutation(generator: torch.Generator) -> Tensor:
    """A random 3x3 signed permutation matrix (float64): any orientation of the axes."""
    matrix = torch.zeros(3, 3, dtype=torch.float64)
    signs = torch.randint(0, 2, (3,), generator=generator) * 2 - 1
    matrix[torch.arange(3), torch.randperm(3, generator=generator)] = signs.double()
    return matrix


@dataclass
class Window:
    """Where a training window lies in reference voxels: ``centre`` (x, y, z), ``axes`` (3x3: reference voxels
    per window voxel, columns x, y, z) and the window ``shape`` (Z, Y, X)."""

    centre: Tensor
    axes: Tensor
    shape: tuple[int, int, int]

    def grid(self, dims: tuple[int, int, int], offset: Optional[Tensor] = None,
             device: torch.device | str = "cpu") -> Tensor:
        """``grid_sample`` coordinates (align_corners=True) ``(1, Z, Y, X, 3)`` of the window on a reference volume
        of ``dims`` (Z, Y, X); ``offset`` ``(1, 3, Z, Y, X)`` moves the window's points (window voxels, x y z)."""
        z, y, x = (torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2 for n in self.shape)
        points = torch.stack(torch.meshgrid(z, y, x, indexing="ij")[::-1], dim=0)[None]  # (1, 3, Z, Y, X): x y z
        if offset is not None:
            points = points + offset
        axes = self.axes.to(device=device, dtype=torch.float32)
        reference = torch.einsum("ij,bjzyx->bzyxi", axes, points) + self.centre.to(device, torch.float32)
        size = torch.tensor([dims[2], dims[1], dims[0]], device=device, dtype=torch.float32)
        return 2 * reference / (size - 1) - 1


def _sample(volume: Tensor, window: Window, mode: str, offset: Optional[Tensor] = None) -> Tensor:
    """``volume`` ``(1, 1, Z, Y, X)`` on the reference grid, sampled on ``window`` (0 outside)."""
    grid = window.grid(tuple(volume.shape[2:]), offset, volume.device)
    return F.grid_sample(volume, grid, mode=mode, padding_mode="zeros", align_corners=True)


def _uniform(generator: torch.Generator, low: float, high: float, size: int = 1) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


class AnatomySource:
    """Pairs of two different real subjects (see the module's docstring); a training data source."""

    def __init__(self, spec: DataSpec, seed: int, device: torch.device | str = "cpu") -> None:
        self.spec, self.anatomy, self.seed, self.device = spec, spec.anatomy, seed, torch.device(device)
        reference = reference_image()
        self.reference_spacing = float(reference.GetSpacing()[0])
        cache = Path(self.anatomy.cache_dir)
        self.subjects = [load_subject(entry, reference, cache) for entry in expand(self.anatomy.subjects)]
        self.validation_subjects = [load_subject(entry, reference, cache)
                                    for entry in expand(self.anatomy.validation_subjects)]
        if len(self.subjects) < 2:
            raise InputError("data.anatomy.subjects names fewer than two subjects; a pair needs two different ones")
        if 0 < len(self.validation_subjects) < 2:
            raise InputError("data.anatomy.validation_subjects needs at least two subjects (or none)")
        brain = torch.from_numpy(sitk.GetArrayFromImage(reference) > 0.1)
        self.centre = torch.stack([index.double().mean() for index in torch.nonzero(brain).unbind(1)][::-1])
        self._labels = [self._tissue(subject, self.device) for subject in self.subjects]
        self._images = [self._image(subject, self.device) for subject in self.subjects]
        self._parcellated = [bool((subject.labels >= CORTEX["left"][0]).any()) for subject in self.subjects]

    @staticmethod
    def _image(subject: Subject, device: torch.device | str) -> Optional[Tensor]:
        return None if subject.image is None else torch.from_numpy(subject.image.astype(np.float32))[None, None].to(
            device)

    @staticmethod
    def _tissue(subject: Subject, device: torch.device | str) -> Tensor:
        """The subject's labels as float (for ``grid_sample``), unlabelled brain (Mindboggle's white matter) as 2."""
        labels = subject.labels
        if subject.image is not None:
            labels = np.where((labels == 0) & (subject.image > 0), WHITE_MATTER, labels)
        return torch.from_numpy(labels.astype(np.float32))[None, None].to(device)

    def _window(self, spacing: float, axes: Tensor, centre: Tensor) -> Window:
        return Window(centre, axes * spacing / self.reference_spacing, tuple(self.spec.shape))

    def sample(self, stream: int, rank: int, index: int) -> Sample:
        if stream == VALIDATION:
            return self._validation(index)
        return self._training(torch.Generator().manual_seed(derive_seed(self.seed, stream, rank, index)))

    def _training(self, generator: torch.Generator) -> Sample:
        anatomy = self.anatomy
        first, second = torch.randperm(len(self.subjects), generator=generator)[:2].tolist()
        spacing = float(_uniform(generator, *anatomy.spacing))
        orientation = signed_permutation(generator) if anatomy.permute_axes else torch.eye(3, dtype=torch.float64)
        pose = rotation_matrix(_uniform(generator, -1, 1, 3) * math.radians(anatomy.rotation_degrees)) @ orientation
        jitter = _uniform(generator, -1, 1, 3) * anatomy.centre_jitter_mm / self.reference_spacing
        fixed_window = self._window(spacing, pose, self.centre + jitter)
        residual = rotation_matrix(_uniform(generator, -1, 1, 3) * math.radians(anatomy.residual_rotation_degrees))
        residual = residual @ torch.diag(1 + _uniform(generator, -1, 1, 3) * anatomy.residual_scaling)
        shift = _uniform(generator, -1, 1, 3) * anatomy.residual_translation_mm / self.reference_spacing
        moving_window = self._window(spacing, residual @ pose, self.centre + jitter + shift)
        field = random_smooth_field(tuple(self.spec.shape), float(_uniform(generator, 0, anatomy.max_displacement)),
                                    seed=child_seed(generator), control_spacing=anatomy.control_spacing,
                                    coarse_factor=2, device=self.device)
        fixed_labels = _sample(self._labels[first], fixed_window, "nearest").long()
        moving_labels = _sample(self._labels[second], moving_window, "nearest", field).long()
        real = (self._images[first] is not None and self._images[second] is not None
                and float(torch.rand(1, generator=generator)) < anatomy.real_image_share)
        if real:
            gammas = torch.exp(anatomy.gamma * torch.randn(2, generator=generator)).tolist()
            fixed = _sample(self._images[first], fixed_window, "bilinear").clamp(0, 1) ** gammas[0]
            moving = _sample(self._images[second], moving_window, "bilinear", field).clamp(0, 1) ** gammas[1]
        else:
            fixed, moving = self._render(fixed_labels, moving_labels, generator)
        both = self._parcellated[first] and self._parcellated[second]
        fixed_labels, moving_labels = dice_labels(fixed_labels, moving_labels, parcels=both)
        return Sample(fixed, moving, fixed_labels, moving_labels)

    def _render(self, fixed_labels: Tensor, moving_labels: Tensor, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
        """Both label maps rendered with a random contrast per label (one shared for a share of the pairs)."""
        anatomy = self.anatomy
        strip = float(torch.rand(1, generator=generator)) < anatomy.strip_share
        same = float(torch.rand(1, generator=generator)) < anatomy.same_contrast_share
        shared = child_seed(generator) if same else None
        tissues = [coarse_labels(labels) for labels in (fixed_labels, moving_labels)]  # a parcel is cortex
        values = torch.unique(torch.cat([tissue.flatten() for tissue in tissues]))
        images = []
        for labels in tissues:
            if strip:
                labels = without_extra_cerebral(labels)
            compact = torch.searchsorted(values, labels.contiguous())  # label values 0..L-1, background first
            images.append(render_intensities(
                compact, child_seed(generator), contrast_seed=shared,
                noise_std=float(_uniform(generator, 0, anatomy.noise_std)),
                blur_sigma=float(_uniform(generator, 0, anatomy.blur_sigma)),
                bias_strength=float(_uniform(generator, 0, anatomy.bias_strength)), gamma_std=anatomy.gamma))
        return images[0], images[1]

    def _validation(self, index: int) -> Sample:
        if not self.validation_subjects:
            raise InputError("data.anatomy.validation_subjects is empty: name the subjects to validate on")
        count = len(self.validation_subjects)
        fixed_subject, moving_subject = (self.validation_subjects[(index + k) % count] for k in (0, 1))
        window = self._window(sum(self.anatomy.spacing) / 2, torch.eye(3, dtype=torch.float64), self.centre)
        volumes = [torch.from_numpy(array.astype(np.float32))[None, None].to(self.device) for array in
                   (fixed_subject.image, moving_subject.image, fixed_subject.labels, moving_subject.labels)]
        fixed, moving = (_sample(volume, window, "bilinear").clamp(0, 1) for volume in volumes[:2])
        fixed_labels, moving_labels = (_sample(volume, window, "nearest").long() for volume in volumes[2:])
        return Sample(fixed, moving, *dice_labels(fixed_labels, moving_labels, parcels=True))

    def describe(self) -> dict[str, Any]:
        """Which subjects (paths and content hashes), the reference and the recipe's settings."""
        listing = lambda subjects: [{"path": s.name, "sha256": s.sha256} for s in subjects]  # noqa: E731
        return {"source": "anatomy", "shape": list(self.spec.shape), "reference": str(SAMPLE_PAIR["fixed"].name),
                **asdict(self.anatomy), "training_subjects": listing(self.subjects),
                "validation_subject_files": listing(self.validation_subjects)}


def dice_labels(fixed: Tensor, moving: Tensor, parcels: bool) -> tuple[Tensor, Tensor]:
    """The labels a pair's Dice counts: brain labels both maps have (parcels only when ``parcels``), others 0."""
    fixed, moving = without_extra_cerebral(fixed), without_extra_cerebral(moving)
    if not parcels:
        fixed, moving = coarse_labels(fixed), coarse_labels(moving)
    shared = torch.unique(fixed)
    shared = shared[torch.isin(shared, torch.unique(moving))]
    keep = lambda labels: torch.where(torch.isin(labels, shared), labels, 0)  # noqa: E731
    return keep(fixed), keep(moving)
