"""Which Python packages the engine still needs in this interpreter, and how to install them safely.

Slicer ships numpy, SimpleITK and vtk built for itself; installing anything must never replace
them. torch comes through SlicerPyTorch's ``PyTorchUtils`` when that extension is installed
(it picks the CUDA build that fits the GPU); packages that depend on numpy are installed
without their dependencies so pip cannot upgrade Slicer's own numpy.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

# Packages Slicer provides; never named in an install command.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk")


@dataclass(frozen=True)
class Requirement:
    """An engine dependency: the module it provides and its pip requirement."""

    module: str
    specifier: str
    installWithDependencies: bool = False
    viaPyTorchUtils: bool = False


# What ``shmoareg register`` imports besides Slicer's packages (Testing/Python checks this),
# plus psutil, which SHMoARegLib uses to stop the engine's whole process tree.
ENGINE_REQUIREMENTS = (
    # torch's own dependencies (sympy, networkx, ...) do not include numpy.
    Requirement("torch", "torch>=2.1,<3", installWithDependencies=True, viaPyTorchUtils=True),
    Requirement("safetensors", "safetensors>=0.4"),
    Requirement("yaml", "PyYAML>=6"),
    Requirement("psutil", "psutil>=5.9"),
)


def missingRequirements(requirements: Sequence[Requirement] = ENGINE_REQUIREMENTS,
                        isInstalled: Optional[Callable[[str], bool]] = None) -> list[Requirement]:
    """Requirements whose module cannot be found (nothing is imported to find out)."""
    isInstalled = isInstalled or (lambda module: importlib.util.find_spec(module) is not None)
    return [requirement for requirement in requirements if not isInstalled(requirement.module)]


def pipInstallCommands(python: str, requirements: Sequence[Requirement]) -> list[list[str]]:
    """pip commands that install ``requirements``: one with dependencies allowed, one without.

    Raises ValueError when asked to install a package Slicer provides.
    """
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement.specifier).group(0)
        if name.lower() in (protected.lower() for protected in PROTECTED_PACKAGES):
            raise ValueError(f"{name} is provided by Slicer and must not be installed or upgraded")
    commands = []
    for withDependencies in (True, False):
        group = [r.specifier for r in requirements if r.installWithDependencies == withDependencies]
        if group:
            commands.append([python, "-m", "pip", "install", *([] if withDependencies else ["--no-deps"]), *group])
    return commands


def installMissing(missing: Sequence[Requirement], python: str, log: Callable[[str], None],
                   runCommand: Callable[[list[str]], None], installTorch: Optional[Callable[[str], bool]] = None,
                   isInstalled: Optional[Callable[[str], bool]] = None) -> None:
    """Install the ``missing`` requirements, then check that they are there.

    ``installTorch(versionSpecifier)`` installs torch through SlicerPyTorch and says whether it succeeded
    (None when that extension is not installed: torch then comes from pip). ``runCommand`` runs one pip
    command line (in Slicer: a console process whose output goes to the log). Raises RuntimeError when
    something is still missing afterwards.
    """
    viaPip = []
    for requirement in missing:
        if requirement.viaPyTorchUtils and installTorch is not None:
            if not installTorch(requirement.specifier[len(requirement.module):]):
                raise RuntimeError("PyTorch could not be installed; see the log for details.")
        else:
            viaPip.append(requirement)
    for command in pipInstallCommands(python, viaPip):
        log(" ".join(command[2:]))
        runCommand(command)
    importlib.invalidate_caches()  # packages installed by another process since start-up
    stillMissing = missingRequirements(missing, isInstalled)
    if stillMissing:
        raise RuntimeError("still missing after installation: "
                           + ", ".join(requirement.module for requirement in stillMissing))
