"""The training configuration: nested dataclasses read from a YAML file, checked on load.

Every section and key is optional (defaults below); an unknown key or a bad value is an
:class:`InputError` naming the file and the key. Relative paths are taken from the working folder.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from shmoareg.errors import InputError
from shmoareg.protocol import DEVICES, INTENSITY_MODES
from shmoareg.typed_config import build_dataclass, plain

SIMILARITIES = ("ncc", "mse", "mind")
SMOOTHNESS = ("diffusion", "bending")
SOURCES = ("synthetic", "dataset", "anatomy")
GRID_MULTIPLE = 16


@dataclass
class ModelSpec:
    """Which network to train: a registry name and its config overrides."""

    name: str = "shmoareg"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentationSpec:
    """Augmentation of real pairs; zero values switch a part off.

    Flips (probability 0.5 per axis) are shared by the pair; the small affine (rotation in
    degrees, relative scaling, translation in voxels) moves the moving image and labels only;
    gamma (``exp(gamma * N(0, 1))``) is drawn per image.
    """

    flip: bool = True
    rotation_degrees: float = 5.0
    scaling: float = 0.05
    translation: float = 2.0
    gamma: float = 0.2


@dataclass
class SyntheticSpec:
    """SynthMorph-style pairs (see :mod:`shmoareg.training.synthesis`).

    ``max_displacement`` (voxels), ``noise_std``, ``blur_sigma`` (voxels) and ``bias_strength`` are
    maxima: each pair or image draws its own value between 0 and the maximum. ``augmentation``: flips of
    the label map, the random affine residual of the pair, gamma per image. ``pool``: None draws a new
    label map for every training sample; N reuses N label maps per rank (kept in memory), each time with
    a new deformation, flips and contrasts. ``label_maps``: label-map files (e.g. a brain's tissue classes)
    from which a share ``label_map_share`` of the label maps is cut (:mod:`shmoareg.training.label_shapes`),
    each at a spacing drawn in ``label_map_spacing`` (mm per training voxel); the rest are random. A share
    ``mirror_share`` of those pairs are two brains: the fixed image's is the file mirrored left to right
    with the ``mirror_pairs`` of labels (left, right) swapped, its folds those of the other hemisphere.
    ``fine_displacement`` (voxels, a maximum as above; 0: none) adds a second, local deformation on a
    control grid every ``fine_control_spacing`` voxels, as between subjects' folds, beyond the smooth one.
    Without ``same_contrast``, a share ``same_contrast_share`` of the pairs still share one contrast (two
    scans of one modality, as most pairs in use are); the rest get a contrast per image. A share ``still_share``
    of the pairs is not moved at all (no deformation, no affine residual), so that no motion is seen where there
    is none.
    """

    num_labels: int = 16
    max_displacement: float = 4.0
    feature_size: float = 8.0
    control_spacing: float = 8.0
    fine_displacement: float = 0.0
    fine_control_spacing: float = 3.0
    same_contrast: bool = True
    same_contrast_share: float = 0.0
    noise_std: float = 0.05
    blur_sigma: float = 1.0
    bias_strength: float = 0.1
    augmentation: AugmentationSpec = field(default_factory=lambda: AugmentationSpec(
        flip=False, rotation_degrees=0.0, scaling=0.0, translation=0.0, gamma=0.25))
    pool: Optional[int] = None
    label_maps: tuple[str, ...] = ()
    label_map_share: float = 0.0
    label_map_spacing: tuple[float, float] = (2.0, 3.5)
    mirror_share: float = 0.0
    mirror_pairs: tuple[tuple[int, int], ...] = ()
    still_share: float = 0.0


@dataclass
class AnatomySpec:
    """Pairs of two different real subjects (:mod:`shmoareg.training.anatomy`).

    ``subjects`` and ``validation_subjects``: glob patterns of label-map files, of subject folders holding
    ``labels.nii.gz`` and ``t1_brain.nii.gz``, or of the ``.npz`` cache files of aligned subjects (where the
    sources are absent, e.g. on a lent GPU); each subject's alignment to the reference is cached in ``cache_dir``.
    ``spacing``: the range of mm per training voxel. The pose: a random signed permutation of the axes
    (``permute_axes``), a shared rotation up to ``rotation_degrees`` per axis and a centre moved up to
    ``centre_jitter_mm``. The moving side's affine residual (rotation, relative scaling, translation in mm) and
    smooth deformation (``max_displacement`` window voxels at most, control points every ``control_spacing``)
    are maxima, each pair drawing its own. Images: the real scans for a share ``real_image_share`` of the pairs
    of subjects that have them, else rendered (noise, blur in voxels, bias: maxima; ``gamma`` the spread of
    ``exp(gamma N(0, 1))``), one contrast for both for a share ``same_contrast_share``, without the labels outside
    the brain for a share ``strip_share``.
    """

    subjects: tuple[str, ...] = ()
    validation_subjects: tuple[str, ...] = ()
    cache_dir: str = "runs/data/anatomy"
    spacing: tuple[float, float] = (3.0, 4.0)
    permute_axes: bool = True
    rotation_degrees: float = 10.0
    centre_jitter_mm: float = 8.0
    residual_rotation_degrees: float = 3.0
    residual_scaling: float = 0.03
    residual_translation_mm: float = 3.0
    max_displacement: float = 2.0
    control_spacing: float = 8.0
    real_image_share: float = 0.0
    same_contrast_share: float = 0.3
    strip_share: float = 0.8
    noise_std: float = 0.08
    blur_sigma: float = 1.0
    bias_strength: float = 0.3
    gamma: float = 0.25


@dataclass
class DataSpec:
    """Where pairs come from and the training grid ``shape`` (Z, Y, X; multiples of 16).

    ``path`` (source ``dataset``): a Learn2Reg-style ``dataset.json``, a folder holding one, or a
    folder of images with an optional ``labels/`` subfolder of label maps named like the images.
    ``spacing`` (mm) of the isotropic training grid; None fits the fixed image's extent.
    """

    source: str = "synthetic"
    shape: tuple[int, int, int] = (64, 64, 64)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    anatomy: AnatomySpec = field(default_factory=AnatomySpec)
    path: Optional[str] = None
    spacing: Optional[float] = None
    intensity: str = "auto"
    cache: bool = True
    augmentation: AugmentationSpec = field(default_factory=AugmentationSpec)


@dataclass
class LossSpec:
    """Loss terms and weights: similarity + smoothness + Dice on warped labels + MoE load balancing, and
    ``field_weight`` times the mean squared end-point error (voxels) against a synthetic pair's known field."""

    similarity: str = "ncc"
    window: int = 9
    similarity_weight: float = 1.0
    smoothness: str = "diffusion"
    smoothness_weight: float = 1.0
    dice_weight: float = 0.0
    load_balance_weight: float = 0.01
    field_weight: float = 0.0


@dataclass
class OptimiserSpec:
    """Adam(W) settings; ``batch_size`` is per process; ``grad_clip`` 0 disables clipping."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    steps: int = 1000
    batch_size: int = 1


@dataclass
class ValidationSpec:
    """Validate every ``every`` steps on ``pairs`` fixed pairs."""

    every: int = 100
    pairs: int = 8


@dataclass
class TrainingConfig:
    """A whole training run.

    ``init_from`` (a shipped model name or a checkpoint path): where ``--resume`` starts when
    ``output_dir`` holds no checkpoint yet, at that checkpoint's step and with its history, so
    a fresh clone continues the shipped weights (the optimiser's moments start afresh).
    ``swap_ensemble``: the loss and the validation see the swap ensemble that ``register`` applies,
    ``(f(F, M) - f(M, F)) / 2`` (:class:`~shmoareg.ensemble.SwapEnsemble`), at two passes per pair.
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optimiser: OptimiserSpec = field(default_factory=OptimiserSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    output_dir: str = "runs/shmoareg"
    init_from: Optional[str] = None
    swap_ensemble: bool = False
    amp: bool = False
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainingConfig":
        """Build and check a config from plain values (as read from YAML)."""
        config = build_dataclass(cls(), values, source)
        _check(config, source)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (tuples as lists)."""
        return plain(dataclasses.asdict(self))


def load_config(path: str | os.PathLike) -> TrainingConfig:
    """Read a training config from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training config not found: {path} (check the --config path)")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"training config {path} is not valid YAML: {' '.join(str(error).split())[:160]}") from None
    return TrainingConfig.from_dict(values or {}, str(path))


def _require(condition: bool, source: str, message: str) -> None:
    if not condition:
        raise InputError(f"{source}: {message}")


def _check(config: TrainingConfig, source: str) -> None:
    data, loss, optimiser = config.data, config.loss, config.optimiser
    _require(data.source in SOURCES, source, f"data.source must be one of {', '.join(SOURCES)}, not {data.source!r}")
    _require(all(n > 0 and n % GRID_MULTIPLE == 0 for n in data.shape), source,
             f"data.shape {list(data.shape)} must have sides that are positive multiples of {GRID_MULTIPLE}")
    _require(data.source != "dataset" or bool(data.path), source, "data.path is required when data.source is dataset")
    _require(data.source != "anatomy" or bool(data.anatomy.subjects), source,
             "data.anatomy.subjects is required when data.source is anatomy")
    for share in ("real_image_share", "same_contrast_share", "strip_share"):
        _require(0 <= getattr(data.anatomy, share) <= 1, source, f"data.anatomy.{share} must be between 0 and 1")
    _require(0 < data.anatomy.spacing[0] <= data.anatomy.spacing[1], source,
             "data.anatomy.spacing must be [low, high] mm with 0 < low <= high")
    _require(data.spacing is None or data.spacing > 0, source, "data.spacing must be positive (mm) or null")
    _require(data.intensity in INTENSITY_MODES, source,
             f"data.intensity must be one of {', '.join(INTENSITY_MODES)}, not {data.intensity!r}")
    _require(data.synthetic.num_labels >= 2, source, "data.synthetic.num_labels must be at least 2")
    for share in ("label_map_share", "mirror_share", "same_contrast_share", "still_share"):
        _require(0 <= getattr(data.synthetic, share) <= 1, source, f"data.synthetic.{share} must be between 0 and 1")
    _require(data.synthetic.pool is None or data.synthetic.pool >= 1, source,
             "data.synthetic.pool must be a positive number of pairs or null")
    _require(loss.similarity in SIMILARITIES, source,
             f"loss.similarity must be one of {', '.join(SIMILARITIES)}, not {loss.similarity!r}")
    _require(loss.smoothness in SMOOTHNESS, source,
             f"loss.smoothness must be one of {', '.join(SMOOTHNESS)}, not {loss.smoothness!r}")
    _require(loss.window >= 3 and loss.window % 2 == 1, source,
             f"loss.window must be odd and at least 3, not {loss.window}")
    for name in ("similarity_weight", "smoothness_weight", "dice_weight", "load_balance_weight", "field_weight"):
        _require(getattr(loss, name) >= 0, source, f"loss.{name} must not be negative")
    _require(optimiser.lr > 0, source, "optimiser.lr must be positive")
    _require(optimiser.steps >= 1 and optimiser.batch_size >= 1, source,
             "optimiser.steps and optimiser.batch_size must be at least 1")
    _require(optimiser.grad_clip >= 0, source, "optimiser.grad_clip must be 0 (off) or positive")
    _require(config.validation.every >= 1 and config.validation.pairs >= 1, source,
             "validation.every and validation.pairs must be at least 1")
    _require(config.checkpoint_every >= 1 and config.log_every >= 1, source,
             "checkpoint_every and log_every must be at least 1")
    _require(config.device in DEVICES, source, f"device must be one of {', '.join(DEVICES)}, not {config.device!r}")
