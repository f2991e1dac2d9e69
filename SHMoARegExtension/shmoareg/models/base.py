"""The model contract: what every registration network is, takes and returns.

A model maps ``(fixed, moving)`` volumes ``(B, 1, Z, Y, X)`` in [0, 1] to a displacement in voxels
of the input grid (conventions of :mod:`shmoareg.spatial`), plus its per-voxel maps, its routing
record (mixture-of-experts models) and an auxiliary (e.g. load-balancing) loss. Subclasses of
:class:`RegistrationNetwork` declare ``name`` and ``Config`` once and are registered by that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.protocol import AXES, MAP_KINDS  # noqa: F401  (AXES: part of the models' interface)



@dataclass
class RoutingRecord:
    """Routing decisions of one forward pass.

    ``decoder_gates[level]``: ``(B, 3, E, Z_l, Y_l, X_l)`` gate probabilities per axis (x, y, z)
    over the decoder experts, on that level's grid; level 1 is full resolution, level ``L`` is
    ``2**(L-1)`` times coarser. ``moa_weights[level]``: ``(B, T, H)`` routing weight of each
    token over the attention-head experts (zero for heads not chosen); ``moa_choices[level]``:
    ``(B, T, k)`` indices of the chosen heads.
    """

    decoder_gates: dict[int, torch.Tensor] = field(default_factory=dict)
    moa_weights: dict[int, torch.Tensor] = field(default_factory=dict)
    moa_choices: dict[int, torch.Tensor] = field(default_factory=dict)

    def decoder_utilisation(self, masks: Optional[dict[int, torch.Tensor]] = None) -> dict[str, dict[str, list[float]]]:
        """Per level and axis, the fraction of voxels (inside ``masks[level]`` if given) whose
        arg-max gate is each expert; each list sums to 1."""
        result: dict[str, dict[str, list[float]]] = {}
        for level, gates in sorted(self.decoder_gates.items()):
            winners = gates.argmax(dim=2)  # (B, 3, Z, Y, X)
            experts = gates.shape[2]
            mask = masks.get(level) if masks else None
            per_axis = {}
            for axis, name in enumerate(AXES):
                chosen = winners[:, axis]
                if mask is not None:
                    chosen = chosen[mask.expand_as(chosen) > 0]
                counts = torch.bincount(chosen.reshape(-1), minlength=experts).double()
                per_axis[name] = (counts / counts.sum().clamp(min=1)).tolist()
            result[str(level)] = per_axis
        return result

    def moa_utilisation(self) -> dict[str, list[float]]:
        """Per encoder level, the share of routing weight each attention head received (sums to 1)."""
        result = {}
        for level, weights in sorted(self.moa_weights.items()):
            totals = weights.detach().double().sum(dim=(0, 1))
            result[str(level)] = (totals / totals.sum().clamp(min=1e-12)).tolist()
        return result


@dataclass(frozen=True)
class MapSpec:
    """One per-voxel map a model offers: what it means, before any forward pass.

    ``kind`` is ``categorical`` (values 1..len(categories), 0 for none; e.g. the expert or cluster
    chosen) or ``scalar`` (e.g. an attention gate, a residual's magnitude). ``level`` is the resolution
    it lives at (1: the network input's, level L: 2^(L-1) times coarser); ``axis`` is x, y or z for a map
    of one displacement axis. ``name`` is unique within the model and safe as a file name.
    """

    name: str
    kind: str
    level: int
    description: str
    units: str = ""
    categories: tuple[str, ...] = ()
    axis: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ValueError(f"map {self.name!r}: kind must be one of {MAP_KINDS}, not {self.kind!r}")
        if (self.kind == "categorical") != bool(self.categories):
            raise ValueError(f"map {self.name!r}: categorical maps, and only they, name their categories")
        if self.axis is not None and self.axis not in AXES:
            raise ValueError(f"map {self.name!r}: axis must be one of {AXES} or None, not {self.axis!r}")


@dataclass
class ModelOutput:
    """A network's prediction: displacement (voxels, ``(B, 3, Z, Y, X)``), routing, auxiliary loss and maps.

    ``maps[name]`` is ``(B, 1, Z_l, Y_l, X_l)`` on the grid of its spec's level: int64 for a categorical
    map, floating point for a scalar one; one entry per :meth:`RegistrationNetwork.map_specs` item.
    """

    displacement: torch.Tensor
    routing: RoutingRecord = field(default_factory=RoutingRecord)
    auxiliary_loss: Optional[torch.Tensor] = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.auxiliary_loss is None:
            self.auxiliary_loss = self.displacement.new_zeros(())


class RegistrationNetwork(nn.Module):
    """Base class of the registration networks (the model contract).

    A subclass sets ``name`` (its registry name, declared nowhere else) and ``Config`` (a frozen
    dataclass of its sizes, built from plain values by :func:`shmoareg.typed_config.build_dataclass`),
    implements :meth:`predict` on inputs whose sides are multiples of :meth:`size_multiple`, and
    describes its maps in :meth:`map_specs`. :meth:`forward` pads any input size to that multiple (zeros,
    at the far end of each axis, so voxel positions are unchanged) and crops the outputs back.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    registry: ClassVar[dict[str, type["RegistrationNetwork"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in RegistrationNetwork.registry:
                raise TypeError(f"two models are called {cls.name!r}")
            RegistrationNetwork.registry[cls.name] = cls

    def __init__(self, config: Optional[Any] = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()

    def size_multiple(self) -> int:
        """What every input side must be a multiple of for :meth:`predict` (the coarsest level's factor)."""
        return 1

    def map_specs(self) -> list[MapSpec]:
        """The per-voxel maps :meth:`predict` returns (none by default)."""
        return []

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        """The prediction for inputs whose sides are multiples of :meth:`size_multiple`."""
        raise NotImplementedError

    def can_grow_from(self, source: "RegistrationNetwork") -> bool:
        """Whether :meth:`grow_from` can start this network from ``source`` (none can, unless a subclass says)."""
        return False

    def grow_from(self, source: "RegistrationNetwork") -> None:
        """Start from the weights of ``source``, a narrower form of this network (:meth:`can_grow_from`), so that
        this network predicts what ``source`` predicts until training changes it."""
        raise NotImplementedError(f"{self.name} cannot grow from another form of itself")

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        """The prediction for inputs of any size (padded inside, cropped back)."""
        shape = tuple(fixed.shape[2:])
        multiple = self.size_multiple()
        padded = tuple(-(-n // multiple) * multiple for n in shape)
        if padded == shape:
            return self.predict(fixed, moving)
        padding = [amount for n, p in zip(reversed(shape), reversed(padded)) for amount in (0, p - n)]
        output = self.predict(F.pad(fixed, padding), F.pad(moving, padding))
        return crop_output(output, padded, shape, {spec.name: spec.level for spec in self.map_specs()})


def level_shape(shape: tuple[int, ...], level: int) -> tuple[int, ...]:
    """The voxels of level ``level`` that cover an input of ``shape`` (level 1: the input itself)."""
    factor = 2 ** (level - 1)
    return tuple(math.ceil(n / factor) for n in shape)


def crop_output(output: ModelOutput, padded: tuple[int, ...], shape: tuple[int, ...],
                map_levels: dict[str, int]) -> ModelOutput:
    """``output`` of an input padded to ``padded`` cropped to the input's ``shape`` at every level.

    ``map_levels`` gives each map's level; attention tokens (one per voxel of their level) are cropped too.
    """
    def crop(tensor: torch.Tensor, level: int) -> torch.Tensor:
        z, y, x = level_shape(shape, level)
        return tensor[..., :z, :y, :x]

    def crop_tokens(tokens: torch.Tensor, level: int) -> torch.Tensor:
        volume = tokens.reshape(tokens.shape[0], *level_shape(padded, level), tokens.shape[-1])
        return crop(volume.movedim(-1, 1), level).movedim(1, -1).reshape(tokens.shape[0], -1, tokens.shape[-1])

    routing = RoutingRecord(
        decoder_gates={level: crop(gates, level) for level, gates in output.routing.decoder_gates.items()},
        moa_weights={level: crop_tokens(w, level) for level, w in output.routing.moa_weights.items()},
        moa_choices={level: crop_tokens(c, level) for level, c in output.routing.moa_choices.items()})
    return ModelOutput(crop(output.displacement, 1), routing, output.auxiliary_loss,
                       {name: crop(values, map_levels[name]) for name, values in output.maps.items()})
