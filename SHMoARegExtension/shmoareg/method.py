"""How ``register`` turns a pair into a deformation, as a composition of two parts.

A network's prediction and the pair optimisation (refinement) make four methods: network then refinement (the
default), refinement alone (``--model none``), network alone (``--refine-steps 0``) and the affine alone (both
off). ``register``, ``evaluate``, ``batch`` and ``benchmarks/compare.py`` all name a method this way. Standard
library only, so the benchmark's timed launcher can use it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from shmoareg.protocol import DEFAULT_MODEL

NO_NETWORK = "none"


@dataclass(frozen=True)
class RegistrationMethod:
    """``network`` (a model name or checkpoint path; None: none) and whether the pair optimisation follows,
    with ``steps`` of it (None: the default for the method, the similarity and the device)."""

    network: Optional[str] = DEFAULT_MODEL
    refine: bool = True
    steps: Optional[int] = None

    def __post_init__(self) -> None:
        if self.steps is not None and (not self.refine or self.steps <= 0):
            raise ValueError("refinement steps are a positive number, given only when the method refines")

    @classmethod
    def network_then_refinement(cls, network: str = DEFAULT_MODEL, steps: Optional[int] = None) -> "RegistrationMethod":
        return cls(network, True, steps)

    @classmethod
    def refinement_alone(cls, steps: Optional[int] = None) -> "RegistrationMethod":
        return cls(None, True, steps)

    @classmethod
    def network_alone(cls, network: str = DEFAULT_MODEL) -> "RegistrationMethod":
        return cls(network, False)

    @classmethod
    def affine_alone(cls) -> "RegistrationMethod":
        return cls(None, False)

    @classmethod
    def from_options(cls, model: str, refine_steps: Optional[int]) -> "RegistrationMethod":
        """The method that ``--model`` and ``--refine-steps`` describe (0 steps: no refinement)."""
        network = None if model == NO_NETWORK else model
        return cls(network, refine_steps != 0, refine_steps or None)

    @property
    def model(self) -> str:
        """``--model``: the network, or ``none``."""
        return self.network if self.network is not None else NO_NETWORK

    @property
    def refine_steps(self) -> Optional[int]:
        """``--refine-steps``: 0 without refinement, None for the default."""
        return self.steps if self.refine else 0

    def arguments(self) -> list[str]:
        """The command-line options of this method."""
        steps = self.refine_steps
        return ["--model", self.model, *([] if steps is None else ["--refine-steps", str(steps)])]
