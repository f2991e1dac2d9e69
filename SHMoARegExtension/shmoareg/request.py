"""What a registration is asked to do (:class:`RegistrationRequest`); torch-free, so a run can be described and
its first stages started (:mod:`shmoareg.start`) before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from shmoareg.method import RegistrationMethod
from shmoareg.protocol import DEFAULT_MODEL, DEFAULT_ROUTING_MAPS, DEFAULT_SIMILARITY, DEFAULT_SMOOTHNESS


@dataclass
class RegistrationRequest:
    """Everything ``register`` needs; paths may be strings or Paths. ``refine_start``: the coarsest level (a factor
    of the working grid: 1, 2, 4, 8) of the refinement after a network (default: ``NETWORK_REFINE_START_FACTOR``
    times the network's input factor)."""

    fixed: Path
    moving: Path
    output_dir: Path
    fixed_segmentation: Optional[Path] = None
    moving_segmentation: Optional[Path] = None
    model: str = DEFAULT_MODEL
    device: str = "auto"
    refine_steps: Optional[int] = None
    refine_start: Optional[int] = None
    affine: bool = True
    grid_spacing: Optional[float] = None
    max_grid_voxels: int = 2_000_000
    crop: bool = True
    network_max_voxels: Optional[int] = None
    network_flips: Optional[int] = None
    network_swap: Optional[bool] = None
    adapt_steps: int = 0
    intensity: str = "auto"
    window: Optional[tuple[float, float]] = None
    diffeomorphic: bool = True
    similarity: str = DEFAULT_SIMILARITY
    smoothness: float = DEFAULT_SMOOTHNESS
    routing_maps: str = DEFAULT_ROUTING_MAPS
    uncertainty: bool = False
    fixed_landmarks: Optional[Path] = None
    moving_landmarks: Optional[Path] = None
    extra_outputs: tuple[str, ...] = ()

    @property
    def method(self) -> RegistrationMethod:
        """The composition ``model`` and ``refine_steps`` describe (network, refinement, or both)."""
        return RegistrationMethod.from_options(self.model, self.refine_steps)
