"""Registration options and the engine command-line arguments they become."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Model names the engine accepts for ``--model`` ("none": optimise on the pair alone), the engine's
# default first; Testing/slicer checks both against the engine. A checkpoint path is accepted too.
MODELS = ("shmoareg", "adregnet", "rman", "sacbnet", "unet", "none")
DEFAULT_MODEL = MODELS[0]
DEVICES = ("auto", "cuda", "cpu")
# Similarity measures of ``--similarity`` ("auto": the engine picks local NCC or MIND-SSC per pair) and the
# default weight of ``--smoothness``; Testing/slicer checks both against the engine.
SIMILARITIES = ("auto", "lncc", "mind", "ngf")
DEFAULT_SMOOTHNESS = 1.0
# Positions of the panel's "smoother <-> more detailed" slider; position p means smoothness 2**-p.
DETAIL_RANGE = (-2, 2)

# Engine exit codes (the protocol of shmoareg.errors.ExitCode, repeated so SHMoARegLib never imports the engine).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_NO_SPACE = 4
EXIT_CANCELLED = 130


@dataclass
class RegistrationOptions:
    """What ``SHMoARegLogic.register(**options)`` accepts besides the input nodes.

    ``refineSteps`` None lets the engine choose (more on a GPU); ``importGateMaps`` False makes
    the engine write and the module load only the arg-max routing maps (gate maps are one volume
    per level, axis and expert);
    ``keepTemporaryFiles`` leaves the input and output files on disk for debugging.
    ``similarity`` is one of :data:`SIMILARITIES`; ``smoothness`` weighs the deformation's smoothness
    regulariser (larger: smoother); ``uncertainty`` makes the engine write an uncertainty map in mm.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    refineSteps: Optional[int] = None
    affine: bool = True
    importGateMaps: bool = False
    keepTemporaryFiles: bool = False
    similarity: str = SIMILARITIES[0]
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


def engineArguments(options: RegistrationOptions, fixed: Path, moving: Path, outputDirectory: Path,
                    fixedSegmentation: Optional[Path] = None, movingSegmentation: Optional[Path] = None,
                    fixedLandmarks: Optional[Path] = None, movingLandmarks: Optional[Path] = None) -> list[str]:
    """Arguments of ``shmoareg register`` for one run, with JSON-lines progress."""
    arguments = ["register", "--fixed", str(fixed), "--moving", str(moving), "--output-dir", str(outputDirectory),
                 "--model", options.model, "--device", options.device,
                 "--affine" if options.affine else "--no-affine", "--progress", "json",
                 "--routing-maps", "full" if options.importGateMaps else "experts",
                 "--similarity", options.similarity, "--smoothness", repr(float(options.smoothness)),
                 "--uncertainty" if options.uncertainty else "--no-uncertainty"]
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
