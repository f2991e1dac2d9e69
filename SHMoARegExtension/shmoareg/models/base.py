"""What every registration network returns, and the routing record of mixture-of-experts models.

A model maps ``(fixed, moving)`` volumes ``(B, 1, Z, Y, X)`` in [0, 1] to a displacement in voxels
of the input grid (conventions of :mod:`shmoareg.spatial`), plus its routing record and an
auxiliary (load-balancing) loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

AXES = ("x", "y", "z")


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


@dataclass
class ModelOutput:
    """A network's prediction: displacement (voxels, ``(B, 3, Z, Y, X)``), routing and auxiliary loss."""

    displacement: torch.Tensor
    routing: RoutingRecord
    auxiliary_loss: torch.Tensor
