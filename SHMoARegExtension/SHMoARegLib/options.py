"""Registration options and the engine command-line arguments they become."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from shmoareg.protocol import (DEFAULT_DEVICE, DEFAULT_MODEL, DEFAULT_SIMILARITY,  # noqa: F401  (re-exported)
                               DEFAULT_SMOOTHNESS, DEVICES, JACOBIAN_OUTPUT, SIMILARITIES)
from shmoareg.resources import shipped_models

# Model names for ``--model``: the networks whose weights ship, the engine's default first, and "none" (optimise on
# the pair alone). Testing/Python checks them against the engine's registry. A checkpoint path is accepted too.
MODELS = (*shipped_models(), "none")
# Positions of the panel's "smoother <-> more detailed" slider; position p means smoothness 2**-p.
DETAIL_RANGE = (-2, 2)
# The panel's refinement-steps value that lets the engine choose (RegistrationOptions.refineSteps None).
ENGINE_CHOOSES_STEPS = -1


@dataclass
class RegistrationOptions:
    """The settings of one run, ``RegistrationRunner.register(fixed, moving, ..., options=...)``'s typed options
    (the input nodes are its other arguments; the panel's parameter node holds them as a parameter pack).

    ``refineSteps`` None lets the engine choose (more on a GPU); ``importGateMaps`` False makes
    the engine write and the module load only the arg-max routing maps (gate maps are one volume
    per level, axis and expert);
    ``keepTemporaryFiles`` leaves the input and output files on disk for debugging.
    ``similarity`` is one of :data:`SIMILARITIES`; ``smoothness`` weighs the deformation's smoothness
    regulariser (larger: smoother); ``uncertainty`` makes the engine write an uncertainty map in mm.
    """

    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    refineSteps: Optional[int] = None
    affine: bool = True
    importGateMaps: bool = False
    keepTemporaryFiles: bool = False
    similarity: str = DEFAULT_SIMILARITY
    smoothness: float = DEFAULT_SMOOTHNESS
    uncertainty: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, not {self.similarity!r}")
        smoothness = self.smoothness
        if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)) or not math.isfinite(smoothness) \
                or smoothness <= 0:
            raise ValueError(f"smoothness must be a number above 0 (default {DEFAULT_SMOOTHNESS}), not {smoothness!r}")
        if self.refineSteps is not None and self.refineSteps < 0:
            raise ValueError(f"refineSteps must be 0 or more (None: the engine's default), not {self.refineSteps}")
        if not self.model:
            raise ValueError("choose a model")


def smoothnessFromDetail(position: int) -> float:
    """Smoothness weight of a "smoother <-> more detailed" slider position: ``2**-position`` (0: the default 1)."""
    if not DETAIL_RANGE[0] <= position <= DETAIL_RANGE[1]:
        raise ValueError(f"detail position must be between {DETAIL_RANGE[0]} and {DETAIL_RANGE[1]}, not {position}")
    return DEFAULT_SMOOTHNESS * 2.0 ** -position


def optionsFromPanel(refineSteps: int, detail: int, **choices) -> RegistrationOptions:
    """The typed options of the panel's settings, which it keeps in the forms its controls hold: ``refineSteps``
    :data:`ENGINE_CHOOSES_STEPS` lets the engine choose, ``detail`` is the smoothness slider's position; the other
    settings are :class:`RegistrationOptions` fields as they are."""
    if refineSteps < 0 and refineSteps != ENGINE_CHOOSES_STEPS:
        raise ValueError(f"refineSteps must be 0 or more, or {ENGINE_CHOOSES_STEPS} for the engine's default, "
                         f"not {refineSteps}")
    return RegistrationOptions(refineSteps=None if refineSteps == ENGINE_CHOOSES_STEPS else refineSteps,
                               smoothness=smoothnessFromDetail(detail), **choices)


def engineArguments(options: RegistrationOptions, fixed: Path, moving: Path, outputDirectory: Path,
                    fixedSegmentation: Optional[Path] = None, movingSegmentation: Optional[Path] = None,
                    fixedLandmarks: Optional[Path] = None, movingLandmarks: Optional[Path] = None) -> list[str]:
    """Arguments of ``shmoareg register`` for one run, with JSON-lines progress."""
    arguments = ["register", "--fixed", str(fixed), "--moving", str(moving), "--output-dir", str(outputDirectory),
                 "--model", options.model, "--device", options.device,
                 "--affine" if options.affine else "--no-affine", "--progress", "json",
                 "--routing-maps", "full" if options.importGateMaps else "experts",
                 "--similarity", options.similarity, "--smoothness", repr(float(options.smoothness)),
                 "--uncertainty" if options.uncertainty else "--no-uncertainty",
                 "--extra-outputs", JACOBIAN_OUTPUT]  # the module shows the Jacobian determinant among its checks
    if fixedSegmentation is not None:
        arguments += ["--fixed-seg", str(fixedSegmentation)]
    if movingSegmentation is not None:
        arguments += ["--moving-seg", str(movingSegmentation)]
    if (fixedLandmarks is None) != (movingLandmarks is None):
        raise ValueError("give both landmark files or neither")
    if fixedLandmarks is not None:
        arguments += ["--fixed-landmarks", str(fixedLandmarks), "--moving-landmarks", str(movingLandmarks)]
    if options.refineSteps is not None:
        arguments += ["--refine-steps", str(options.refineSteps)]
    return arguments
