"""Training and validation samples: synthetic pairs made on the fly, pairs of real subjects' anatomy
(:mod:`shmoareg.training.anatomy`), or real pairs resampled to the training grid with augmentation.

Every sample is deterministic in ``(seed, stream, rank, index)``: training sample ``i`` of step
``s`` on rank ``r`` has index ``s * batch_size + i``, so a resumed run sees the data it would have
seen, and each rank of a distributed run sees its own shard. Validation samples do not depend on the rank.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk
import torch

from shmoareg.errors import InputError
from shmoareg.grid import Grid, resample, to_tensor
from shmoareg.imageio import read_image, read_label_map
from shmoareg.intensity import normalise
from shmoareg.training.augment import augment_pair
from shmoareg.training.config import DataSpec
from shmoareg.training.datasets import DatasetIndex, Pair, read_dataset
from shmoareg.training.label_shapes import LabelShapes
from shmoareg.training.synthesis import draw_label_map, synthesise_pair

TRAIN, VALIDATION, AUGMENT = 0, 1, 2


@dataclass
class Sample:
    """A batch of pairs ``(B, 1, Z, Y, X)``: images in [0, 1], int64 label maps (or None), and the known
    displacement ``(B, 3, Z, Y, X)`` in voxels with ``moving(p + u(p)) = fixed(p)`` where there is one (or None)."""

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: Optional[torch.Tensor] = None
    moving_labels: Optional[torch.Tensor] = None
    displacement: Optional[torch.Tensor] = None

    def to(self, device: torch.device) -> "Sample":
        """The same sample on ``device``."""
        move = (lambda t: t.to(device, non_blocking=True) if t is not None else None)
        return Sample(*(move(getattr(self, item.name)) for item in fields(self)))

    @classmethod
    def stack(cls, samples: list["Sample"]) -> "Sample":
        """One batch from single samples; labels (and known displacements) are kept only when every sample has
        them."""
        labelled = all(s.fixed_labels is not None and s.moving_labels is not None for s in samples)
        known = all(s.displacement is not None for s in samples)
        return cls(torch.cat([s.fixed for s in samples]), torch.cat([s.moving for s in samples]),
                   torch.cat([s.fixed_labels for s in samples]) if labelled else None,
                   torch.cat([s.moving_labels for s in samples]) if labelled else None,
                   torch.cat([s.displacement for s in samples]) if known else None)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


def training_grid(image: sitk.Image, shape: tuple[int, int, int], spacing: Optional[float]) -> Grid:
    """An isotropic grid of ``shape`` (Z, Y, X) centred on ``image``, with its direction.

    ``spacing`` None fits the image's whole extent into the grid.
    """
    size = np.array(shape[::-1])
    size_in, spacing_in = np.asarray(image.GetSize()), np.asarray(image.GetSpacing())
    extent = (size_in - 1) * spacing_in
    spacing = float(spacing or max(extent / (size - 1)))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(image.GetOrigin()) + direction @ (extent / 2)
    origin = centre - direction @ ((size - 1) / 2 * spacing)
    return Grid(tuple(int(n) for n in size), (spacing,) * 3, tuple(float(v) for v in origin),
                tuple(direction.ravel()))


class SyntheticSource:
    """SynthMorph-style pairs from :func:`shmoareg.training.synthesis.synthesise_pair`.

    With ``synthetic.pool`` N, training samples of a rank reuse N label maps (drawn on first use and
    kept), each time with a new deformation, flips and contrasts; validation always draws its own.
    """

    def __init__(self, spec: DataSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed
        self._labels: dict[tuple[int, int], torch.Tensor] = {}
        self._shapes = LabelShapes(list(spec.synthetic.label_maps)) if spec.synthetic.label_maps else None

    def _draw(self, seed: int) -> torch.Tensor:
        return draw_label_map(self.spec.synthetic, self.spec.shape, seed, self._shapes)

    def _label_map(self, stream: int, rank: int, index: int) -> torch.Tensor:
        pool = self.spec.synthetic.pool
        if stream != TRAIN or pool is None:
            return self._draw(derive_seed(self.seed, stream, rank, index))
        key = (rank, index % pool)
        if key not in self._labels:
            self._labels[key] = self._draw(derive_seed(self.seed, stream, rank, key[1]))
        return self._labels[key]

    def sample(self, stream: int, rank: int, index: int) -> Sample:
        labels = self._label_map(stream, rank, index)
        pair = synthesise_pair(labels, self.spec.synthetic, derive_seed(self.seed, AUGMENT, stream, rank, index))
        # Two anatomies (a second channel) have no known correspondence: their field only made the fixed labels.
        known = pair.displacement if labels.shape[1] == 1 else None
        return Sample(pair.fixed_image, pair.moving_image, pair.fixed_labels, pair.moving_labels, known)

    def describe(self) -> dict[str, Any]:
        description = {"source": "synthetic", "generator": "shmoareg.training.synthesis.synthesise_pair",
                       "shape": list(self.spec.shape), **asdict(self.spec.synthetic)}
        if self._shapes is not None:
            description["label_maps"] = self._shapes.describe()
        return description


class DatasetSource:
    """Real pairs resampled onto a training grid around the fixed image (moving and labels in physical space).

    Training pairs: ``training_paired_images`` when listed, else two different images not used by
    ``registration_val``; augmented. Validation: the ``registration_val`` pairs, else fixed random pairs.
    """

    def __init__(self, spec: DataSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed
        self.index: DatasetIndex = read_dataset(spec.path)
        validation = set()
        for pair in self.index.pairs["registration_val"]:
            validation |= {pair.fixed, pair.moving}
        self.training_images = [image for image in self.index.images if image not in validation] or self.index.images
        if not self.index.pairs["training_paired_images"] and len(self.training_images) < 2:
            raise InputError(f"dataset {self.index.source} has neither training_paired_images nor two training "
                             "images to pair; list more images or pairs")
        self._cache: dict[Pair, Sample] = {}

    def _load(self, pair: Pair) -> Sample:
        if pair in self._cache:
            return self._cache[pair]
        fixed = read_image(pair.fixed, "fixed image")
        grid = training_grid(fixed, self.spec.shape, self.spec.spacing)
        moving = read_image(pair.moving, "moving image")
        sample = Sample(to_tensor(resample(normalise(fixed, self.spec.intensity), grid)),
                        to_tensor(resample(normalise(moving, self.spec.intensity), grid)))
        if pair.fixed_label is not None and pair.moving_label is not None:
            sample.fixed_labels = to_tensor(resample(read_label_map(pair.fixed_label), grid, None,
                                                     sitk.sitkNearestNeighbor))
            sample.moving_labels = to_tensor(resample(read_label_map(pair.moving_label), grid, None,
                                                      sitk.sitkNearestNeighbor))
        if self.spec.cache:
            self._cache[pair] = sample
        return sample

    def _draw(self, generator: torch.Generator) -> Pair:
        listed = self.index.pairs["training_paired_images"]
        if listed:
            return listed[int(torch.randint(len(listed), (1,), generator=generator))]
        images = self.training_images
        first, second = torch.randperm(len(images), generator=generator)[:2].tolist()
        return self.index.pair(images[first], images[second])

    def sample(self, stream: int, rank: int, index: int) -> Sample:
        if stream == VALIDATION:
            listed = self.index.pairs["registration_val"]
            if listed:
                return self._load(listed[index % len(listed)])
            return self._load(self._draw(torch.Generator().manual_seed(derive_seed(self.seed, stream, 0, index))))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, stream, rank, index))
        base = self._load(self._draw(generator))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, AUGMENT, rank, index))
        return Sample(*augment_pair(base.fixed, base.moving, base.fixed_labels, base.moving_labels,
                                    self.spec.augmentation, generator))

    def describe(self) -> dict[str, Any]:
        return {"source": "dataset", **self.index.describe(), "training_images": len(self.training_images),
                "shape": list(self.spec.shape), "spacing": self.spec.spacing, "intensity": self.spec.intensity,
                "augmentation": asdict(self.spec.augmentation)}


class TrainingData:
    """Batches for one rank of a run, fixed validation samples and the data's provenance."""

    def __init__(self, spec: DataSpec, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        if spec.source == "anatomy":  # imported here: it builds its samples with this module's Sample
            from shmoareg.training.anatomy import AnatomySource

            self.source = AnatomySource(spec, seed, device)
        else:
            self.source = SyntheticSource(spec, seed) if spec.source == "synthetic" else DatasetSource(spec, seed)
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int, batch_size: int) -> Sample:
        """The training batch of ``step`` for this rank."""
        return Sample.stack([self.source.sample(TRAIN, self.rank, step * batch_size + i) for i in range(batch_size)])

    def validation(self, count: int) -> list[Sample]:
        """``count`` fixed validation samples (the same on every rank and every run with this seed)."""
        return [self.source.sample(VALIDATION, 0, index) for index in range(count)]

    def describe(self) -> dict[str, Any]:
        """Data provenance for checkpoints."""
        return {**self.source.describe(), "seed": self.seed, "world_size": self.world_size,
                "sample_seeds": "numpy SeedSequence([seed, stream, rank, index]); training sample i of step s "
                                "has index s * batch_size + i"}


class Prefetcher:
    """Makes the next step's batch on a background thread while the current step computes.

    PyTorch releases the GIL in its kernels, so on a machine with a spare core the synthesis of pair
    ``s + 1`` overlaps the network's step ``s`` (what a DataLoader worker does, without a process).
    Batches stay those of :meth:`TrainingData.batch`, so runs are reproducible either way.
    """

    def __init__(self, data: TrainingData, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shmoareg-data")
        self._pending: Optional[tuple[int, Future]] = None

    def batch(self, step: int) -> Sample:
        """The batch of ``step``; starts making the batch of ``step + 1``."""
        if self._pending is not None and self._pending[0] == step:
            sample = self._pending[1].result()
        else:
            sample = self.data.batch(step, self.batch_size)
        self._pending = (step + 1, self._worker.submit(self.data.batch, step + 1, self.batch_size))
        return sample

    def close(self) -> None:
        """Stop the background thread (after the batch it is making, if any)."""
        self._worker.shutdown(wait=True, cancel_futures=True)
