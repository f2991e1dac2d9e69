"""The training loss of a network's output on a batch, from the loss section of the config.

``similarity(warp(moving, u), fixed) + smoothness(u) + Dice(warp(one-hot moving labels, u),
one-hot fixed labels) + load_balance(output.auxiliary_loss) + field(|u - known|^2)``, each with its weight.
The Dice term is used when the batch has labels and its weight is positive; it covers every nonzero
label value found in the batch. The field term is used when the batch has known displacements (synthetic pairs
of one anatomy) and its weight is positive: the mean squared end-point error in voxels, which rewards precision
inside uniform regions, where labels and images say nothing. Everything is computed in float32 (also under
autocast).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from shmoareg.losses import MINDSSC, LocalNCC, bending_energy, diffusion, mse, soft_dice_loss
from shmoareg.models.base import ModelOutput
from shmoareg.spatial import warp
from shmoareg.training.config import LossSpec
from shmoareg.training.data import Sample

Tensor = torch.Tensor


def paired_one_hot(fixed_labels: Tensor, moving_labels: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """One-hot maps ``(B, L, Z, Y, X)`` over the nonzero label values present in either map (None if none)."""
    values = torch.unique(torch.cat([fixed_labels.flatten(), moving_labels.flatten()]))
    values = values[values != 0]
    if values.numel() == 0:
        return None
    lookup = values.view(1, -1, 1, 1, 1)
    return (fixed_labels == lookup).float(), (moving_labels == lookup).float()


def _similarity(spec: LossSpec) -> Callable[[Tensor, Tensor], Tensor]:
    if spec.similarity == "ncc":
        return LocalNCC(spec.window)
    if spec.similarity == "mind":
        return MINDSSC()
    return mse


class Objective:
    """Weighted sum of the loss terms; call it to get the total and the terms as floats."""

    def __init__(self, spec: LossSpec) -> None:
        self.spec = spec
        self.similarity = _similarity(spec)
        self.smoothness = diffusion if spec.smoothness == "diffusion" else bending_energy

    def __call__(self, output: ModelOutput, sample: Sample) -> tuple[Tensor, dict[str, float]]:
        spec = self.spec
        displacement = output.displacement.float()
        terms = {"smoothness": self.smoothness(displacement), "load_balance": output.auxiliary_loss.float()}
        total = spec.smoothness_weight * terms["smoothness"] + spec.load_balance_weight * terms["load_balance"]
        if spec.similarity_weight > 0:  # SynthMorph-style label-only training skips the image term
            terms["similarity"] = self.similarity(warp(sample.moving.float(), displacement), sample.fixed.float())
            total = total + spec.similarity_weight * terms["similarity"]
        if spec.dice_weight > 0 and sample.fixed_labels is not None and sample.moving_labels is not None:
            one_hot = paired_one_hot(sample.fixed_labels, sample.moving_labels)
            if one_hot is not None:
                terms["dice"] = soft_dice_loss(warp(one_hot[1], displacement), one_hot[0])
                total = total + spec.dice_weight * terms["dice"]
        if spec.field_weight > 0 and sample.displacement is not None:
            terms["field"] = (displacement - sample.displacement.float()).square().sum(dim=1).mean()
            total = total + spec.field_weight * terms["field"]
        logged = {name: float(value.detach()) for name, value in terms.items()}
        logged["loss"] = float(total.detach())
        return total, logged
