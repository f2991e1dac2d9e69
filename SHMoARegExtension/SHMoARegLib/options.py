"""Registration options and the engine command-line arguments they become."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Model names the engine accepts for ``--model`` ("none": optimise on the pair alone), the engine's
# default first; Testing/slicer checks both against the engine. A checkpoint path is accepted too.
MODELS = ("shmoareg", "unet", "none")
DEFAULT_MODEL = MODELS[0]
DEVICES = ("auto", "cuda", "cpu")

# Engine exit codes (the protocol of shmoareg.errors.ExitCode, repeated so SHMoARegLib never imports the engine).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_CANCELLED = 130


@dataclass
class RegistrationOptions:
    """What ``SHMoARegLogic.register(**options)`` accepts besides the input nodes.

    ``refineSteps`` None lets the engine choose (more on a GPU); ``importGateMaps`` False makes
    the engine write and the module load only the arg-max routing maps (gate maps are one volume
    per level, axis and expert);
    ``keepTemporaryFiles`` leaves the input and output files on disk for debugging.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    refineSteps: Optional[int] = None
    affine: bool = True
    importGateMaps: bool = False
    keepTemporaryFiles: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.refineSteps is not None and self.refineSteps < 0:
            raise ValueError(f"refineSteps must be 0 or more (None: the engine's default), not {self.refineSteps}")
        if not self.model:
            raise ValueError("choose a model")


def engineArguments(options: RegistrationOptions, fixed: Path, moving: Path, outputDirectory: Path,
                    fixedSegmentation: Optional[Path] = None, movingSegmentation: Optional[Path] = None) -> list[str]:
    """Arguments of ``shmoareg register`` for one run, with JSON-lines progress."""
    arguments = ["register", "--fixed", str(fixed), "--moving", str(moving), "--output-dir", str(outputDirectory),
                 "--model", options.model, "--device", options.device,
                 "--affine" if options.affine else "--no-affine", "--progress", "json",
                 "--routing-maps", "full" if options.importGateMaps else "experts"]
    if fixedSegmentation is not None:
        arguments += ["--fixed-seg", str(fixedSegmentation)]
    if movingSegmentation is not None:
        arguments += ["--moving-seg", str(movingSegmentation)]
    if options.refineSteps is not None:
        arguments += ["--refine-steps", str(options.refineSteps)]
    return arguments
